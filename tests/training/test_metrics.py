"""PSNR-Y and SSIM-Y against values computed by hand and by an independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import psnr_y, ssim_y
from vsr.imageops import rgb_to_y


def _img(seed: int = 0, h: int = 32, w: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(20, 200, size=(h, w, 3), dtype=np.uint8)


def test_identical_images() -> None:
    a = _img()
    assert psnr_y(a, a, border=2) == math.inf
    assert ssim_y(a, a, border=2) == pytest.approx(1.0, abs=1e-12)


def test_rgb_to_y_is_bt601() -> None:
    assert rgb_to_y(np.array([0, 0, 0], np.uint8)) == pytest.approx(16.0)
    assert rgb_to_y(np.array([255, 255, 255], np.uint8)) == pytest.approx(235.0)


@pytest.mark.parametrize("k", [1, 5, 10])
def test_constant_offset_psnr(k: int) -> None:
    """Adding k to R, G and B shifts Y by k * 219/255 (the BT.601 coefficients sum to 219)."""
    a = _img()
    b = a + np.uint8(k)  # no overflow: values < 200
    dy = k * (65.481 + 128.553 + 24.966) / 255.0
    assert psnr_y(b, a, border=0) == pytest.approx(20 * math.log10(255.0 / dy), abs=1e-9)


def test_constant_offset_psnr_literal() -> None:
    # k = 10: dY = 2190/255 = 8.588235...; 20 log10(255 / 8.588235) = 29.4526 dB (worked out by hand)
    a = _img()
    assert psnr_y(a + np.uint8(10), a, border=4) == pytest.approx(29.4526, abs=1e-3)


def test_border_is_cropped() -> None:
    a = _img()
    b = a.copy()
    b[:3] = 0
    b[:, -3:] = 255
    assert psnr_y(b, a, border=3) == math.inf
    assert psnr_y(b, a, border=2) < 30


def _ssim_reference(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. 2004 written out directly: 11x11 Gaussian (sigma 1.5) windows, 'valid' positions, float64."""
    ax = np.arange(11) - 5.0
    g = np.exp(-(ax**2) / (2 * 1.5**2))
    win = np.outer(g, g) / np.outer(g, g).sum()
    wx = np.lib.stride_tricks.sliding_window_view(x, (11, 11))
    wy = np.lib.stride_tricks.sliding_window_view(y, (11, 11))
    mx, my = (wx * win).sum((-1, -2)), (wy * win).sum((-1, -2))
    vx = (wx * wx * win).sum((-1, -2)) - mx**2
    vy = (wy * wy * win).sum((-1, -2)) - my**2
    cxy = (wx * wy * win).sum((-1, -2)) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


def test_ssim_matches_independent_reference() -> None:
    a = _img(1)
    b = np.clip(a.astype(int) + np.random.default_rng(2).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ref = _ssim_reference(rgb_to_y(a)[2:-2, 2:-2], rgb_to_y(b)[2:-2, 2:-2])
    assert 0.0 < ref < 1.0
    assert ssim_y(a, b, border=2) == pytest.approx(ref, abs=1e-9)


def test_ssim_of_flat_images_closed_form() -> None:
    """Two flat images: variances and covariance vanish, SSIM = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1)."""
    a = np.full((20, 20, 3), 100, np.uint8)
    b = np.full((20, 20, 3), 120, np.uint8)
    ya, yb = 16 + 100 * 219 / 255, 16 + 120 * 219 / 255
    c1 = (0.01 * 255) ** 2
    expected = (2 * ya * yb + c1) / (ya**2 + yb**2 + c1)
    assert ssim_y(a, b, border=0) == pytest.approx(expected, abs=1e-9)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError):
        psnr_y(_img(h=10), _img(h=12), border=0)
    with pytest.raises(ValueError):
        ssim_y(_img(h=20), _img(h=22), border=0)
