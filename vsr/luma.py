"""Luma models: students that see and predict only Y (BT.601), and the colour math around them.

The contract: a luma artifact declares ``input_space = "y"``; its model takes
N1hw full-range BT.601 luma in [0, 1] (``Y = 0.299 R + 0.587 G + 0.114 B``, the JFIF definition; a decoder's
limited-range Y maps as ``(Y - 16) / 219``) and returns N1HW luma ``scale`` times larger, unclamped. Chroma is not
modelled: Cb/Cr are upscaled by bilinear interpolation (cheap: ~2x less work than the RGB model's 12-channel tail) and
recombined. :class:`LumaAsRGB` wraps such a model so that any RGB-in/RGB-out caller runs it unchanged.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

# Full-range BT.601 (JFIF): rows Y, Cb, Cr. Cb/Cr are centred at 0 here (no +0.5 offset), which keeps the inverse
# a pure matrix; the offset cancels in the round trip.
_RGB2YCC = torch.tensor(
    [
        [0.299, 0.587, 0.114],
        [-0.168735892, -0.331264108, 0.5],
        [0.5, -0.418687589, -0.081312411],
    ]
)
_YCC2RGB = torch.linalg.inv(_RGB2YCC)


def _mix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply a 3x3 colour matrix to NCHW ``x`` (as a 1x1 conv: stays in x's dtype and memory format)."""
    return F.conv2d(x, m.to(x.device, x.dtype).view(3, 3, 1, 1))


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB NCHW in [0, 1] -> Y in [0, 1], Cb/Cr centred on 0 (in [-0.5, 0.5])."""
    return _mix(x, _RGB2YCC)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    return _mix(x, _YCC2RGB)


def rgb_to_luma(x: torch.Tensor) -> torch.Tensor:
    """RGB NCHW in [0, 1] -> N1HW full-range BT.601 Y in [0, 1]."""
    return F.conv2d(x, _RGB2YCC[:1].to(x.device, x.dtype).view(1, 3, 1, 1))


class LumaAsRGB(nn.Module):
    """Run a luma model on RGB: Y through ``model``, Cb/Cr bilinearly upscaled, back to RGB (unclamped).

    Exposes ``scale``, ``colors`` (3) and ``luma`` (the wrapped model) so callers that inspect a model still work.
    """

    def __init__(self, luma: nn.Module, scale: int) -> None:
        super().__init__()
        self.luma = luma
        self.scale = scale
        self.colors = 3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ycc = rgb_to_ycbcr(x)
        y = self.luma(ycc[:, :1])
        cc = F.interpolate(ycc[:, 1:], scale_factor=self.scale, mode="bilinear", align_corners=False)
        return ycbcr_to_rgb(torch.cat([y, cc], dim=1))

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.luma.forward_features(rgb_to_luma(x))  # type: ignore[operator, no-any-return]


def input_space(model: nn.Module) -> Literal["rgb", "y"]:
    """``"y"`` for a model that takes one (luma) channel, else ``"rgb"``."""
    return "y" if int(getattr(model, "colors", 3)) == 1 else "rgb"
