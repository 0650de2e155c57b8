"""Chunked selective scan in plain PyTorch: any device, autograd, memory bounded by the block.

The fallback when neither the numba (CPU) nor a GPU kernel can run. It uses the stable two-level
form of DESIGN.md section 4, so no exponent is ever positive:

- level 1, inside a chunk of ``_CHUNK`` tokens starting at t0, with ``l_t = sum_{s=t0..t} dt_s A``
  (<= 0, non-increasing): ``h_t = sum_{s<=t} exp(l_t - l_s) dt_s u_s B_s``, computed for all
  chunks of a block at once from the masked (t, s) matrix of ``l_t - l_s <= 0``;
- level 2, across the block's chunks, sequentially: ``H_k = exp(l_end) H_{k-1} + h_end``, and every
  token gets the correction ``C_t . (exp(l_t) H_{k-1})``.

The factored ``exp(l_t) * cumsum(exp(-l_s) ...)`` is not used: it overflows float32 once
-l > 88. The sequence is processed in blocks of ``_BLOCK`` tokens, each under activation
checkpointing when gradients are needed, so neither forward nor backward holds more than one
block's (block, chunk, E, N) temporaries: nothing of size (L, E, N) is ever built. The cost is
``_CHUNK`` times the sequential scan's arithmetic, traded for tensor-wide operations.

Glossary as in :mod:`.scan_ref`: B batch, E channels, N state size, L tokens; G chunks per block,
T tokens per chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from .scan_ref import prepare_delta

_CHUNK = 16  # T: tokens per level-1 chunk; the (T, T) weights cost T x the sequential arithmetic
_BLOCK = 128  # tokens per checkpointed block (G = _BLOCK / _CHUNK chunks)


def is_available(device: torch.device) -> tuple[bool, str]:
    """Plain PyTorch runs everywhere."""
    return True, ""


def _scan_block(u, delta, A, B, C, D, z, delta_bias, h0, delta_softplus: bool):
    """Scans one block of tokens from state h0 (B, E, N); returns y (B, E, L') and the last state."""
    batch, channels, length = u.shape
    n = A.shape[1]
    dt = prepare_delta(delta, delta_bias, delta_softplus)  # (B, E, L')
    pad = -length % _CHUNK  # dt = 0 tokens leave the state unchanged and are cut from y
    if pad:
        dt, u_p, B, C = (F.pad(t, (0, pad)) for t in (dt, u, B, C))
    else:
        u_p = u
    g = dt.shape[-1] // _CHUNK
    dt5 = dt.reshape(batch, channels, g, _CHUNK, 1)  # (B, E, G, T, 1)
    Bt = B.reshape(batch, n, g, _CHUNK).permute(0, 2, 3, 1)[:, None]  # (B, 1, G, T, N)
    Ct = C.reshape(batch, n, g, _CHUNK).permute(0, 2, 3, 1)[:, None]  # (B, 1, G, T, N)
    l = torch.cumsum(dt5 * A[:, None, None, :], dim=3)  # (B, E, G, T, N), <= 0
    x = dt5 * u_p.reshape(batch, channels, g, _CHUNK, 1) * Bt  # (B, E, G, T, N)
    diff = l[:, :, :, :, None, :] - l[:, :, :, None, :, :]  # (B, E, G, T_t, T_s, N): l_t - l_s
    causal = torch.ones(_CHUNK, _CHUNK, dtype=torch.bool, device=u.device).tril()[:, :, None]  # s <= t
    # Only exponents <= 0 reach exp (the s > t entries are replaced before it, so no inf and no
    # 0 * inf in backward); clamping at -60 (exp = 9e-27) keeps slow denormals out of the products.
    w = torch.exp(diff.masked_fill(~causal, -60.0).clamp(min=-60.0)).masked_fill(~causal, 0.0)
    h = (w * x[:, :, :, None, :, :]).sum(4)  # (B, E, G, T, N), local states from zero
    decay = torch.exp(l.clamp(min=-60.0))  # (B, E, G, T, N)
    carried = []
    state = h0
    for k in range(g):  # level 2: carry the state across the block's chunks
        carried.append(state)
        state = decay[:, :, k, -1] * state + h[:, :, k, -1]
    h = h + decay * torch.stack(carried, dim=2)[:, :, :, None, :]  # (B, E, G, T, N)
    y = (h * Ct).sum(-1).reshape(batch, channels, -1)[..., :length]  # (B, E, L')
    if D is not None:
        y = y + u * D[:, None]
    if z is not None:
        y = y * F.silu(z)
    return y, state


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """Same contract as :func:`algnet.ops.selective_scan_ref`."""
    dtype_in = u.dtype
    wide = torch.float64 if any(t is not None and t.dtype == torch.float64 for t in (u, delta, A, B, C, D, z)) else torch.float32
    cast = lambda t: None if t is None else t.to(wide)  # noqa: E731
    u, delta, A, B, C, D, z, delta_bias = map(cast, (u, delta, A, B, C, D, z, delta_bias))
    batch, channels, length = u.shape
    state = u.new_zeros(batch, channels, A.shape[1])  # (B, E, N)
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (u, delta, A, B, C, D, z, delta_bias))
    ys = []
    for s in range(0, length, _BLOCK):
        sl = slice(s, s + _BLOCK)
        args = (u[..., sl], delta[..., sl], A, B[..., sl], C[..., sl], D, None if z is None else z[..., sl], delta_bias, state)
        if grad:  # recompute the block in backward: only the (B, E, N) boundary states are kept
            y, state = checkpoint(_scan_block, *args, delta_softplus, use_reentrant=False)
        else:
            y, state = _scan_block(*args, delta_softplus)
        ys.append(y)
    y = torch.cat(ys, dim=-1) if ys else u.new_zeros(batch, channels, 0)  # (B, E, L)
    return y.to(dtype_in)
