"""The glue around an ALGBlock's Mamba layer on the CPU, for inference: numba kernels.

The same functions as :mod:`algnet.ops.glue_ref` (the PyTorch reference) and
:mod:`algnet.ops.glue_triton`, with the same signatures and results.

The global branch reads the block's (B, C, H, W) features as (B, H*W, C) tokens and hands its output
back the same way round; with PyTorch ops each crossing is a transposed copy plus separate passes
for the token LayerNorm, the feature aggregation ``g * F_G + W * F_L`` and the residual add, and the
adds mixed a channels-last view with channels-first tensors (strided, ~3x slower than a plain add).
Each kernel here is one pass over memory, transposing tile by tile in cache:

- :func:`layernorm_to_tokens`: ``LayerNorm over C`` of (B, C, P) features, written as (B, P, C) tokens.
- :func:`aggregate_residual`: ``x + g * tokens^T + w * local`` back in (B, C, P).
- :func:`layernorm2d`: NAFNet's LayerNorm2d (over C at each pixel) of (B, C, P), the same layout out.
- :func:`causal_conv1d_silu`: the Mamba layer's conv and SiLU on channels-last tokens, one pass. Its
  numba kernel is compiled with the scan's (:mod:`.scan_cpu`), which this delegates to.
- :func:`dwconv3x3_gate`, :func:`gate`, :func:`add_bias_residual_`: PyTorch's ops, as the
  reference: on the CPU the convolution adds its own bias cheaply and there is no pass to save.

Measured side by side with PyTorch's ops by ``python3 benchmarks/block_cpu.py`` (see
benchmarks/RESULTS.md). Kernels are compiled by numba on first use (and cached), parallel over tiles
of pixels, and leave autograd alone: the fused inference modules (:func:`algnet.fuse`) call them.

Glossary: B batch, C channels, P pixels (H * W), T a tile of pixels.
"""

from __future__ import annotations

import math

import torch

_TILE = 64  # pixels per tile: a (C, T) block of a 512-channel map is 128 KB, inside L2

# From this many elements layernorm2d takes the numba pass; side by side against the in-place
# PyTorch form of :func:`_layernorm2d_torch` (2 cores, best of 7): 1x32x720x1280 89.6 -> 50.9 ms,
# 1x64x360x640 49.1 -> 27.3 ms, 1x128x180x320 17.2 -> 14.9 ms; smaller maps stay in cache and
# PyTorch's passes win (1x256x90x160 3.3 against 4.5 ms).
_NUMBA_NORM_MIN = 1 << 22
_kernels: dict = {}


def is_available() -> tuple[bool, str]:
    try:
        import numba  # noqa: F401
    except ImportError as err:
        return False, f"numba is not installed ({err}); pip install numba"
    return True, ""


def _build() -> tuple:
    import numba
    import numpy as np
    from numba import njit, prange

    from .scan_cpu import _say_when_compiling, _select_threading_layer

    _select_threading_layer()
    _say_when_compiling()

    @njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def layernorm(x, weight, bias, eps, out, njob, to_tokens):  # x (B, C, P); out (B, P, C) to tokens, else (B, C, P)
        nb, nc, npix = x.shape
        ntiles = (npix + _TILE - 1) // _TILE
        per_job = (nb * ntiles + njob - 1) // njob
        inv_c = 1.0 / nc
        mean = np.empty((njob, _TILE), dtype=x.dtype)  # set per tile below (np.zeros would be one more
        rstd = np.empty((njob, _TILE), dtype=x.dtype)  # parallel loop: a thread-pool wake-up per call)
        for job in prange(njob):
            for tile in range(job * per_job, min((job + 1) * per_job, nb * ntiles)):
                b = tile // ntiles
                p0 = (tile - b * ntiles) * _TILE
                nt = min(_TILE, npix - p0)
                for p in range(nt):
                    mean[job, p] = 0.0
                    rstd[job, p] = 0.0
                for c in range(nc):  # contiguous rows of the tile, vectorised over pixels
                    for p in range(nt):
                        mean[job, p] += x[b, c, p0 + p]
                for p in range(nt):
                    mean[job, p] *= inv_c
                for c in range(nc):  # centred second pass: the tile is in cache
                    for p in range(nt):
                        d = x[b, c, p0 + p] - mean[job, p]
                        rstd[job, p] += d * d
                for p in range(nt):
                    rstd[job, p] = 1.0 / math.sqrt(rstd[job, p] * inv_c + eps)
                if to_tokens:
                    for p in range(nt):  # token rows written contiguously; the tile is read across rows
                        m, r = mean[job, p], rstd[job, p]
                        for c in range(nc):
                            out[b, p0 + p, c] = (x[b, c, p0 + p] - m) * r * weight[c] + bias[c]
                else:
                    for c in range(nc):
                        wc, bc = weight[c], bias[c]
                        for p in range(nt):
                            out[b, c, p0 + p] = (x[b, c, p0 + p] - mean[job, p]) * rstd[job, p] * wc + bc

    @njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def aggregate(x, tokens, local, g, w, local_bias, out):  # x, local, out (B, C, P); tokens (B, P, C)
        nb, nc, npix = x.shape
        ntiles = (npix + _TILE - 1) // _TILE
        for tile in prange(nb * ntiles):
            b = tile // ntiles
            p0 = (tile - b * ntiles) * _TILE
            nt = min(_TILE, npix - p0)
            for c in range(nc):
                gc, wc, lc = g[c], w[c], local_bias[c]
                for p in range(nt):
                    out[b, c, p0 + p] = x[b, c, p0 + p] + gc * tokens[b, p0 + p, c] + wc * (local[b, c, p0 + p] + lc)

    return layernorm, aggregate


def _get_kernels() -> tuple:
    if "k" not in _kernels:
        _kernels["k"] = _build()
    return _kernels["k"]


def _channels_first(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.dim() != 4:
        raise ValueError(f"{name} must be (B, C, H, W), got shape {tuple(x.shape)}")
    return x.contiguous().view(x.shape[0], x.shape[1], -1)  # (B, C, P)


def layernorm_to_tokens(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                        out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.layer_norm(x.flatten(2).transpose(1, 2), (C,), weight, bias, eps)`` in one pass.

    Args:
        x: (B, C, H, W) float32 or float64 features on the CPU.
        weight, bias: (C,) affine parameters of the LayerNorm.
        eps: added to the (biased) variance.
        out_dtype: dtype of the tokens (default x's), as :func:`algnet.ops.glue_triton.layernorm_to_tokens`.

    Returns:
        (B, H*W, C) contiguous tokens.
    """
    out = _layernorm(x, weight, bias, eps, to_tokens=True)
    return out if out_dtype is None else out.to(out_dtype)


def layernorm2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """NAFNet's LayerNorm2d (over channels at each pixel, biased variance) in one pass.

    Maps under ``_NUMBA_NORM_MIN`` elements take PyTorch's passes in place (faster there).

    Args:
        x: (B, C, H, W) float32 or float64 features on the CPU.
        weight, bias: (C,) affine parameters.
        eps: added to the variance.

    Returns:
        (B, C, H, W) contiguous, x's dtype.
    """
    if x.numel() < _NUMBA_NORM_MIN:
        return _layernorm2d_torch(x, weight, bias, eps)
    return _layernorm(x, weight, bias, eps, to_tokens=False).view(x.shape)


def _layernorm2d_torch(x, weight, bias, eps) -> torch.Tensor:
    """x - mean formed once, then scaled in place on that one fresh tensor (fresh full-size tensors
    cost page faults; torch.var_mean's strided reduction over dim 1 was slower still)."""
    xc = x - x.mean(1, keepdim=True)
    var = xc.square().mean(1, keepdim=True)
    return xc.mul_(torch.rsqrt(var.add_(eps))).mul_(weight.view(1, -1, 1, 1)).add_(bias.view(1, -1, 1, 1))


def _layernorm(x, weight, bias, eps, to_tokens: bool) -> torch.Tensor:
    import numba

    xf = _channels_first(x, "x")
    nb, nc, npix = xf.shape
    out = torch.empty((nb, npix, nc) if to_tokens else (nb, nc, npix), dtype=x.dtype)
    tiles = nb * math.ceil(npix / _TILE)
    njob = max(1, min(numba.get_num_threads(), tiles))
    cast = lambda t: t.detach().to(x.dtype).contiguous().numpy()  # noqa: E731
    _get_kernels()[0](xf.detach().numpy(), cast(weight), cast(bias), float(eps), out.numpy(), njob, to_tokens)
    return out


def aggregate_residual(x: torch.Tensor, tokens: torch.Tensor, local: torch.Tensor, g: torch.Tensor, w: torch.Tensor,
                       local_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x + g * F_G + w * (F_L + local_bias)`` where F_G is given as tokens, in one pass.

    Args:
        x: (B, C, H, W) block input (the residual).
        tokens: (B, H*W, C) global-branch output, F_G before it is laid back as a map.
        local: (B, C, H, W) local-branch output F_L.
        g, w: per-channel scales, any shape with C elements.
        local_bias: (C,) or None, added to ``local`` (the bias of the convolution that made it).

    Returns:
        (B, C, H, W) contiguous, x's dtype.
    """
    xf, lf = _channels_first(x, "x"), _channels_first(local, "local")
    nb, nc, npix = xf.shape
    if lf.shape != xf.shape or tokens.shape != (nb, npix, nc):
        raise ValueError(f"shapes disagree: x {tuple(x.shape)}, local {tuple(local.shape)}, tokens {tuple(tokens.shape)}")
    out = torch.empty_like(xf)
    cast = lambda t: t.detach().to(x.dtype).reshape(-1).contiguous().numpy()  # noqa: E731
    _get_kernels()[1](xf.detach().numpy(), tokens.detach().to(x.dtype).contiguous().numpy(), lf.detach().to(x.dtype).numpy(),
                      cast(g), cast(w), cast(torch.zeros(nc) if local_bias is None else local_bias), out.numpy())
    return out.view(x.shape)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``silu(causal depthwise conv1d)`` of (B, L, E) tokens with unit stride over E, one numba pass:
    see :func:`algnet.ops.glue_ref.causal_conv1d_silu`. (B, L, E) contiguous out."""
    from .scan_cpu import causal_conv1d_silu as conv_silu

    if weight.dim() != 2 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight must be (E, K) = ({x.shape[-1]}, K), got {tuple(weight.shape)}")
    return conv_silu(x, weight, bias)


from .glue_ref import add_bias_residual_, dwconv3x3_gate, gate  # noqa: E402  (PyTorch's ops serve on the CPU)
