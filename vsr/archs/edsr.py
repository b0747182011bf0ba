"""EDSR-style trainable teacher (Lim et al. 2017): residual blocks without BN, residual scaling, pixel shuffle."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResBlock(nn.Module):
    def __init__(self, *, channels: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res_scale * self.conv2(F.relu(self.conv1(x)))


class EDSR(nn.Module):
    """EDSR teacher.

    Args:
        scale: upscaling factor (2, 3 or 4).
        channels: feature width (64 = EDSR-baseline).
        blocks: residual blocks (16 = EDSR-baseline).
        res_scale: residual scaling (0.1 in the paper for wide nets; 1.0 for the baseline).
    """

    def __init__(self, *, scale: int = 2, channels: int = 64, blocks: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.ModuleList([ResBlock(channels=channels, res_scale=res_scale) for _ in range(blocks)])
        self.body_tail = nn.Conv2d(channels, channels, 3, padding=1)
        ups: list[nn.Module] = []
        if scale in (2, 4):
            for _ in range(scale // 2):
                ups += [nn.Conv2d(channels, channels * 4, 3, padding=1), nn.PixelShuffle(2)]
        else:
            ups += [nn.Conv2d(channels, channels * scale * scale, 3, padding=1), nn.PixelShuffle(scale)]
        self.upsample = nn.Sequential(*ups)
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.head(x - 0.5)]
        for blk in self.body:
            feats.append(blk(feats[-1]))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        h = self.body_tail(feats[-1]) + feats[0]
        return self.tail(self.upsample(h)) + 0.5
