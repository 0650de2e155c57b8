"""The glue around an ALGBlock's Mamba layer in plain PyTorch: the reference twin of the fused kernels.

:mod:`algnet.ops.glue_cpu` (numba) and :mod:`algnet.ops.glue_triton` (Triton) have the same
functions with the same signatures and results; their tests compare them with these. The fused
inference modules (:func:`algnet.fuse`) call one of the three by the tensors' device or by the
backend the conversion was given. Each function states the composition of PyTorch ops it replaces:

- :func:`layernorm2d`: LayerNorm over C at each pixel of (B, C, H, W) (NAFNet's LayerNorm2d).
- :func:`layernorm_to_tokens`: the same normalisation of (B, C, H, W) written as (B, H*W, C) tokens.
- :func:`aggregate_residual`: ``x + g * F_G + w * (F_L + local_bias)`` with F_G given as tokens.
- :func:`causal_conv1d_silu`: ``silu(causal depthwise conv1d)`` of channels-last (B, L, E) tokens.
- :func:`dwconv3x3_gate`: depthwise 3x3 convolution of ``y + pre_bias``, then SimpleGate.
- :func:`gate`: SimpleGate of ``x + bias``.
- :func:`add_bias_residual_`: ``out += residual + bias`` in place.

Glossary: B batch, C channels, P pixels (H * W), E channels of the Mamba layer, L tokens, K taps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def layernorm2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    """NAFNet's LayerNorm2d: over channels at each pixel, biased variance. (B, C, H, W) -> same."""
    mu = x.mean(1, keepdim=True)
    var = (x - mu).pow(2).mean(1, keepdim=True)
    return weight.view(1, -1, 1, 1) * (x - mu) / torch.sqrt(var + eps) + bias.view(1, -1, 1, 1)


def layernorm_to_tokens(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float,
                        out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """``F.layer_norm`` over C of the (B, H*W, C) tokens of a (B, C, H, W) map, contiguous, in ``out_dtype``
    (default x's)."""
    dtype = x.dtype if out_dtype is None else out_dtype
    tokens = x.to(dtype).flatten(2).transpose(1, 2)  # (B, P, C)
    return F.layer_norm(tokens, (x.shape[1],), weight.to(dtype), bias.to(dtype), eps).contiguous()


def aggregate_residual(x: torch.Tensor, tokens: torch.Tensor, local: torch.Tensor, g: torch.Tensor, w: torch.Tensor,
                       local_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x + (g * F_G + w * F_L)``: the block's residual around the feature aggregation.

    Args:
        x: (B, C, H, W) block input.
        tokens: (B, H*W, C) global-branch output F_G.
        local: (B, C, H, W) local-branch output F_L, without ``local_bias`` if that is given.
        g, w: per-channel scales, any shape with C elements.
        local_bias: (C,) or None, added to ``local``.
    """
    nb, nc, h, wd = x.shape
    if local.shape != x.shape or tokens.shape != (nb, h * wd, nc):
        raise ValueError(f"shapes disagree: x {tuple(x.shape)}, local {tuple(local.shape)}, tokens {tuple(tokens.shape)}")
    f_g = tokens.transpose(1, 2).reshape(x.shape)  # (B, C, H, W)
    if local_bias is not None:
        local = local + local_bias.view(1, -1, 1, 1)
    return x + (g.reshape(1, -1, 1, 1) * f_g + w.reshape(1, -1, 1, 1) * local)


def causal_conv1d_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``silu(bias + sum_k weight[:, k] * x[t - K + 1 + k])`` of (B, L, E) tokens: mamba_ssm's causal
    depthwise conv1d and SiLU, (B, L, E) contiguous out."""
    if weight.dim() != 2 or weight.shape[0] != x.shape[-1]:
        raise ValueError(f"weight must be (E, K) = ({x.shape[-1]}, K), got {tuple(weight.shape)}")
    taps = weight.shape[1]
    out = F.conv1d(x.transpose(1, 2), weight.unsqueeze(1), bias, padding=taps - 1, groups=x.shape[-1])  # (B, E, L + K - 1)
    return F.silu(out[..., : x.shape[1]]).transpose(1, 2).contiguous()


def dwconv3x3_gate(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   pre_bias: torch.Tensor | None = None) -> torch.Tensor:
    """``SimpleGate(conv2d(y + pre_bias, weight, bias, padding=1, groups=2C))``; the zero padding stays zero."""
    c2 = y.shape[1]
    if c2 % 2 or tuple(weight.shape) != (c2, 1, 3, 3):
        raise ValueError(f"need an even channel count and (2C, 1, 3, 3) taps, got y {tuple(y.shape)}, weight {tuple(weight.shape)}")
    if pre_bias is not None:
        y = y + pre_bias.view(1, -1, 1, 1)
    out = F.conv2d(y, weight, bias, padding=1, groups=c2)
    return gate(out)


def gate(x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """SimpleGate ``(x1 + b1) * (x2 + b2)`` of the two channel halves of (B, 2C, H, W)."""
    if x.shape[1] % 2:
        raise ValueError(f"x needs an even channel count, got shape {tuple(x.shape)}")
    if bias is not None:
        x = x + bias.view(1, -1, 1, 1)
    x1, x2 = x.chunk(2, dim=1)
    return (x1 * x2).contiguous()


def add_bias_residual_(out: torch.Tensor, residual: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``out += residual + bias`` in place (bias (C,) or None); returns out."""
    if residual.shape != out.shape:
        raise ValueError(f"shapes disagree: out {tuple(out.shape)}, residual {tuple(residual.shape)}")
    out.add_(residual)
    return out if bias is None else out.add_(bias.view(1, -1, 1, 1))
