"""RLFN (Kong et al., "Residual Local Feature Network", NTIRE 2022 ESR) written for the bytedance/RLFN weights.

Hyper-parameters are derived from the state dict's shapes (:func:`rlfn_config_from_state`) so a checkpoint cannot
disagree with its config. The published weights take RGB in [0, 255]; :class:`RLFN` takes [0, 1] like every model
here and rescales internally when ``rgb_range=255``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ESA(nn.Module):
    """Enhanced spatial attention: a cheap large-receptive-field gate over the features."""

    def __init__(self, *, channels: int, esa_channels: int = 16) -> None:
        super().__init__()
        f = esa_channels
        self.conv1 = nn.Conv2d(channels, f, 1)
        self.conv_f = nn.Conv2d(f, f, 1)
        self.conv2 = nn.Conv2d(f, f, 3, stride=2, padding=0)
        self.conv3 = nn.Conv2d(f, f, 3, padding=1)
        self.conv4 = nn.Conv2d(f, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1_ = self.conv1(x)
        c1 = self.conv2(c1_)
        v = F.max_pool2d(c1, kernel_size=7, stride=3)
        c3 = F.interpolate(self.conv3(v), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.conv4(c3 + self.conv_f(c1_)))


class RLFB(nn.Module):
    """Residual local feature block: 3 x (conv3x3 + LeakyReLU 0.05) + residual, 1x1, ESA."""

    def __init__(self, *, channels: int, mid_channels: int, esa_channels: int = 16) -> None:
        super().__init__()
        self.c1_r = nn.Conv2d(channels, mid_channels, 3, padding=1)
        self.c2_r = nn.Conv2d(mid_channels, mid_channels, 3, padding=1)
        self.c3_r = nn.Conv2d(mid_channels, channels, 3, padding=1)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(channels=channels, esa_channels=esa_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.c1_r(x), 0.05)
        out = F.leaky_relu(self.c2_r(out), 0.05)
        out = F.leaky_relu(self.c3_r(out), 0.05)
        return self.esa(self.c5(out + x))


class RLFN(nn.Module):
    """RLFN / RLFN-S.

    Args:
        scale: upscaling factor.
        channels: feature width (52 for RLFN, 48 for RLFN-S).
        mid_channels: width inside each block.
        esa_channels: width of the attention branch.
        blocks: number of RLFBs (6 in the paper).
        rgb_range: value range the weights expect (255 for the published weights).
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        channels: int = 52,
        mid_channels: int = 52,
        esa_channels: int = 16,
        blocks: int = 6,
        rgb_range: float = 255.0,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.rgb_range = rgb_range
        self.conv_1 = nn.Conv2d(3, channels, 3, padding=1)
        for i in range(1, blocks + 1):
            blk = RLFB(channels=channels, mid_channels=mid_channels, esa_channels=esa_channels)
            self.add_module(f"block_{i}", blk)
        self.blocks = blocks
        self.conv_2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features after the first conv and after each block (for feature distillation)."""
        feats = [self.conv_1(x * self.rgb_range)]
        for i in range(1, self.blocks + 1):
            feats.append(getattr(self, f"block_{i}")(feats[-1]))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.forward_features(x)
        out = self.upsampler(self.conv_2(feats[-1]) + feats[0])
        return out / self.rgb_range


def rlfn_config_from_state(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Derive RLFN hyper-parameters from weight shapes."""
    channels = state["conv_1.weight"].shape[0]
    up = state["upsampler.0.weight"].shape[0]
    scale = round((up / 3) ** 0.5)
    blocks = len({k.split(".")[0] for k in state if k.startswith("block_")})
    return {
        "scale": scale,
        "channels": channels,
        "mid_channels": state["block_1.c1_r.weight"].shape[0],
        "esa_channels": state["block_1.esa.conv1.weight"].shape[0],
        "blocks": blocks,
    }
