"""PSNR and SSIM on the Y channel (BT.601), the SR field's protocol: ``border`` pixels cropped on every side."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

from vsr.imageops import rgb_to_y


def _y_cropped(img: np.ndarray, border: int) -> np.ndarray:
    y = rgb_to_y(img)
    return y[border:-border, border:-border] if border else y


def psnr_y(sr: np.ndarray, hr: np.ndarray, *, border: int) -> float:
    """PSNR in dB between the Y channels of two uint8 RGB images of the same size."""
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch {sr.shape} vs {hr.shape}")
    mse = float(np.mean((_y_cropped(sr, border) - _y_cropped(hr, border)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """The 1-D Gaussian; SSIM's 11x11 window is its outer product, applied as two 1-D passes (~10x faster in fp64)."""
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """'valid' separable Gaussian filtering of every channel of N x C x H x W."""
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)


def ssim_y(sr: np.ndarray, hr: np.ndarray, *, border: int) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian, sigma 1.5, 'valid' filtering) between Y channels."""
    if sr.shape != hr.shape:
        raise ValueError(f"shape mismatch {sr.shape} vs {hr.shape}")
    a = torch.from_numpy(_y_cropped(sr, border))
    b = torch.from_numpy(_y_cropped(hr, border))
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b, aa, bb, ab = _blur(torch.stack([a, b, a * a, b * b, a * b])[None], _gaussian_window())[0]
    var_a = aa - mu_a**2
    var_b = bb - mu_b**2
    cov = ab - mu_a * mu_b
    num = (2 * mu_a * mu_b + c1) * (2 * cov + c2)
    den = (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    return float((num / den).mean())
