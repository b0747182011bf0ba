"""Optional degradations for real camera footage, as plain functions of an explicit generator.

Each takes and returns a uint8 RGB HWC array; none touches global random state.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class DegradeConfig:
    """Probabilities and ranges of the camera degradations applied to LR crops (all off by default)."""

    blur_prob: float = 0.0
    blur_sigma: tuple[float, float] = (0.2, 1.5)
    noise_prob: float = 0.0
    noise_sigma: tuple[float, float] = (1.0, 10.0)  # in uint8 levels
    jpeg_prob: float = 0.0
    jpeg_quality: tuple[int, int] = (40, 95)

    @property
    def enabled(self) -> bool:
        return max(self.blur_prob, self.noise_prob, self.jpeg_prob) > 0


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius=sigma)))


def gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    noisy = img.astype(np.float32) + rng.normal(0.0, sigma, size=img.shape).astype(np.float32)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def jpeg(img: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def degrade(img: np.ndarray, cfg: DegradeConfig, rng: np.random.Generator) -> np.ndarray:
    """Blur -> noise -> JPEG, each with its probability (the order a camera applies them)."""
    if rng.random() < cfg.blur_prob:
        img = gaussian_blur(img, float(rng.uniform(*cfg.blur_sigma)))
    if rng.random() < cfg.noise_prob:
        img = gaussian_noise(img, float(rng.uniform(*cfg.noise_sigma)), rng)
    if rng.random() < cfg.jpeg_prob:
        img = jpeg(img, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return img
