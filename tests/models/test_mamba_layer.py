"""The channels-last Mamba layer equals the plain mamba_ssm composition of the same parameters."""

import pytest
import torch
import torch.nn.functional as F

import algnet
from algnet.models.algnet import GlobalBranch
from algnet.ops import selective_scan_ref


def reference_mamba(m: algnet.Mamba, x: torch.Tensor) -> torch.Tensor:
    """mamba_ssm's ``Mamba.forward`` slow path, written out: (B, L, D) -> (B, L, D), float32."""
    x = x.float()
    length = x.shape[1]
    xz = (x @ m.in_proj.weight.t()).transpose(1, 2)  # (B, 2E, L)
    x, z = xz.chunk(2, dim=1)
    x = F.silu(F.conv1d(x, m.conv1d.weight, m.conv1d.bias, padding=m.d_conv - 1, groups=m.d_inner)[..., :length])
    x_dbl = x.transpose(1, 2) @ m.x_proj.weight.t()  # (B, L, R + 2N)
    dt, B, C = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = (dt @ m.dt_proj.weight.t()).transpose(1, 2)  # (B, E, L)
    y = selective_scan_ref(x, dt, -torch.exp(m.A_log), B.transpose(1, 2), C.transpose(1, 2), m.D, z,
                           m.dt_proj.bias, delta_softplus=True)
    return y.transpose(1, 2) @ m.out_proj.weight.t()  # (B, L, D)


def make_layer(backend, seed=0):
    torch.manual_seed(seed)
    m = algnet.Mamba(d_model=8, d_state=8, scan_backend=backend)
    with torch.no_grad():  # non-trivial values for every parameter
        for p in m.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return m


@pytest.mark.parametrize("backend", ["reference", "chunked", "cpu"])
def test_equals_reference_composition(backend):
    m = make_layer(backend)
    x = torch.randn(2, 37, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference_mamba(m, x), rtol=1e-4, atol=1e-5)
    y = m(x)  # with autograd: the PyTorch conv path
    torch.testing.assert_close(y, reference_mamba(m, x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_bf16_autocast_output_is_float32(backend):
    m = make_layer(backend)
    x = torch.randn(1, 20, 8, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = m(x.bfloat16())
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, reference_mamba(m, x.bfloat16().float()), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_gradients_reach_every_parameter_and_match(backend):
    m, ref = make_layer(backend), make_layer("reference")
    x = torch.randn(2, 19, 8, generator=torch.Generator().manual_seed(3))
    m(x).square().sum().backward()
    reference_mamba(ref, x).square().sum().backward()
    for (name, p), q in zip(m.named_parameters(), ref.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-4, msg=lambda s: f"{name}: {s}")


def test_conv_kernel_handles_short_sequences():
    """L < d_conv: the fused causal conv must read no token before the first."""
    m = make_layer("cpu")
    x = torch.randn(1, 2, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(m(x), reference_mamba(m, x), rtol=1e-4, atol=1e-5)


def test_global_branch_matches_token_composition():
    torch.manual_seed(5)
    g = GlobalBranch(8, d_state=8).eval()
    x = torch.randn(2, 8, 5, 7)
    tokens = x.flatten(2).transpose(1, 2)  # (B, H*W, C)
    expected = reference_mamba(g.mamba, F.layer_norm(tokens, (8,), g.norm.weight, g.norm.bias)).transpose(1, 2).reshape(2, 8, 5, 7)
    with torch.no_grad():
        torch.testing.assert_close(g(x), expected, rtol=1e-4, atol=1e-5)
