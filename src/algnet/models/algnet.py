"""ALGNet: aggregating local and global features with a selective state-space model.

Gao et al., "Learning Enriched Features via Selective State Spaces Model for Efficient Image
Deblurring", ACM MM 2024 (https://arxiv.org/abs/2405.20793). Follows the official code
(github.com/Tombs98/ALGNet, ``algnet.py``) so its checkpoints load (see :mod:`.checkpoint`),
except that the feature aggregation starts as the paper's ``F_G + W F_L`` with W = 1, and that
every output is cropped back to the input's size.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import (
    GlobalAvgPool, LayerNorm2d, SimpleGate, add_scaled_conv, conv_of_scaled, conv_without_bias, crop_to, glue_kernels, pad_to_multiple,
    unobserved,
)
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
        return conv_of_scaled(self.conv2, x, self.conv1(self.pool(x)))  # attention (B, C, 1, 1); per pixel under TLC


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
        folds = self._bias_folding(x)
        xs = self._spatial(x, folds)  # spatial features X^s
        kernels = self._glue(x, xs)
        y = self._fused_residual(x, xs, kernels, folds) if kernels is not None else x + self._aggregated(xs)
        return self._channel_mix(y, folds)  # y + beta * conv5(sg(conv4(norm2(y))))

    def _bias_folding(self, x: torch.Tensor):
        """The GPU glue kernels (block_triton) when they may take over the 1x1 convolutions' biases
        and the gates (inference, no hook on the modules skipped); else None."""
        if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in self.parameters())):
            return None
        kernels = glue_kernels(x)
        if kernels is None or not getattr(kernels, "FOLDS_CONV_BIAS", False):
            return None
        return kernels if unobserved(self.conv1, self.conv2, self.sg, self.conv4, self.conv5) else None

    def _spatial(self, x: torch.Tensor, folds) -> torch.Tensor:
        """``sg(conv2(conv1(norm1(x))))``; with ``folds``, conv1 without its bias, then the depthwise
        conv2 and the gate in one kernel that adds conv1's bias (:func:`algnet.ops.block_triton.dwconv3x3_gate`)."""
        if folds is None:
            return self.sg(self.conv2(self.conv1(self.norm1(x))))
        y = conv_without_bias(self.conv1, self.norm1(x))
        return folds.dwconv3x3_gate(y, self.conv2.weight, self.conv2.bias, pre_bias=self.conv1.bias)

    def _channel_mix(self, y: torch.Tensor, folds) -> torch.Tensor:
        """``y + beta * conv5(sg(conv4(norm2(y))))``, beta folded into conv5; with ``folds`` the biases
        are added by the gate and the residual kernels."""
        if folds is None:
            return add_scaled_conv(y, self.beta, self.conv5, self.sg(self.conv4(self.norm2(y))))
        h = folds.gate(conv_without_bias(self.conv4, self.norm2(y)), self.conv4.bias)
        out = conv_without_bias(self.conv5, h, self.beta).contiguous()
        return folds.add_bias_residual_(out, y, None if self.conv5.bias is None else self.conv5.bias * self.beta.reshape(-1))

    def _aggregated(self, xs: torch.Tensor) -> torch.Tensor:
        """F_A from the spatial features."""
        if self.g_layer is None:
            return self.l_layer(xs)
        if self.l_layer is None:
            return self.g_layer(xs)
        return self.aggregate(self.g_layer(xs), self.l_layer(xs))

    def _glue(self, x: torch.Tensor, xs: torch.Tensor):
        """The fused glue kernels (block_cpu or block_triton) for the paper's and the sum aggregation
        at inference, or None for the plain path."""
        if self.g_layer is None or self.l_layer is None or self.aggregation not in ("fa", "sum"):
            return None
        if not unobserved(self.g_layer, self.g_layer.norm, self.aggregate):  # the modules the fused path skips
            return None
        if torch.is_grad_enabled() and (x.requires_grad or xs.requires_grad or any(p.requires_grad for p in self.parameters())):
            return None
        kernels = glue_kernels(x)
        if kernels is None or glue_kernels(xs) is not kernels or x.device != xs.device:
            return None
        if x.device.type == "cpu" and (x.dtype != torch.float32 or xs.dtype != torch.float32):  # numba: float32 only
            return None
        return kernels

    def _fused_residual(self, x: torch.Tensor, xs: torch.Tensor, kernels, folds=None) -> torch.Tensor:
        """``x + F_A`` as :meth:`_aggregated` computes it, with the token LayerNorm and the aggregation
        each one pass that transposes on the fly (:mod:`algnet.ops.block_cpu`, :mod:`algnet.ops.block_triton`)."""
        norm = self.g_layer.norm
        # float32 tokens, as GlobalBranch's x.float() (the branch computes in float32 under autocast)
        tokens = kernels.layernorm_to_tokens(xs, norm.weight, norm.bias, norm.eps, out_dtype=torch.promote_types(xs.dtype, torch.float32))
        f_g = self.g_layer.mamba(tokens)  # (B, H*W, C)
        if isinstance(self.aggregate, FeatureAggregation):
            g, w = self.aggregate.g, self.aggregate.w
        else:
            g = w = torch.ones(x.shape[1], device=x.device)
        local = self.l_layer
        if folds is not None and unobserved(local, local.conv2):  # conv2's bias goes to the aggregation kernel
            f_l = conv_without_bias(local.conv2, xs, s=local.conv1(local.pool(xs)))
            return kernels.aggregate_residual(x, f_g, f_l, g, w, local_bias=local.conv2.bias)
        return kernels.aggregate_residual(x, f_g, self.l_layer(xs), g, w)


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
