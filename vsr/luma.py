"""Luma-only models (artifact ``input_space: "y"``): BT.601 studio-range Y through the model, chroma interpolated.

Contract (``/work/coord/notes/luma.md``, agreed with training): the model sees and predicts Y / 255 with
Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 (``vsr.imageops.rgb_to_y``), which is also what a decoder's
yuv420p (limited range) Y plane holds, so video can feed planes straight in. Chroma is upscaled bilinearly (~1-2 ms
per 720p output here, against ~20 ms for the model), then the frame goes back to RGB.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch.nn import functional as F

# BT.601 studio range (MATLAB rgb2ycbcr), RGB in levels 0..255.
RGB_TO_YCC = (
    torch.tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=torch.float64)
    / 255.0
)
YCC_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64)
YCC_TO_RGB = torch.linalg.inv(RGB_TO_YCC)

LumaFn = Callable[[np.ndarray], np.ndarray]  # uint8 N x H x W x 1 -> uint8 N x sH x sW x 1


def rgb_to_ycc(rgb: torch.Tensor) -> torch.Tensor:
    """uint8/float NHWC RGB -> float32 NHWC (Y, Cb, Cr) in levels."""
    m = RGB_TO_YCC.to(torch.float32)
    ycc: torch.Tensor = rgb.float() @ m.T + YCC_OFFSET.to(torch.float32)
    return ycc


def ycc_to_rgb(ycc: torch.Tensor) -> torch.Tensor:
    """float NHWC (Y, Cb, Cr) levels -> uint8 NHWC RGB, clamped and rounded."""
    m = YCC_TO_RGB.to(torch.float32)
    rgb: torch.Tensor = (ycc - YCC_OFFSET.to(torch.float32)) @ m.T
    return rgb.clamp_(0.0, 255.0).round_().to(torch.uint8)


def upscale_planes(planes: torch.Tensor, scale: int) -> torch.Tensor:
    """float NHWC planes -> ``scale`` x larger, bilinear (half-pixel centres, like FFmpeg's chroma upsampling)."""
    x = planes.permute(0, 3, 1, 2)
    y = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    return y.permute(0, 2, 3, 1)


def upscale_rgb_with_luma(luma: LumaFn, frames: np.ndarray, scale: int) -> np.ndarray:
    """RGB uint8 NHWC -> RGB uint8 NHWC through a luma model: Y by the model, Cb/Cr bilinear."""
    with torch.inference_mode():
        ycc = rgb_to_ycc(torch.from_numpy(np.ascontiguousarray(frames)))
        y = ycc[..., :1].round().clamp_(0, 255).to(torch.uint8).contiguous()
        y_up = torch.from_numpy(luma(y.numpy())).float()
        c_up = upscale_planes(ycc[..., 1:].contiguous(), scale)
        return ycc_to_rgb(torch.cat([y_up, c_up], dim=-1)).numpy()


def upscale_yuv420(
    luma: LumaFn, y: np.ndarray, u: np.ndarray, v: np.ndarray, scale: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One yuv420p frame's planes (H x W, H/2 x W/2, H/2 x W/2 uint8) -> the same, ``scale`` x larger. No RGB."""
    y_up = luma(np.ascontiguousarray(y)[None, :, :, None])[0, :, :, 0]
    with torch.inference_mode():
        uv = torch.from_numpy(np.stack([u, v], axis=-1)[None]).float()
        uv_up = upscale_planes(uv, scale).round_().clamp_(0, 255).to(torch.uint8)[0].numpy()
    return y_up, np.ascontiguousarray(uv_up[..., 0]), np.ascontiguousarray(uv_up[..., 1])
