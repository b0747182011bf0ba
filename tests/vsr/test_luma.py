"""The luma path: BT.601 conversions invert each other, a luma model run on RGB keeps colour, and a luma artifact
declares its input space and loads as an RGB-in/RGB-out model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vsr.archs.student import RepStudent
from vsr.luma import LumaAsRGB, input_space, rgb_to_luma, rgb_to_ycbcr, ycbcr_to_rgb

pytestmark = pytest.mark.usefixtures("one_thread")


def test_ycbcr_round_trip_and_luma_weights() -> None:
    x = torch.rand(2, 3, 5, 7)
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)), x, atol=1e-5, rtol=1e-5)
    grey = torch.full((1, 3, 2, 2), 0.4)
    torch.testing.assert_close(rgb_to_ycbcr(grey)[:, 0:1], torch.full((1, 1, 2, 2), 0.4))
    torch.testing.assert_close(rgb_to_ycbcr(grey)[:, 1:], torch.zeros(1, 2, 2, 2), atol=1e-6, rtol=0)
    red = torch.zeros(1, 3, 1, 1)
    red[:, 0] = 1.0
    assert float(rgb_to_luma(red)) == pytest.approx(0.299)


def test_luma_model_round_trips_colour() -> None:
    """A fresh luma student is nearest-neighbour on Y; with bilinear chroma, a smooth colour image comes back with
    its colours (hue kept, not grey), and flat colour patches exactly."""
    model = RepStudent(scale=2, channels=8, depth=1, colors=1).eval()
    wrapped = LumaAsRGB(model, scale=2).eval()
    flat = torch.tensor([0.8, 0.3, 0.1]).view(1, 3, 1, 1).expand(1, 3, 6, 8).contiguous()
    with torch.no_grad():
        out = wrapped(flat)
    assert tuple(out.shape) == (1, 3, 12, 16)
    torch.testing.assert_close(out, flat.repeat_interleave(2, 2).repeat_interleave(2, 3), atol=1e-5, rtol=0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 16), torch.linspace(0, 1, 16), indexing="ij")
    smooth = torch.stack([0.2 + 0.6 * xx, 0.5 + 0.3 * yy, 0.7 - 0.5 * xx * yy])[None]
    with torch.no_grad():
        up = wrapped(smooth)
    ref = torch.nn.functional.interpolate(smooth, scale_factor=2, mode="bilinear", align_corners=False)
    assert float((up - ref).abs().mean()) < 0.02  # colours kept: only luma detail differs (nearest vs bilinear)


def test_luma_artifact_declares_its_input_space(tmp_path: Path) -> None:
    from tests.support.env import export_tiny
    from vsr.artifact import load_artifact
    from vsr.inference import upscale_frames

    model = RepStudent(scale=2, channels=8, depth=1, expand=0, colors=1)
    assert input_space(model) == "y" and input_space(RepStudent(channels=8, depth=1)) == "rgb"
    folder = export_tiny(model, tmp_path / "luma")
    loaded, meta = load_artifact(folder)
    assert meta.input_space == "y" and meta.config["colors"] == 1
    raw, _ = load_artifact(folder, rgb=False)
    assert input_space(raw) == "y"
    frame = np.random.default_rng(0).integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    out = upscale_frames(loaded, frame, scale=2)  # RGB in, RGB out through the shared path
    assert out.shape == (12, 16, 3) and out.dtype == np.uint8
