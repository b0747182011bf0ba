"""The fast frame kernel and the runner: equal to the reference path within one level, tiling by pixels, luma."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.media import synthetic_image
from vsr.archs.student import RepStudent
from vsr.inference import upscale_frames
from vsr.kernel import ReferenceKernel, StudentKernel, fold_levels, student_layers
from vsr.runner import FrameRunner, choose_dtype
from vsr.tiling import TileGrid, plan_grid, run_tiled

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _perturbed(m: nn.Module, seed: int, amount: float = 0.05) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(amount * torch.randn(p.shape, generator=g))
    return m.eval()


@pytest.fixture(scope="module")
def student() -> RepStudent:
    torch.manual_seed(0)
    return _perturbed(RepStudent(scale=2, channels=8, depth=3, expand=2), 0).fuse()  # type: ignore[return-value]


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_kernel_matches_reference_within_one_level(scale: int) -> None:
    m = _perturbed(RepStudent(scale=scale, channels=8, depth=2, expand=1), scale).fuse()
    frames = np.stack([synthetic_image(np.random.default_rng(s), 19, 23) for s in range(3)])
    ref = upscale_frames(m, frames, scale=scale)
    out = StudentKernel(m, scale=scale, device=CPU, dtype=torch.float32)(frames)
    assert out.shape == ref.shape == (3, 19 * scale, 23 * scale, 3) and out.dtype == np.uint8
    d = _diff(out, ref)
    assert d.max() <= 1 and d.mean() < 0.01  # only float rounding at exact .5 ties differs
    assert np.array_equal(StudentKernel(m, scale=scale, device=CPU, dtype=torch.float32)(frames[1]), out[1])


def test_kernel_saturates_like_reference(student) -> None:
    """Clamping happens after the anchor: white and black frames stay white and black."""
    k = StudentKernel(student, scale=2, device=CPU, dtype=torch.float32)
    for level in (0, 255):
        frame = np.full((9, 11, 3), level, np.uint8)
        assert np.array_equal(k(frame), upscale_frames(student, frame, scale=2))


def test_unfused_student_gives_the_same_layers(student) -> None:
    torch.manual_seed(3)
    m = _perturbed(RepStudent(scale=2, channels=8, depth=2, expand=2), 3)
    layers = student_layers(m)
    img = synthetic_image(np.random.default_rng(2), 16, 16)
    assert layers is not None and len(layers) == 4
    assert (
        _diff(StudentKernel(m, scale=2, device=CPU, dtype=torch.float32)(img), upscale_frames(m, img, scale=2)).max()
        <= 1
    )


def test_fold_reorders_tail_for_the_shuffle() -> None:
    w = torch.arange(12, dtype=torch.float32).view(12, 1, 1, 1)
    layers = fold_levels([(torch.ones(1, 3, 1, 1), torch.zeros(1)), (w, torch.zeros(12))], 2)
    # channel (i, j, c) of the folded tail is channel (c, i, j) = c*4 + i*2 + j of the original, x255
    got = (layers[-1][0].view(-1) / 255).round().int().tolist()
    assert got == [c * 4 + i * 2 + j for i in range(2) for j in range(2) for c in range(3)]
    assert torch.allclose(layers[-1][1], torch.full((12,), 0.5))


def test_other_architectures_use_the_reference_path() -> None:
    from vsr.archs.edsr import EDSR

    m = EDSR(scale=2, channels=8, blocks=1).eval()
    assert student_layers(m) is None
    r = FrameRunner(m, scale=2, device=CPU, dtype="fp32")
    assert isinstance(r.kernel, ReferenceKernel)
    img = synthetic_image(np.random.default_rng(0), 10, 12)
    assert np.array_equal(r(img), upscale_frames(m, img, scale=2))


def test_plan_grid_by_pixels() -> None:
    assert plan_grid(360, 640, budget=1_050_000) == TileGrid(1, 1)  # a 640-wide frame is never split on CPU
    assert plan_grid(720, 1280, budget=1_050_000) == TileGrid(1, 1)
    g = plan_grid(1080, 1920, budget=1_050_000, overlap=16)
    assert g.tiled
    rows_h, cols_w = -(-1080 // g.rows) + 32, -(-1920 // g.cols) + 32
    assert rows_h * cols_w <= 1_050_000
    assert plan_grid(360, 640, budget=400_000, batch=4).rows * plan_grid(360, 640, budget=400_000, batch=4).cols > 1


@pytest.mark.parametrize("grid", [TileGrid(2, 3, 8), TileGrid(3, 2, 6), TileGrid(1, 4, 5)])
def test_tiled_equals_whole(student, grid: TileGrid) -> None:
    k = StudentKernel(student, scale=2, device=CPU, dtype=torch.float32)
    frames = np.stack([synthetic_image(np.random.default_rng(s), 37, 45) for s in range(2)])
    whole = k(frames)
    tiled = run_tiled(k, frames, grid, 2)
    assert _diff(tiled, whole).max() <= 1
    seams = run_tiled(k, frames, TileGrid(grid.rows, grid.cols, 0), 2)  # guard: without a margin, seams differ
    assert _diff(seams, whole).max() > 1


def test_runner_chunks_batches_and_tiles_by_budget(student) -> None:
    frames = np.stack([synthetic_image(np.random.default_rng(s), 30, 40) for s in range(5)])
    whole = FrameRunner(student, scale=2, device=CPU, dtype="fp32")(frames)
    small = FrameRunner(student, scale=2, device=CPU, dtype="fp32", pixel_budget=900)(frames)  # < one frame
    assert small.shape == whole.shape and _diff(small, whole).max() <= 1
    assert np.array_equal(FrameRunner(student, scale=2, device=CPU, dtype="fp32", pixel_budget=2500)(frames), whole)


def test_dtype_is_measured(student) -> None:
    dtype, times = choose_dtype(student, scale=2, device=CPU)
    assert set(times) == {"fp32", "bf16"} and times["fp32"] is not None and times["fp32"] > 0
    ok = {k: v for k, v in times.items() if v is not None}
    assert dtype == {"fp32": torch.float32, "bf16": torch.bfloat16}[min(ok, key=lambda k: ok[k])]


def test_bf16_kernel_close_to_fp32_reference(student) -> None:
    img = synthetic_image(np.random.default_rng(4), 24, 32)
    try:
        out = StudentKernel(student, scale=2, device=CPU, dtype=torch.bfloat16)(img)
    except RuntimeError as e:
        pytest.skip(f"no bf16 convolution on this CPU: {str(e).splitlines()[0]}")
    d = _diff(out, upscale_frames(student, img, scale=2))
    assert d.mean() < 0.5 and d.max() <= 3  # bf16 weights: the small residual is rounded, the anchor is exact


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("VSR_TEST_COMPILE") != "1", reason="torch.compile takes ~26 s: VSR_TEST_COMPILE=1")
def test_compiled_kernel_matches_eager(student) -> None:
    k = StudentKernel(student, scale=2, device=CPU, dtype=torch.float32)
    img = synthetic_image(np.random.default_rng(8), 24, 32)
    eager = k(img)
    k.try_compile(img)
    k._forward, k.compiled = torch.compile(k._fused_for_compile, dynamic=False), True  # force it, faster or not
    assert _diff(k(img), eager).max() <= 1
