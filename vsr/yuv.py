"""Luma models (artifact ``input_space: "y"``) on a torch kernel, for RGB frames (an OpenVINO kernel does this
colour work inside its graph: :func:`vsr.ov.rgb_around_luma`).

The contract is ``vsr.luma``'s: the model sees and predicts full-range BT.601
Y (JFIF, ``0.299 R + 0.587 G + 0.114 B``); chroma is upscaled bilinearly. Here Y runs through the uint8 kernel in
levels (rounded to uint8 on the way in: at most half a level, what a decoder's 8-bit plane holds anyway); the
colour matrices are ``vsr.luma``'s, applied in levels (they are linear, Cb/Cr centred on 0).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

from vsr.luma import rgb_to_ycbcr, ycbcr_to_rgb

LumaFn = Callable[[np.ndarray], np.ndarray]  # uint8 N x H x W x 1 -> uint8 N x sH x sW x 1


def bilinear(planes: torch.Tensor, scale: int) -> torch.Tensor:
    """float NCHW -> ``scale`` x larger, bilinear with half-pixel centres (as ``vsr.luma.LumaAsRGB``)."""
    return F.interpolate(planes, scale_factor=scale, mode="bilinear", align_corners=False)


def upscale_rgb_with_luma(luma: LumaFn, frames: np.ndarray, scale: int) -> np.ndarray:
    """RGB uint8 NHWC -> RGB uint8 NHWC: Y through ``luma`` (the kernel), Cb/Cr bilinear, back to RGB."""
    with torch.inference_mode():
        rgb = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        ycc = rgb_to_ycbcr(rgb)  # levels: Y in 0..255, Cb/Cr centred on 0
        y8 = ycc[:, :1].round().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()
        y_up = torch.from_numpy(luma(y8.numpy())).permute(0, 3, 1, 2).float()
        out = ycbcr_to_rgb(torch.cat([y_up, bilinear(ycc[:, 1:], scale)], dim=1))
        return out.clamp_(0, 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
