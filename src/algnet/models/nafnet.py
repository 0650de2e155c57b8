"""NAFNet, the paper's baseline (NAFNet-32 in tables 1 and 4).

Chen et al., "Simple Baselines for Image Restoration", ECCV 2022 (https://arxiv.org/abs/2204.04676);
parameter names follow the official ``NAFNet_arch.py`` so its released GoPro weights load.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers import GlobalAvgPool, LayerNorm2d, SimpleGate, crop_to, pad_to_multiple


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block: gated depthwise conv with channel attention, then FFN."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.norm1 = LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sg = SimpleGate()
        self.sca = nn.Sequential(GlobalAvgPool(), nn.Conv2d(c, c, 1))
        self.conv3 = nn.Conv2d(c, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        x = self.norm1(inp)
        x = self.conv1(x)
        x = self.conv2(x)
        x = self.sg(x)
        x = x * self.sca(x)
        x = self.conv3(x)
        y = inp + x * self.beta

        x = self.conv4(self.norm2(y))
        x = self.sg(x)
        x = self.conv5(x)
        return y + x * self.gamma


class NAFNet(nn.Module):
    """Single-scale U-Net of NAFBlocks; ``forward`` returns ``[restored]`` (one output)."""

    def __init__(
        self,
        width: int = 32,
        enc_blocks: tuple[int, ...] = (1, 1, 1, 28),
        mid_blocks: int = 1,
        dec_blocks: tuple[int, ...] = (1, 1, 1, 1),
        img_channels: int = 3,
    ):
        super().__init__()
        self.padder_size = 2 ** len(enc_blocks)
        self.intro = nn.Conv2d(img_channels, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channels, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = nn.ModuleList(), nn.ModuleList(), nn.ModuleList(), nn.ModuleList()
        chan = width
        for n in enc_blocks:
            self.encoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(chan) for _ in range(mid_blocks)])
        for n in dec_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(chan, 2 * chan, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(chan) for _ in range(n)]))

    def forward(self, inp: torch.Tensor) -> list[torch.Tensor]:
        h, w = inp.shape[-2:]
        inp = pad_to_multiple(inp, self.padder_size)
        x = self.intro(inp)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)
        return [crop_to(self.ending(x) + inp, h, w)]
