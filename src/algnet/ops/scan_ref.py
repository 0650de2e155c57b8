"""Reference selective scan: sequential PyTorch, differentiable, float64-capable.

The ground truth every fast backend is tested against. Same signature and semantics as mamba_ssm's
``selective_scan_ref`` for real A and batch-dependent B, C.

Glossary (Mamba paper symbols in brackets):
    B   batch
    E   channels of the scan, d_inner [D]
    N   state size, d_state [N]
    L   tokens, H*W for an image flattened row-major [L]
    u   input sequence [x], (B, E, L)
    delta  step size before softplus/bias [Delta], (B, E, L)
    A   state matrix, negative, (E, N)
    B, C   input and output projections, (B, N, L)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prepare_delta(delta: torch.Tensor, delta_bias: torch.Tensor | None, delta_softplus: bool) -> torch.Tensor:
    """Adds the bias and applies softplus (identity above 20, like F.softplus)."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def selective_scan_ref(
    u: torch.Tensor,
    delta: torch.Tensor,
    A: torch.Tensor,
    B: torch.Tensor,
    C: torch.Tensor,
    D: torch.Tensor | None = None,
    z: torch.Tensor | None = None,
    delta_bias: torch.Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
):
    """Runs ``h_t = exp(dt_t A) h_{t-1} + dt_t u_t B_t``, ``y_t = C_t h_t + D u_t`` token by token.

    Computes in float32 (float64 if any input is float64) and returns ``y`` (B, E, L) in u's dtype,
    gated by ``silu(z)`` when z is given; with ``return_last_state`` also the final state (B, E, N).
    """
    dtype_in = u.dtype
    wide = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in (u, delta, A, B, C, D, z)) else torch.float32
    u, delta, A, B, C = (t.to(wide) for t in (u, delta, A, B, C))
    delta = prepare_delta(delta, None if delta_bias is None else delta_bias.to(wide), delta_softplus)
    batch, channels, length = u.shape
    h = u.new_zeros(batch, channels, A.shape[1])  # (B, E, N)
    ys = []
    for t in range(length):
        dt = delta[:, :, t, None]  # (B, E, 1)
        h = torch.exp(dt * A) * h + dt * u[:, :, t, None] * B[:, None, :, t]
        ys.append((h * C[:, None, :, t]).sum(-1))  # (B, E)
    y = torch.stack(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)  # (B, E, L)
    if D is not None:
        y = y + u * D.to(wide)[:, None]
    if z is not None:
        y = y * F.silu(z.to(wide))
    y = y.to(dtype_in)
    return (y, h) if return_last_state else y
