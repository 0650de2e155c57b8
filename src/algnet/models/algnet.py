"""ALGNet: aggregating local and global features with a selective state-space model.

Gao et al., "Learning Enriched Features via Selective State Spaces Model for Efficient Image
Deblurring", ACM MM 2024 (https://arxiv.org/abs/2405.20793). Follows the official code
(github.com/Tombs98/ALGNet, ``algnet.py``) so its checkpoints load (see :mod:`.checkpoint`),
except that the feature aggregation starts as the paper's ``F_G + W F_L`` with W = 1, and that
every output is cropped back to the input's size. For fast inference convert a copy with
:func:`algnet.fuse`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import GlobalAvgPool, LayerNorm2d, SimpleGate, crop_to, pad_to_multiple
from .mamba import Mamba

AGGREGATIONS = ("fa", "sum", "concat", "global", "local")


class GlobalBranch(nn.Module):
    """CLGF's global branch: token LayerNorm and Mamba over the row-major flattened map."""

    def __init__(self, channels: int, d_state: int = 32, d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.mamba = Mamba(channels, d_state=d_state, d_conv=d_conv, expand=expand)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        with torch.autocast(x.device.type, enabled=False):  # float32: the scan diverges in half
            tokens = x.float().flatten(2).transpose(1, 2)  # (B, H*W, C)
            out = self.mamba(self.norm(tokens))  # (B, H*W, C)
        return out.transpose(1, 2).reshape(b, c, h, w)


class LocalBranch(nn.Module):
    """CLGF's local branch: simplified channel attention, then a 1x1 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.pool = GlobalAvgPool()
        self.conv1 = nn.Conv2d(channels, channels, 1)
        self.conv2 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(x * self.conv1(self.pool(x)))  # attention (B, C, 1, 1); per pixel under TLC


class FeatureAggregation(nn.Module):
    """FA: ``F_A = g * F_G + W * F_L`` with per-channel g and W, both initialised to 1.

    The paper learns W only (g = 1); g is kept so the official ``(inside_all + 1) * lamb_g``
    factor loads exactly. Neither adds computation beyond two channel scalings.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.w = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, f_global: torch.Tensor, f_local: torch.Tensor) -> torch.Tensor:
        return self.g * f_global + self.w * f_local


class SumAggregation(nn.Module):
    def forward(self, f_global: torch.Tensor, f_local: torch.Tensor) -> torch.Tensor:
        return f_global + f_local


class ConcatAggregation(nn.Module):
    """Table 5's concatenation: a 1x1 convolution over cat(F_G, F_L)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, f_global: torch.Tensor, f_local: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([f_global, f_local], dim=1))


class ALGBlock(nn.Module):
    """Aggregate Local and Global information block (official ``BasicBlock``).

    Args:
        channels: feature channels c.
        aggregation: "fa" (paper), "sum", "concat", "global" (CLGF without the local branch) or
            "local" (CLGF without the global branch).
        d_state: Mamba state size N.
    """

    def __init__(self, channels: int, aggregation: str = "fa", d_state: int = 32):
        super().__init__()
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        c = channels
        self.aggregation = aggregation
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sg = SimpleGate()
        self.g_layer = GlobalBranch(c, d_state) if aggregation != "local" else None
        self.l_layer = LocalBranch(c) if aggregation != "global" else None
        self.aggregate = {"fa": FeatureAggregation, "concat": ConcatAggregation}.get(aggregation, lambda c: SumAggregation())(c)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = self.sg(self.conv2(self.conv1(self.norm1(x))))  # spatial features X^s
        y = x + self._aggregated(xs)  # x + F_A
        return y + self.beta * self.conv5(self.sg(self.conv4(self.norm2(y))))

    def _aggregated(self, xs: torch.Tensor) -> torch.Tensor:
        """F_A from the spatial features."""
        if self.g_layer is None:
            return self.l_layer(xs)
        if self.l_layer is None:
            return self.g_layer(xs)
        return self.aggregate(self.g_layer(xs), self.l_layer(xs))


class BasicConv(nn.Module):
    """Convolution (+ GELU); official ``BasicConv`` with its ``main`` Sequential."""

    def __init__(self, cin: int, cout: int, kernel: int, gelu: bool = True):
        super().__init__()
        layers = [nn.Conv2d(cin, cout, kernel, padding=kernel // 2)] + ([nn.GELU()] if gelu else [])
        self.main = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class SFE(nn.Module):
    """Shallow feature extraction of a downscaled input (multi-input path)."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.main = nn.Sequential(
            BasicConv(3, c // 4, 3), BasicConv(c // 4, c // 2, 1), BasicConv(c // 2, c // 2, 3),
            BasicConv(c // 2, c, 1, gelu=False), nn.InstanceNorm2d(c, affine=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class FAM(nn.Module):
    """Merges encoder features with SFE features: 1x1 convolution over their concatenation."""

    def __init__(self, channels: int):
        super().__init__()
        self.merge = nn.Conv2d(2 * channels, channels, 1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.merge(torch.cat([x, z], dim=1))


class ALGNet(nn.Module):
    """Four-scale multi-input multi-output U-Net of ALGBlocks.

    ``forward(x)`` takes (B, 3, H, W) of any size and returns four images, coarsest first, of
    sizes ceil(H/s) x ceil(W/s) for s = 8, 4, 2, 1; the last is the restored image.

    Args:
        width: channels at full resolution (32 ALGNet, 64 ALGNet-B).
        enc_blocks: blocks per encoder level.
        mid_blocks: blocks at 1/16 resolution.
        dec_blocks: blocks per decoder level, coarsest first.
        aggregation: block aggregation, see :class:`ALGBlock`.
        d_state: Mamba state size.
    """

    def __init__(
        self,
        width: int = 32,
        enc_blocks: tuple[int, ...] = (2, 2, 4, 8),
        mid_blocks: int = 8,
        dec_blocks: tuple[int, ...] = (8, 4, 2, 2),
        aggregation: str = "fa",
        d_state: int = 32,
        img_channels: int = 3,
    ):
        super().__init__()
        if len(enc_blocks) != 4 or len(dec_blocks) != 4:
            raise ValueError("ALGNet has four encoder and four decoder levels")
        w = width
        self.padder_size = 16
        block = lambda c: ALGBlock(c, aggregation, d_state)  # noqa: E731
        self.intro = nn.Conv2d(img_channels, w, 3, padding=1)
        self.ending = nn.Conv2d(w, img_channels, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        chan = w
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[block(chan) for _ in range(n)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[block(chan) for _ in range(mid_blocks)])
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[block(chan) for _ in range(n)]))
        self.SFE2, self.SFE4, self.SFE8 = SFE(2 * w), SFE(4 * w), SFE(8 * w)
        self.FAM2, self.FAM4, self.FAM8 = FAM(2 * w), FAM(4 * w), FAM(8 * w)
        self.Convs = nn.ModuleList([nn.Conv2d(2 * c, c, 1) for c in (8 * w, 4 * w, 2 * w, w)])
        self.ConvsOut = nn.ModuleList([nn.Conv2d(c, img_channels, 3, padding=1) for c in (8 * w, 4 * w, 2 * w)])

    def forward(self, inp: torch.Tensor) -> list[torch.Tensor]:
        h, w = inp.shape[-2:]
        inp = pad_to_multiple(inp, self.padder_size)
        x2 = F.interpolate(inp, scale_factor=0.5)
        x4 = F.interpolate(x2, scale_factor=0.5)
        x8 = F.interpolate(x4, scale_factor=0.5)
        sfe = [self.SFE2(x2), self.SFE4(x4), self.SFE8(x8)]
        fams = [self.FAM2, self.FAM4, self.FAM8]

        x = self.intro(inp)
        skips = []
        for i, (encoder, down) in enumerate(zip(self.encoders, self.downs)):
            x = encoder(x)
            skips.append(x)
            x = down(x)
            if i < 3:
                x = fams[i](x, sfe[i])
        x = self.middle_blks(x)

        decs = []
        for decoder, up, merge, skip in zip(self.decoders, self.ups, self.Convs, skips[::-1]):
            x = decoder(merge(torch.cat([up(x), skip], dim=1)))
            decs.append(x)

        outs = [conv(d) + xs for conv, d, xs in zip(self.ConvsOut, decs, (x8, x4, x2))]
        outs.append(self.ending(x) + inp)
        return [crop_to(o, math.ceil(h / s), math.ceil(w / s)) for o, s in zip(outs, (8, 4, 2, 1))]
