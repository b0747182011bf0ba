"""Image helpers shared by training, evaluation and the service. Frames are uint8 RGB HWC numpy arrays."""

from __future__ import annotations

import numpy as np
from PIL import Image


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def bicubic_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize uint8 HWC RGB to ``size`` = (width, height) with PIL's bicubic (antialiased when shrinking)."""
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC))


def downscale(hr: np.ndarray, scale: int) -> np.ndarray:
    """The field's LR: HR cropped to a multiple of ``scale``, then bicubic-downscaled."""
    hr = crop_to_multiple(hr, scale)
    h, w = hr.shape[:2]
    return bicubic_resize(hr, (w // scale, h // scale))


def upscale_bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = lr.shape[:2]
    return bicubic_resize(lr, (w * scale, h * scale))


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] as float64, from uint8 (or float in [0, 255]) RGB — MATLAB ``rgb2ycbcr``."""
    x = img.astype(np.float64)
    return 16.0 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255.0


def load_rgb(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))
