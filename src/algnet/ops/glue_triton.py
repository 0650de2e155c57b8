"""The glue around an ALGBlock's Mamba layer on the GPU, for inference: Triton kernels.

The same functions as :mod:`algnet.ops.glue_ref` (the PyTorch reference) and
:mod:`algnet.ops.glue_cpu`, with the same signatures and results. In eager PyTorch each
of these is several kernels, each a full pass over memory: NAFNet's LayerNorm2d is a mean, a
subtraction, a square, a second mean, an rsqrt and three scalings; the global branch's token
LayerNorm needs a transposed copy first, and its output a transposed copy back before the feature
aggregation ``g * F_G + W * F_L`` and the residual add (three more passes); the Mamba layer's
causal depthwise conv1d + SiLU is a padded copy, K multiplies, K adds and the SiLU. A profile of
one ALGNet forward at 1280x720 on an H200 (benchmarks/RESULTS.md) put ~40 ms of ~120 ms of GPU
time in PyTorch's elementwise kernels. Each kernel here reads its inputs once and writes once:

- :func:`layernorm2d`: LayerNorm over C at each pixel of (B, C, H, W), the same layout out.
- :func:`layernorm_to_tokens`: the same normalisation written as (B, H*W, C) tokens.
- :func:`aggregate_residual`: ``x + g * tokens^T + w * local`` back in (B, C, H, W).
- :func:`causal_conv1d_silu`: ``silu(causal depthwise conv1d)`` of channels-last (B, L, E) tokens.
- :func:`dwconv3x3_gate`: the blocks' depthwise 3x3 convolution and SimpleGate, ``x1 * x2`` of its
  two channel halves, without writing the 2C-channel map (PyTorch runs its own, slower depthwise
  kernel for it, then a strided product).
- :func:`gate` and :func:`add_bias_residual_`: the second SimpleGate, and the residual add after
  the last convolution.

cuDNN convolutions add their bias as a separate broadcast pass over the output (on an H200, 188
such launches took 6.0 of 64 ms of one ALGNet forward at 1280x720). The blocks therefore run their
1x1 convolutions without bias on the GPU and the kernel that reads each output adds it: the
``pre_bias`` of :func:`dwconv3x3_gate`, the ``bias`` of :func:`gate` and :func:`add_bias_residual_`,
the ``local_bias`` of :func:`aggregate_residual`.

They leave autograd alone: the fused inference modules (:func:`algnet.fuse`) call them. Arithmetic is in
float32 whatever the storage dtype (float64 if the input is float64). Triton is imported lazily;
on CPU tensors the kernels run only in Triton's interpreter (TRITON_INTERPRET=1, for tests).

Glossary: B batch, C channels, P pixels (H * W), E channels of the Mamba layer, L tokens, K taps.
"""

from __future__ import annotations

import functools
import os
from types import SimpleNamespace

import torch

_TILE_ELEMENTS = 4096  # (C, pixels) elements per program: 16 KB of float32 in registers
_ROW_BLOCK = 1024  # pixels per program of the row-wise kernels (gate, bias_residual)


def is_available() -> tuple[bool, str]:
    """Returns (available, reason): triton importable (CUDA tensors; CPU only when interpreting)."""
    try:
        import triton  # noqa: F401
    except ImportError as err:
        return False, f"triton is not installed ({err}); pip install triton"
    return True, ""


def usable(x: torch.Tensor) -> bool:
    """The fused kernels can serve this tensor: CUDA (or CPU in the interpreter), a float dtype."""
    if type(x) is not torch.Tensor or not x.is_floating_point():
        return False
    if x.device.type == "cuda":
        return is_available()[0]
    return x.device.type == "cpu" and _interpret() and is_available()[0]


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


@functools.lru_cache(maxsize=2)
def _define_kernels(interpret: bool):
    """Defines the kernels on first use (one set per interpreter mode, as in :mod:`.scan_triton`)."""
    global tl
    import triton
    import triton.language as tl

    @triton.jit
    def layernorm(x_ptr, w_ptr, b_ptr, out_ptr, C, P, eps,
                  TO_TOKENS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr):
        """One (BLOCK_C >= C, BLOCK_P) tile of (B, C, P): statistics over C for each pixel."""
        pid_p, pid_b = tl.program_id(0), tl.program_id(1)
        offs_c = tl.arange(0, BLOCK_C)
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_c = offs_c < C
        mask = mask_c[:, None] & (offs_p < P)[None, :]
        base = pid_b.to(tl.int64) * C * P
        x = tl.load(x_ptr + base + offs_c[:, None].to(tl.int64) * P + offs_p[None, :], mask=mask, other=0.0).to(ACC)
        mean = tl.sum(x, axis=0) / C
        xc = tl.where(mask, x - mean[None, :], 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / C + eps)  # biased variance, as LayerNorm
        w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        b = tl.load(b_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        y = xc * rstd[None, :] * w[:, None] + b[:, None]
        if TO_TOKENS:
            out_offs = base + offs_p[None, :].to(tl.int64) * C + offs_c[:, None]
        else:
            out_offs = base + offs_c[:, None].to(tl.int64) * P + offs_p[None, :]
        tl.store(out_ptr + out_offs, y.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def aggregate(x_ptr, tok_ptr, loc_ptr, g_ptr, w_ptr, lb_ptr, out_ptr, C, P,
                  LOCAL_BIAS: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr, ACC: tl.constexpr):
        """out = x + g * tokens^T + w * (local + lb) on one (BLOCK_C, BLOCK_P) tile of (B, C, P)."""
        pid_p, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_c = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
        offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
        mask_c = offs_c < C
        mask = mask_c[:, None] & (offs_p < P)[None, :]
        base = pid_b.to(tl.int64) * C * P
        maps = base + offs_c[:, None].to(tl.int64) * P + offs_p[None, :]
        toks = base + offs_p[None, :].to(tl.int64) * C + offs_c[:, None]
        x = tl.load(x_ptr + maps, mask=mask, other=0.0).to(ACC)
        t = tl.load(tok_ptr + toks, mask=mask, other=0.0).to(ACC)
        loc = tl.load(loc_ptr + maps, mask=mask, other=0.0).to(ACC)
        g = tl.load(g_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        w = tl.load(w_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)
        if LOCAL_BIAS:
            loc += tl.load(lb_ptr + offs_c, mask=mask_c, other=0.0).to(ACC)[:, None]
        out = x + g[:, None] * t + w[:, None] * loc
        tl.store(out_ptr + maps, out.to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def conv_silu(x_ptr, w_ptr, b_ptr, out_ptr, L, E, sxb, sxl,
                  K: tl.constexpr, HAS_BIAS: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_E: tl.constexpr,
                  ACC: tl.constexpr):
        """out[t] = silu(bias + sum_k w[:, k] * x[t - K + 1 + k]) on a (BLOCK_L, BLOCK_E) tile."""
        pid_l, pid_e, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs_l = pid_l * BLOCK_L + tl.arange(0, BLOCK_L)
        offs_e = pid_e * BLOCK_E + tl.arange(0, BLOCK_E)
        mask_e = offs_e < E
        x_base = x_ptr + pid_b.to(tl.int64) * sxb
        acc = tl.zeros([BLOCK_L, BLOCK_E], dtype=ACC)
        for k in tl.static_range(K):
            src = offs_l - (K - 1) + k  # the rows before the sequence are the causal zero padding
            m = ((src >= 0) & (src < L))[:, None] & mask_e[None, :]
            xv = tl.load(x_base + src[:, None].to(tl.int64) * sxl + offs_e[None, :], mask=m, other=0.0).to(ACC)
            wk = tl.load(w_ptr + offs_e * K + k, mask=mask_e, other=0.0).to(ACC)
            acc += xv * wk[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + offs_e, mask=mask_e, other=0.0).to(ACC)[None, :]
        out = acc / (1.0 + tl.exp(-acc))
        m_out = (offs_l < L)[:, None] & mask_e[None, :]
        out_offs = pid_b.to(tl.int64) * L * E + offs_l[:, None].to(tl.int64) * E + offs_e[None, :]
        tl.store(out_ptr + out_offs, out.to(out_ptr.dtype.element_ty), mask=m_out)

    @triton.jit
    def dwconv_gate(y_ptr, w_ptr, b_ptr, pb_ptr, out_ptr, C, H, W,
                    HAS_BIAS: tl.constexpr, PRE_BIAS: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                    ACC: tl.constexpr):
        """out[c] = dw3x3(y)[c] * dw3x3(y)[c + C] on one (BLOCK_H, BLOCK_W) tile of one channel pair."""
        pid_t, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        n_tw = tl.cdiv(W, BLOCK_W)
        offs_h = (pid_t // n_tw) * BLOCK_H + tl.arange(0, BLOCK_H)
        offs_w = (pid_t % n_tw) * BLOCK_W + tl.arange(0, BLOCK_W)
        plane = H.to(tl.int64) * W
        first = y_ptr + (pid_b.to(tl.int64) * 2 * C + pid_c) * plane  # channel c of (B, 2C, H, W)
        second = first + C * plane  # channel c + C
        acc1 = tl.zeros([BLOCK_H, BLOCK_W], dtype=ACC)
        acc2 = tl.zeros([BLOCK_H, BLOCK_W], dtype=ACC)
        pb1 = 0.0
        pb2 = 0.0
        if PRE_BIAS:  # the previous convolution's bias, added to y inside the map only (zero padding stays 0)
            pb1 = tl.load(pb_ptr + pid_c).to(ACC)
            pb2 = tl.load(pb_ptr + pid_c + C).to(ACC)
        for dy in tl.static_range(3):
            hh = offs_h + (dy - 1)
            for dx in tl.static_range(3):
                ww = offs_w + (dx - 1)
                m = ((hh >= 0) & (hh < H))[:, None] & ((ww >= 0) & (ww < W))[None, :]  # zero padding
                offs = hh[:, None] * W + ww[None, :]
                w1 = tl.load(w_ptr + pid_c * 9 + dy * 3 + dx).to(ACC)
                w2 = tl.load(w_ptr + (pid_c + C) * 9 + dy * 3 + dx).to(ACC)
                v1 = tl.load(first + offs, mask=m, other=0.0).to(ACC)
                v2 = tl.load(second + offs, mask=m, other=0.0).to(ACC)
                if PRE_BIAS:
                    v1 = tl.where(m, v1 + pb1, 0.0)
                    v2 = tl.where(m, v2 + pb2, 0.0)
                acc1 += v1 * w1
                acc2 += v2 * w2
        if HAS_BIAS:
            acc1 += tl.load(b_ptr + pid_c).to(ACC)
            acc2 += tl.load(b_ptr + pid_c + C).to(ACC)
        m_out = (offs_h < H)[:, None] & (offs_w < W)[None, :]
        out = out_ptr + (pid_b.to(tl.int64) * C + pid_c) * plane + offs_h[:, None] * W + offs_w[None, :]
        tl.store(out, (acc1 * acc2).to(out_ptr.dtype.element_ty), mask=m_out)

    @triton.jit
    def gate(x_ptr, b_ptr, out_ptr, C, P, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
        """out[c] = (x[c] + b[c]) * (x[c + C] + b[c + C]) along one row of pixels of (B, 2C, P)."""
        pid_p, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs = pid_p * BLOCK + tl.arange(0, BLOCK)
        mask = offs < P
        first = x_ptr + (pid_b.to(tl.int64) * 2 * C + pid_c) * P
        x1 = tl.load(first + offs, mask=mask, other=0.0).to(ACC)
        x2 = tl.load(first + C.to(tl.int64) * P + offs, mask=mask, other=0.0).to(ACC)
        if HAS_BIAS:
            x1 += tl.load(b_ptr + pid_c).to(ACC)
            x2 += tl.load(b_ptr + pid_c + C).to(ACC)
        tl.store(out_ptr + (pid_b.to(tl.int64) * C + pid_c) * P + offs, (x1 * x2).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit
    def bias_residual(out_ptr, r_ptr, b_ptr, C, P, HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr, ACC: tl.constexpr):
        """out[c] += residual[c] + b[c] in place along one row of pixels of (B, C, P)."""
        pid_p, pid_c, pid_b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        offs = pid_p * BLOCK + tl.arange(0, BLOCK)
        mask = offs < P
        row = (pid_b.to(tl.int64) * C + pid_c) * P + offs
        v = tl.load(out_ptr + row, mask=mask, other=0.0).to(ACC) + tl.load(r_ptr + row, mask=mask, other=0.0).to(ACC)
        if HAS_BIAS:
            v += tl.load(b_ptr + pid_c).to(ACC)
        tl.store(out_ptr + row, v.to(out_ptr.dtype.element_ty), mask=mask)

    return SimpleNamespace(layernorm=layernorm, aggregate=aggregate, conv_silu=conv_silu, dwconv_gate=dwconv_gate,
                           gate=gate, bias_residual=bias_residual, tl=tl)


def _kernels():
    kernels = _define_kernels(_interpret())
    globals()["tl"] = kernels.tl  # the interpreter runs kernel source against this module's globals
    return kernels


def _acc(*tensors: torch.Tensor):
    import triton.language as tl

    return tl.float64 if any(t.dtype == torch.float64 for t in tensors) else tl.float32


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


def _check(x: torch.Tensor, name: str, dims: int) -> None:
    if x.dim() != dims:
        raise ValueError(f"{name} must have {dims} dimensions, got shape {tuple(x.shape)}")
    if not usable(x):
        raise RuntimeError(f"{name}: the fused Triton kernels need a floating CUDA tensor and triton "
                           f"(or TRITON_INTERPRET=1 on the CPU); got {x.dtype} on {x.device}")


def _vector(t: torch.Tensor, like: torch.Tensor, n: int, name: str) -> torch.Tensor:
    t = t.detach().reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} must have {n} elements, got {t.numel()}")
    return t.to(device=like.device).contiguous()


def _layernorm(x, weight, bias, eps, to_tokens: bool, out_dtype) -> torch.Tensor:
    _check(x, "x", 4)
    nb, nc, h, w = x.shape
    npix = h * w
    xf = x.detach().contiguous()
    dtype = x.dtype if out_dtype is None else out_dtype
    out = torch.empty((nb, npix, nc) if to_tokens else (nb, nc, h, w), dtype=dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_c = _next_pow2(nc)
    block_p = max(1, min(_next_pow2(npix), _TILE_ELEMENTS // block_c))
    grid = (-(-npix // block_p), nb)
    _kernels().layernorm[grid](xf, _vector(weight, x, nc, "weight"), _vector(bias, x, nc, "bias"), out, nc, npix,
                               float(eps), TO_TOKENS=to_tokens, BLOCK_C=block_c, BLOCK_P=block_p, ACC=_acc(x, out),
                               num_warps=4)
    return out


def layernorm_to_tokens(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                        out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.layer_norm(x.flatten(2).transpose(1, 2), (C,), weight, bias, eps)`` in one pass.

    Args:
        x: (B, C, H, W) features, any float dtype, on the GPU.
        weight, bias: (C,) affine parameters of the LayerNorm.
        eps: added to the (biased) variance.
        out_dtype: dtype of the tokens (default x's): float32 where the global branch computes in float32.

    Returns:
        (B, H*W, C) contiguous tokens.
    """
    return _layernorm(x, weight, bias, eps, True, out_dtype)


def layernorm2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """NAFNet's LayerNorm2d (over channels at each pixel, biased variance) in one pass.

    Args:
        x: (B, C, H, W) features, any float dtype, on the GPU.
        weight, bias: (C,) affine parameters.
        eps: added to the variance.

    Returns:
        (B, C, H, W) contiguous, x's dtype.
    """
    return _layernorm(x, weight, bias, eps, False, None)


def aggregate_residual(x: torch.Tensor, tokens: torch.Tensor, local: torch.Tensor, g: torch.Tensor, w: torch.Tensor,
                       local_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x + g * F_G + w * F_L`` where F_G is given as tokens, in one pass.

    Args:
        x: (B, C, H, W) block input (the residual).
        tokens: (B, H*W, C) global-branch output, F_G before it is laid back as a map.
        local: (B, C, H, W) local-branch output F_L.
        g, w: per-channel scales, any shape with C elements.
        local_bias: (C,) added to ``local`` first: the bias of the convolution that made it, left out
            there so that it costs no pass of its own.

    Returns:
        (B, C, H, W) contiguous, in the dtype PyTorch's ``x + (g * F_G + w * F_L)`` would have.
    """
    _check(x, "x", 4)
    nb, nc, h, wd = x.shape
    npix = h * wd
    if local.shape != x.shape or tokens.shape != (nb, npix, nc):
        raise ValueError(f"shapes disagree: x {tuple(x.shape)}, local {tuple(local.shape)}, tokens {tuple(tokens.shape)}")
    dtype = torch.promote_types(torch.promote_types(x.dtype, tokens.dtype), torch.promote_types(local.dtype, torch.promote_types(g.dtype, w.dtype)))
    out = torch.empty(x.shape, dtype=dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_c = min(_next_pow2(nc), 32)  # 64 x 64 tiles spill registers (compiled for sm_80 and sm_90)
    block_p = max(16, min(_next_pow2(npix), _TILE_ELEMENTS // block_c))
    grid = (-(-npix // block_p), -(-nc // block_c), nb)
    gv = _vector(g, x, nc, "g")
    lb = gv if local_bias is None else _vector(local_bias, x, nc, "local_bias")
    _kernels().aggregate[grid](x.detach().contiguous(), tokens.detach().contiguous(), local.detach().contiguous(),
                               gv, _vector(w, x, nc, "w"), lb, out, nc, npix, LOCAL_BIAS=local_bias is not None,
                               BLOCK_C=block_c, BLOCK_P=block_p, ACC=_acc(out), num_warps=4)
    return out


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The GPU twin of :func:`algnet.ops.glue_ref.causal_conv1d_silu`: the same arguments and
    result, ``silu(bias + sum_k weight[:, k] * x[t - K + 1 + k])`` for (B, L, E) tokens with unit
    stride over E, written (B, L, E) contiguous in x's dtype."""
    _check(x, "x", 3)
    if x.stride(-1) != 1:
        x = x.contiguous()
    nb, length, e = x.shape
    if weight.dim() != 2 or weight.shape[0] != e:
        raise ValueError(f"weight must be (E, K) = ({e}, K), got {tuple(weight.shape)}")
    taps = weight.shape[1]
    out = torch.empty((nb, length, e), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_e = min(_next_pow2(e), 64)
    block_l = max(1, min(_next_pow2(length), _TILE_ELEMENTS // block_e))
    grid = (-(-length // block_l), -(-e // block_e), nb)
    w = weight.detach().to(x.device).contiguous()
    b = w if bias is None else _vector(bias, x, e, "bias")
    _kernels().conv_silu[grid](x.detach(), w, b, out, length, e, x.stride(0), x.stride(1), K=taps, HAS_BIAS=bias is not None,
                               BLOCK_L=block_l, BLOCK_E=block_e, ACC=_acc(x), num_warps=4)
    return out


def dwconv3x3_gate(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   pre_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``SimpleGate(conv2d(y + pre_bias, weight, bias, padding=1, groups=2C))`` in one pass.

    Args:
        y: (B, 2C, H, W) features.
        weight: (2C, 1, 3, 3) depthwise taps; bias: (2C,) or None.
        pre_bias: (2C,) or None, added to y inside the map (the padding stays zero): the bias of
            the 1x1 convolution that made y, left out there so that it costs no pass of its own.

    Returns:
        (B, C, H, W) contiguous, y's dtype: the first C channels of the convolution times the last C.
    """
    _check(y, "y", 4)
    nb, c2, h, w = y.shape
    if c2 % 2 or tuple(weight.shape) != (c2, 1, 3, 3):
        raise ValueError(f"need an even channel count and (2C, 1, 3, 3) taps, got y {tuple(y.shape)}, weight {tuple(weight.shape)}")
    c = c2 // 2
    out = torch.empty((nb, c, h, w), dtype=y.dtype, device=y.device)
    if out.numel() == 0:
        return out
    block_w = min(_next_pow2(w), 64)
    block_h = max(1, min(_next_pow2(h), 1024 // block_w))
    grid = (-(-h // block_h) * -(-w // block_w), c, nb)
    taps = weight.detach().to(y.device).reshape(-1).contiguous()
    b = taps if bias is None else _vector(bias, y, c2, "bias")
    pb = taps if pre_bias is None else _vector(pre_bias, y, c2, "pre_bias")
    _kernels().dwconv_gate[grid](y.detach().contiguous(), taps, b, pb, out, c, h, w, HAS_BIAS=bias is not None,
                                 PRE_BIAS=pre_bias is not None, BLOCK_H=block_h, BLOCK_W=block_w, ACC=_acc(y), num_warps=4)
    return out


def _rows_grid(p: int, c: int, nb: int) -> tuple:
    return (-(-p // _ROW_BLOCK), c, nb)


def gate(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """SimpleGate of a convolution's output with its bias: ``(x1 + b1) * (x2 + b2)`` in one pass.

    Args:
        x: (B, 2C, H, W), the output of a convolution run without its bias.
        bias: (2C,) or None.

    Returns:
        (B, C, H, W) contiguous, x's dtype.
    """
    _check(x, "x", 4)
    nb, c2, h, w = x.shape
    if c2 % 2:
        raise ValueError(f"x needs an even channel count, got shape {tuple(x.shape)}")
    out = torch.empty((nb, c2 // 2, h, w), dtype=x.dtype, device=x.device)
    if out.numel() == 0:
        return out
    xc = x.detach().contiguous()
    b = xc if bias is None else _vector(bias, x, c2, "bias")
    _kernels().gate[_rows_grid(h * w, c2 // 2, nb)](xc, b, out, c2 // 2, h * w, HAS_BIAS=bias is not None,
                                                    BLOCK=_ROW_BLOCK, ACC=_acc(x), num_warps=4)
    return out


def add_bias_residual_(out: torch.Tensor, residual: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``out += residual + bias`` in place, in one pass (a convolution's output, run without its bias).

    Args:
        out: (B, C, H, W) contiguous; written in place and returned.
        residual: (B, C, H, W).
        bias: (C,) or None.
    """
    _check(out, "out", 4)
    if residual.shape != out.shape:
        raise ValueError(f"shapes disagree: out {tuple(out.shape)}, residual {tuple(residual.shape)}")
    if not out.is_contiguous():
        raise ValueError("out must be contiguous: it is written in place")
    nb, c, h, w = out.shape
    if out.numel() == 0:
        return out
    r = residual.detach().contiguous()
    b = r if bias is None else _vector(bias, out, c, "bias")
    _kernels().bias_residual[_rows_grid(h * w, c, nb)](out.detach(), r, b, c, h * w, HAS_BIAS=bias is not None,
                                                       BLOCK=_ROW_BLOCK, ACC=_acc(out, r), num_warps=4)
    return out
