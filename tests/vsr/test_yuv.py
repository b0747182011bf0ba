"""Luma models on the fast path: RGB frames (vs ``vsr.luma.LumaAsRGB``, the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.media import synthetic_image
from vsr.archs.student import RepStudent
from vsr.inference import upscale_frames
from vsr.kernel import StudentKernel
from vsr.luma import LumaAsRGB, rgb_to_luma
from vsr.runner import FrameRunner

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def luma_student(scale: int = 2) -> nn.Module:
    m = RepStudent(scale=scale, channels=8, depth=2, fused=True, colors=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return m.eval()


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int))


def test_luma_runner_matches_the_reference_wrapper() -> None:
    wrapped = LumaAsRGB(luma_student(), 2).eval()
    img = synthetic_image(np.random.default_rng(5), 20, 26)
    runner = FrameRunner(wrapped, scale=2, device=CPU, dtype="fp32")
    assert runner.luma and isinstance(runner.kernel, StudentKernel) and runner.kernel.channels == 1
    out = runner(img)
    ref = upscale_frames(wrapped, img, scale=2)
    assert out.shape == ref.shape == (40, 52, 3)
    # The kernel clamps the predicted Y to 0..255 before recombining; the wrapper clamps R, G, B after. They agree
    # wherever the predicted Y is a real luma value (this random student overshoots at a few pixels).
    with torch.no_grad():
        y = rgb_to_luma(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
        y_pred = wrapped.luma(y)[0, 0].numpy() * 255
    inside = (y_pred > 0.5) & (y_pred < 254.5)
    assert inside.mean() > 0.5  # the comparison covers most of the frame
    d = _diff(out, ref)[inside]
    assert d.max() <= 2 and d.mean() < 0.5  # Y is rounded to 8 bits on the way in (<= 0.5 level, x1.77 in B)
