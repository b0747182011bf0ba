"""The one tiler on a real model: the bundled, trained x2 and x4 students give the same pixels tiled as whole, on
both paths that tile (the frame runner every caller uses: engine, service, ``vsr upscale --tile``, CUDA; and the
reference path), within one level; without a margin they do not (so the tests really tile)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.media import synthetic_image
from vsr.artifact import load_artifact
from vsr.inference import upscale_frames
from vsr.runner import FrameRunner
from vsr.tiling import TileSpec, plan_grid

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
H, W = 90, 130  # LR; not a multiple of any tile: ragged edge tiles
BUDGET = 48 * 48  # LR pixels per call, margins included: a 3 x 5 grid at overlap 8 (on 90 x 130)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int))


@pytest.fixture(scope="module", params=["x2", "x4"])
def trained(request: pytest.FixtureRequest) -> tuple[torch.nn.Module, int]:
    model, meta = load_artifact(request.param)
    return model.eval(), meta.scale


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.stack([synthetic_image(np.random.default_rng(s), H, W) for s in (3, 4)])


def test_runner_tiled_equals_whole(trained: tuple[torch.nn.Module, int], frames: np.ndarray) -> None:
    model, scale = trained
    runner = FrameRunner(model, scale=scale, device=CPU, dtype="fp32")
    assert plan_grid(H, W, budget=BUDGET, overlap=8).tiled
    whole = runner(frames, pixel_budget=10**9)
    tiled = runner(frames, pixel_budget=BUDGET, overlap=8)
    assert tiled.shape == whole.shape == (2, H * scale, W * scale, 3)
    d = _diff(tiled, whole)
    assert d.max() <= 1 and d.mean() < 0.01, (d.max(), d.mean())  # float rounding at .5 ties only
    seams = runner(frames, pixel_budget=BUDGET, overlap=0)
    assert _diff(seams, whole).max() > 1  # guard: without a margin, the tile borders differ


def test_reference_path_tiled_equals_whole(trained: tuple[torch.nn.Module, int], frames: np.ndarray) -> None:
    model, scale = trained
    whole = upscale_frames(model, frames, scale=scale)
    tiled = upscale_frames(model, frames, scale=scale, tiles=TileSpec(tile=48, overlap=8))
    d = _diff(tiled, whole)
    assert d.max() <= 1 and d.mean() < 0.01, (d.max(), d.mean())
    seams = upscale_frames(model, frames, scale=scale, tiles=TileSpec(tile=48, overlap=0))
    assert _diff(seams, whole).max() > 1
