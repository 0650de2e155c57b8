"""Training losses of ALGNet (paper section 3.1): Charbonnier, edge and frequency terms over all outputs.

The total loss over the MIMO outputs ``Î_i`` (coarsest first) is

    sum_i  Char(Î_i, I_i) + 0.05 * Edge(Î_i, I_i) + 0.1 * Freq(Î_i, I_i)

with ``I_i`` the sharp image resized to output i's size. The edge term is MPRNet's ``EdgeLoss``
(Zamir et al., CVPR 2021, ``MPRNet/Deblurring/losses.py``) and the frequency term the FFT loss of
MIMO-UNet (Cho et al., ICCV 2021, ``MIMO-UNet/train.py``); both are reproduced here so that the
numbers match theirs. Each loss is a function plus a thin ``nn.Module`` (kornia's pattern).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "charbonnier_loss", "edge_loss", "frequency_loss", "multiscale_loss", "laplacian",
    "CharbonnierLoss", "EdgeLoss", "FrequencyLoss", "MultiScaleLoss",
]

# MPRNet's 5-tap binomial-like kernel; its outer product is the 5x5 Gaussian of the pyramid.
_GAUSS_1D = (0.05, 0.25, 0.4, 0.25, 0.05)


def _check_pair(pred: torch.Tensor, target: torch.Tensor, what: str) -> None:
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise TypeError(f"{what}: pred and target must be tensors, got {type(pred).__name__} and {type(target).__name__}")
    if pred.ndim != 4 or target.ndim != 4:
        raise ValueError(f"{what}: expected 4-D (B, C, H, W) tensors, got pred {tuple(pred.shape)} and target {tuple(target.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"{what}: pred and target shapes differ: {tuple(pred.shape)} vs {tuple(target.shape)}")


def charbonnier_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier (smooth L1) loss ``mean(sqrt((pred - target)^2 + eps^2))``.

    Args:
        pred: restored images, (B, C, H, W).
        target: sharp images of the same shape.
        eps: smoothing constant; the loss of identical inputs is ``eps``, not 0.

    Returns:
        A scalar tensor.
    """
    _check_pair(pred, target, "charbonnier_loss")
    diff = pred - target
    return torch.sqrt(diff * diff + eps * eps).mean()


def _conv_gauss(x: torch.Tensor) -> torch.Tensor:
    """5x5 Gaussian blur per channel with replicate padding, as MPRNet's ``conv_gauss``."""
    c = x.shape[1]
    k = torch.tensor(_GAUSS_1D, dtype=x.dtype, device=x.device)
    kernel = torch.outer(k, k).expand(c, 1, 5, 5)  # (C, 1, 5, 5): depthwise
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=c)


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """One level of MPRNet's Laplacian pyramid: ``x`` minus its blurred, decimated and re-expanded copy.

    The expansion puts ``4 * conv_gauss(x)[::2, ::2]`` on the even grid, zeros elsewhere, and blurs
    again. In the interior the two blurs preserve constants exactly; within two pixels of a border
    the replicate padding does not, so the Laplacian of a constant image is nonzero there.
    """
    filtered = _conv_gauss(x)
    expanded = torch.zeros_like(filtered)
    expanded[:, :, ::2, ::2] = 4 * filtered[:, :, ::2, ::2]
    return x - _conv_gauss(expanded)


def edge_loss(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss between the Laplacians of ``pred`` and ``target`` (MPRNet's ``EdgeLoss``).

    Args:
        pred: restored images, (B, C, H, W); any number of channels.
        target: sharp images of the same shape.
        eps: Charbonnier smoothing constant.
    """
    _check_pair(pred, target, "edge_loss")
    return charbonnier_loss(laplacian(pred), laplacian(target), eps)


def frequency_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between the 2-D FFTs, real and imaginary parts stacked (MIMO-UNet).

    The FFT is unnormalised, so a constant offset ``c`` gives ``|c| / 2``: only the DC term,
    ``c*H*W``, differs, and the mean runs over ``2*H*W`` numbers per channel.
    """
    _check_pair(pred, target, "frequency_loss")
    # FFT in float32 at least: half-precision FFTs only support power-of-two sizes.
    dtype = torch.promote_types(pred.dtype, torch.float32)
    fp = torch.fft.fft2(pred.to(dtype))
    ft = torch.fft.fft2(target.to(dtype))
    return (torch.view_as_real(fp) - torch.view_as_real(ft)).abs().mean()  # (B, C, H, W, 2)


def _resize_to(target: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if target.shape[-2:] == size:
        return target
    # Bilinear without antialiasing, as MIMO-UNet downscales its labels.
    return F.interpolate(target, size=tuple(size), mode="bilinear", align_corners=False, antialias=False)


def multiscale_loss(
    outputs: Sequence[torch.Tensor],
    target: torch.Tensor,
    edge_weight: float = 0.05,
    freq_weight: float = 0.1,
    eps: float = 1e-3,
) -> torch.Tensor:
    """The ALGNet training loss summed over all outputs of a multi-output network.

    Args:
        outputs: the network's outputs, any number (ALGNet gives 4, coarsest first; NAFNet 1),
            each (B, C, h_i, w_i).
        target: the sharp images (B, C, H, W); resized bilinearly to each output's size, used as is
            for outputs of its own size.
        edge_weight: weight of the edge term.
        freq_weight: weight of the frequency term.
        eps: Charbonnier constant of the Charbonnier and edge terms.

    Returns:
        A scalar tensor: ``sum_i Char + edge_weight * Edge + freq_weight * Freq``.
    """
    if isinstance(outputs, torch.Tensor) or len(outputs) == 0:
        raise ValueError("multiscale_loss: outputs must be a non-empty list of (B, C, h, w) tensors")
    if not isinstance(target, torch.Tensor) or target.ndim != 4:
        raise ValueError(f"multiscale_loss: target must be a 4-D (B, C, H, W) tensor, got {getattr(target, 'shape', type(target))}")
    total = target.new_zeros(())
    for i, out in enumerate(outputs):
        if not isinstance(out, torch.Tensor) or out.ndim != 4 or out.shape[:2] != target.shape[:2]:
            raise ValueError(
                f"multiscale_loss: output {i} has shape {tuple(getattr(out, 'shape', ()))}, "
                f"expected (B, C) = {tuple(target.shape[:2])} and 4 dimensions"
            )
        t = _resize_to(target, out.shape[-2:])
        total = total + charbonnier_loss(out, t, eps)
        if edge_weight:
            total = total + edge_weight * edge_loss(out, t, eps)
        if freq_weight:
            total = total + freq_weight * frequency_loss(out, t)
    return total


class CharbonnierLoss(nn.Module):
    """Module form of :func:`charbonnier_loss`."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return charbonnier_loss(pred, target, self.eps)


class EdgeLoss(nn.Module):
    """Module form of :func:`edge_loss`."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return edge_loss(pred, target, self.eps)


class FrequencyLoss(nn.Module):
    """Module form of :func:`frequency_loss`."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return frequency_loss(pred, target)


class MultiScaleLoss(nn.Module):
    """Module form of :func:`multiscale_loss`."""

    def __init__(self, edge_weight: float = 0.05, freq_weight: float = 0.1, eps: float = 1e-3):
        super().__init__()
        self.edge_weight = edge_weight
        self.freq_weight = freq_weight
        self.eps = eps

    def forward(self, outputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        return multiscale_loss(outputs, target, self.edge_weight, self.freq_weight, self.eps)

    def extra_repr(self) -> str:
        return f"edge_weight={self.edge_weight}, freq_weight={self.freq_weight}, eps={self.eps}"
