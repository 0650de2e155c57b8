"""Every glue backend (numba, Triton) against the PyTorch reference twin, function by function.

The Triton kernels run on CPU tensors in Triton's interpreter (TRITON_INTERPRET=1, set by
tests/conftest.py). The reference itself is checked against PyTorch's LayerNorm and conv1d and
against closed forms in ``TestReference``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from algnet.ops import glue_cpu, glue_ref

TOL = {torch.float32: 2e-5, torch.float64: 1e-12}
FUNCTIONS = ("layernorm2d", "layernorm_to_tokens", "aggregate_residual", "causal_conv1d_silu", "dwconv3x3_gate", "gate",
             "add_bias_residual_")


def _backend(name, monkeypatch):
    if name == "cpu":
        monkeypatch.setattr(glue_cpu, "_NUMBA_NORM_MIN", 0)  # the numba LayerNorm2d at any size
        return glue_cpu
    triton = pytest.importorskip("triton")
    from triton.runtime.interpreter import InterpretedFunction

    if not isinstance(triton.language.standard.sum, InterpretedFunction):
        pytest.skip("triton was imported in compiled mode; this needs its interpreter")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    from algnet.ops import glue_triton

    return glue_triton


def _cases(dtype):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    x, local, y2 = 2 + 3 * r(2, 6, 5, 7), r(2, 6, 5, 7), r(2, 12, 5, 7)
    c6, c12 = r(6), r(12)
    return {
        "layernorm2d": ((x, c6, r(6), 1e-6), {}),
        "layernorm_to_tokens": ((x, c6, r(6), 1e-5), {}),
        "aggregate_residual": ((x, r(2, 35, 6), local, r(1, 6, 1, 1), r(6)), {"local_bias": r(6)}),
        "causal_conv1d_silu": ((r(2, 9, 8), r(8, 4), r(8)), {}),
        "dwconv3x3_gate": ((y2, r(12, 1, 3, 3), c12), {"pre_bias": r(12)}),
        "gate": ((y2, c12), {}),
        "add_bias_residual_": ((x.clone(), local, c6), {}),
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_backend_equals_reference(backend, dtype, monkeypatch):
    mod = _backend(backend, monkeypatch)
    for name, (args, kwargs) in _cases(dtype).items():
        want = getattr(glue_ref, name)(*[a.clone() if torch.is_tensor(a) else a for a in args], **kwargs)
        got = getattr(mod, name)(*args, **kwargs)
        assert got.shape == want.shape and got.dtype == want.dtype and got.is_contiguous(), name
        err = (got - want).abs().max().item()
        assert err <= TOL[dtype] * max(1.0, want.abs().max().item()), (name, err)


@pytest.mark.parametrize("backend", ["cpu", "triton"])
def test_backends_have_the_reference_functions(backend, monkeypatch):
    mod = _backend(backend, monkeypatch)
    assert all(callable(getattr(mod, name, None)) for name in FUNCTIONS)


class TestReference:
    def test_layernorm2d_is_layer_norm_over_channels(self):
        x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
        w, b = torch.randn(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
        want = F.layer_norm(x.permute(0, 2, 3, 1), (5,), w, b, 1e-6).permute(0, 3, 1, 2)
        torch.testing.assert_close(glue_ref.layernorm2d(x, w, b, 1e-6), want)
        torch.testing.assert_close(glue_ref.layernorm_to_tokens(x, w, b, 1e-6), want.flatten(2).transpose(1, 2))

    def test_causal_conv1d_silu_closed_form(self):
        """out[t] = silu(b + w0 x[t-1] + w1 x[t]) for K = 2; x[-1] = 0."""
        x = torch.tensor([[[1.0], [2.0], [-3.0]]], dtype=torch.float64)  # (1, 3, 1)
        w, b = torch.tensor([[0.5, 2.0]], dtype=torch.float64), torch.tensor([0.25], dtype=torch.float64)
        pre = torch.tensor([0.25 + 2.0, 0.25 + 0.5 + 4.0, 0.25 + 1.0 - 6.0], dtype=torch.float64)
        torch.testing.assert_close(glue_ref.causal_conv1d_silu(x, w, b).flatten(), pre * torch.sigmoid(pre))

    def test_aggregate_gate_and_residual_closed_forms(self):
        x = torch.arange(8.0).view(1, 2, 2, 2)
        tokens = torch.ones(1, 4, 2)
        got = glue_ref.aggregate_residual(x, tokens, 2 * torch.ones_like(x), torch.tensor([1.0, 3.0]), torch.tensor([0.5, 0.0]),
                                          local_bias=torch.tensor([2.0, 2.0]))
        torch.testing.assert_close(got, x + torch.tensor([1.0 + 0.5 * 4, 3.0]).view(1, 2, 1, 1))
        torch.testing.assert_close(glue_ref.gate(torch.tensor([2.0, 5.0]).view(1, 2, 1, 1), torch.tensor([1.0, -1.0])),
                                   torch.tensor(12.0).view(1, 1, 1, 1))
        out = torch.ones(1, 2, 1, 1)
        assert glue_ref.add_bias_residual_(out, out.clone(), torch.tensor([1.0, 2.0])) is out
        torch.testing.assert_close(out.flatten(), torch.tensor([3.0, 4.0]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_triton_on_gpu_equals_reference(dtype):
    """The compiled Triton kernels on CUDA tensors against the reference, function by function."""
    from algnet.ops import glue_triton

    for name, (args, kwargs) in _cases(dtype).items():
        args = [a.cuda() if torch.is_tensor(a) else a for a in args]
        kwargs = {k: v.cuda() for k, v in kwargs.items()}
        want = getattr(glue_ref, name)(*[a.clone() if torch.is_tensor(a) else a for a in args], **kwargs)
        got = getattr(glue_triton, name)(*args, **kwargs)
        err = (got - want).abs().max().item()
        assert err <= TOL[dtype] * max(1.0, want.abs().max().item()), (name, err)
