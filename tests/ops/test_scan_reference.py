"""The reference scan against an independent float64 loop and closed forms."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from algnet.ops import selective_scan_ref


def numpy_loop(u, delta, A, B, C, D, z, delta_bias, softplus):
    """Scalar float64 loop over batch, channel, state and token: the recurrence as written."""
    u, delta, A, B, C = (t.double().numpy() for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.double().numpy()[None, :, None]
    if softplus:
        delta = np.where(delta > 20, delta, np.log1p(np.exp(np.minimum(delta, 20))))
    b_, e_, l_ = u.shape
    y = np.zeros_like(u)
    for b in range(b_):
        for e in range(e_):
            h = np.zeros(A.shape[1])
            for t in range(l_):
                h = np.exp(delta[b, e, t] * A[e]) * h + delta[b, e, t] * u[b, e, t] * B[b, :, t]
                y[b, e, t] = (C[b, :, t] * h).sum()
    if D is not None:
        y += u * D.double().numpy()[None, :, None]
    if z is not None:
        zz = z.double().numpy()
        y *= zz / (1 + np.exp(-zz))
    return torch.from_numpy(y)


def random_inputs(b=2, e=3, n=4, l=7, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(u=r(b, e, l), delta=r(b, e, l), A=-torch.exp(r(e, n)), B=r(b, n, l), C=r(b, n, l),
                D=r(e), z=r(b, e, l), delta_bias=r(e))


@pytest.mark.parametrize("softplus", [True, False])
@pytest.mark.parametrize("extras", [True, False])
def test_reference_matches_float64_loop(softplus, extras):
    x = random_inputs()
    if not softplus:
        x["delta"] = x["delta"].abs()
    if not extras:
        x.update(D=None, z=None, delta_bias=None)
    y = selective_scan_ref(**x, delta_softplus=softplus)
    expected = numpy_loop(**x, softplus=softplus)
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_single_token_closed_form():
    x = random_inputs(l=1, dtype=torch.float64)
    dt = F.softplus(x["delta"] + x["delta_bias"][None, :, None])  # (B, E, 1)
    h = dt[..., 0, None] * x["u"][..., 0, None] * x["B"][:, None, :, 0]  # (B, E, N)
    y = (h * x["C"][:, None, :, 0]).sum(-1, keepdim=True) + x["D"][None, :, None] * x["u"]
    y = y * F.silu(x["z"])
    torch.testing.assert_close(selective_scan_ref(**x, delta_softplus=True), y, rtol=1e-12, atol=1e-12)


def test_zero_A_is_a_cumulative_sum():
    x = random_inputs(l=9)
    x["A"] = torch.zeros_like(x["A"])
    dt = x["delta"].abs()
    h = torch.cumsum(dt[:, :, None, :] * x["u"][:, :, None, :] * x["B"][:, None, :, :], dim=-1)  # (B, E, N, L)
    expected = (h * x["C"][:, None]).sum(2)
    y = selective_scan_ref(x["u"], dt, x["A"], x["B"], x["C"])
    torch.testing.assert_close(y, expected, rtol=1e-12, atol=1e-12)


def test_float32_inputs_give_float32_and_gradients_flow():
    x = {k: v.float().requires_grad_() for k, v in random_inputs().items()}
    y = selective_scan_ref(**x, delta_softplus=True)
    assert y.dtype == torch.float32
    y.sum().backward()
    assert all(v.grad is not None and v.grad.abs().sum() > 0 for v in x.values())
