"""Building blocks shared by ALGNet and NAFNet: LayerNorm2d, SimpleGate, the global pool of the
local branch (replaceable by TLC's sliding mean, see :mod:`algnet.models.tlc`)."""

from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

FUSED_GLUE_ENV = "ALGNET_FUSED_GLUE"  # "0": PyTorch's ops for the blocks' glue on every device


# From this many elements CPU inference normalises with one numba pass (algnet.ops.block_cpu); side
# by side against the in-place PyTorch form below (2 cores, best of 7): 1x32x720x1280 89.6 -> 50.9
# ms, 1x64x360x640 49.1 -> 27.3 ms, 1x128x180x320 17.2 -> 14.9 ms; the smaller maps deeper in the
# network stay in cache and PyTorch's passes win (1x256x90x160 3.3 against 4.5 ms).
_FUSED_NORM_MIN = 1 << 22


class LayerNorm2d(nn.Module):
    """NAFNet's LayerNorm2d: normalises over channels at each pixel (biased variance, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same function as NAFNet's textbook form to float rounding, with x - mean formed once.
        # Measured on the CPU (1x32x720x1280, 2 threads): textbook 203 ms; this with autograd
        # 153 ms; without autograd, in place on the one fresh tensor, 93 ms (fresh full-size
        # tensors cost page faults). torch.var_mean took 282 ms: its reduction over dim 1 is strided.
        if not torch.is_grad_enabled():
            from ..ops import block_cpu

            kernels = glue_kernels(x)  # on the CPU, only for maps past the size where numba wins
            if kernels is not None and (kernels is not block_cpu or self._fused_cpu(x)):
                return kernels.layernorm2d(x, self.weight, self.bias, self.eps)
        w, b = self.weight.view(1, -1, 1, 1), self.bias.view(1, -1, 1, 1)
        xc = x - x.mean(1, keepdim=True)
        if torch.is_grad_enabled():
            var = (xc * xc).mean(1, keepdim=True)
            return torch.addcmul(b, w, xc * torch.rsqrt(var + self.eps))
        var = xc.square().mean(1, keepdim=True)
        return xc.mul_(torch.rsqrt(var.add_(self.eps))).mul_(w).add_(b)

    @staticmethod
    def _fused_cpu(x: torch.Tensor) -> bool:
        return x.numel() >= _FUSED_NORM_MIN and x.dtype in (torch.float32, torch.float64)


class SimpleGate(nn.Module):
    """Splits channels in two halves and multiplies them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class GlobalAvgPool(nn.Module):
    """Global average pool to 1x1, the GAP of channel attention; TLC swaps it for a windowed mean."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=True)


def glue_kernels(x: torch.Tensor):
    """The fused glue kernels for x's device, or None where PyTorch's ops serve.

    :mod:`algnet.ops.block_cpu` (numba) for CPU tensors, :mod:`algnet.ops.block_triton` for CUDA
    tensors; None for other devices, fake or subclassed tensors (no memory to hand a kernel), a
    missing library, or ALGNET_FUSED_GLUE=0 (read at each call, the benchmarks' A/B switch). The
    kernels compute the glue without autograd: callers use them only when no gradient is needed.
    """
    if os.environ.get(FUSED_GLUE_ENV, "1") == "0" or type(x) is not torch.Tensor or not x.is_floating_point():
        return None
    if x.device.type == "cpu":
        from ..ops import block_cpu

        return block_cpu if block_cpu.is_available()[0] else None
    if x.device.type == "cuda":
        from ..ops import block_triton

        return block_triton if block_triton.is_available()[0] else None
    return None


def unobserved(*modules: nn.Module) -> bool:
    """No forward hook watches these modules (nor any module): a fused path may skip calling them.

    The fused inference paths compute the same function without calling some submodules; with a
    hook registered (a MAC counter, a feature extractor) the plain path runs so the hook sees them.
    """
    from torch.nn.modules import module as nn_module

    if nn_module._global_forward_hooks or nn_module._global_forward_pre_hooks:
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def conv_of_scaled(conv: nn.Conv2d, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``conv(x * s)`` for channel attention s; a (1, C, 1, 1) s is folded into the weight.

    The fold saves one pass over the map (NAFNet's SCA and ALGNet's local branch); s varying over
    the batch or the pixels (TLC's windowed mean) is applied to x, and a hook on conv takes the
    plain form.
    """
    return _folded_conv(conv, x, s=s) if unobserved(conv) else conv(x * s)


def conv_without_bias(conv: nn.Conv2d, x: torch.Tensor, scale: torch.Tensor | None = None, s: torch.Tensor | None = None) -> torch.Tensor:
    """``scale * (conv(x * s) - conv.bias)``, scales folded as in :func:`add_scaled_conv`: the
    convolution without its bias, for a kernel that adds the bias as it reads the output. Never
    calls conv's module: the caller checks it for hooks."""
    return _folded_conv(conv, x, scale, s, bias=False)


def add_scaled_conv(y: torch.Tensor, scale: torch.Tensor, conv: nn.Conv2d, x: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
    """``y + scale * conv(x * s)`` for a (1, C, 1, 1) scale (the blocks' beta and gamma).

    The scale is folded into the convolution's weight and bias (and s as in :func:`conv_of_scaled`),
    and without autograd the sum is formed in place on the convolution's fresh output: two passes
    over the map fewer. A hook on conv takes the plain form.
    """
    if not unobserved(conv):
        return y + scale * conv(x if s is None else x * s)
    out = _folded_conv(conv, x, scale, s)
    return out.add_(y) if not torch.is_grad_enabled() else y + out


def _folded_conv(conv: nn.Conv2d, x: torch.Tensor, scale: torch.Tensor | None = None, s: torch.Tensor | None = None,
                 bias: bool = True) -> torch.Tensor:
    """``scale * conv(x * s)`` with scale (1, C_out, 1, 1) and a (1, C_in, 1, 1) s folded into the weights
    (without conv's bias when ``bias`` is False)."""
    weight, bias = conv.weight, (conv.bias if bias else None)
    if scale is not None:
        weight = weight * scale.view(-1, 1, 1, 1)
        bias = None if bias is None else bias * scale.view(-1)
    if s is not None and s.shape[0] == 1 and s.shape[-2:] == (1, 1):
        weight = weight * s.view(1, -1, 1, 1)
    elif s is not None:
        x = x * s
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Zero-pads bottom and right up to a multiple of ``multiple`` (official ``check_image_size``)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if ph or pw else x


def crop_to(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return x[..., :height, :width]
