"""Test-time Local Converter (TLC, "-local" inference).

Chu et al., "Improving Image Restoration by Revisiting Global Information Aggregation", ECCV 2022
(https://arxiv.org/abs/2112.04491). At test time the global average pool of channel attention
becomes a sliding mean whose window matches what the pool saw during training (1.5x the training
patch by default), so full-size images get the statistics the network was trained with.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import GlobalAvgPool


class LocalAvgPool(nn.Module):
    """Stride-1 box mean of a fixed window, replicate-padded back to the input size.

    Where the window covers the whole map it is the global mean, exactly as the GAP it replaces.
    Matches NAFNet's ``local_arch.AvgPool2d`` (``fast_imp=False``).
    """

    def __init__(self, kernel_size: tuple[int, int]):
        super().__init__()
        self.kernel_size = (int(kernel_size[0]), int(kernel_size[1]))

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.kernel_size[0] >= h and self.kernel_size[1] >= w:
            return x.mean(dim=(2, 3), keepdim=True)
        k1, k2 = min(h, self.kernel_size[0]), min(w, self.kernel_size[1])
        s = F.pad(x.cumsum(dim=-1).cumsum(dim=-2), (1, 0, 1, 0))  # (B, C, H+1, W+1) integral image
        out = (s[..., k1:, k2:] + s[..., :-k1, :-k2] - s[..., :-k1, k2:] - s[..., k1:, :-k2]) / (k1 * k2)
        _h, _w = out.shape[-2:]
        pad = ((w - _w) // 2, (w - _w + 1) // 2, (h - _h) // 2, (h - _h + 1) // 2)
        return F.pad(out, pad, mode="replicate")


def _level_scales(model: nn.Module) -> dict[str, int]:
    """Downscale factor of each U-Net stage, by the container names both networks share."""
    levels = len(model.encoders)
    scales = {f"encoders.{i}": 2**i for i in range(levels)}
    scales["middle_blks"] = 2**levels
    scales.update({f"decoders.{j}": 2 ** (levels - 1 - j) for j in range(levels)})
    return scales


def to_tlc(model: nn.Module, train_size: int | tuple[int, int] = 256, base_ratio: float = 1.5) -> nn.Module:
    """Returns a copy of ``model`` whose global pools are TLC windows; ``model`` is left unchanged.

    Args:
        model: an ALGNet or NAFNet.
        train_size: training patch (H, W) or side.
        base_ratio: window over training patch (1.5: 256 -> 384).
    """
    th, tw = (train_size, train_size) if isinstance(train_size, int) else train_size
    base = (int(th * base_ratio), int(tw * base_ratio))
    converted = copy.deepcopy(model)
    scales = _level_scales(converted)
    for name, module in list(converted.named_modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, GlobalAvgPool):
                continue
            full = f"{name}.{child_name}" if name else child_name
            stage = next((k for k in scales if full.startswith(k + ".")), None)
            if stage is None:
                raise ValueError(f"cannot tell the resolution of {full}; TLC expects the U-Net layout")
            s = scales[stage]
            kernel = ((th // s) * base[0] // th, (tw // s) * base[1] // tw)
            setattr(module, child_name, LocalAvgPool(kernel))
    return converted
