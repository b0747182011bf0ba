"""A luma model's FrameRunner on Y frames (uint8 N x H x W x 1, a stream's decoder planes: ``vsr.planes``), on torch
and OpenVINO: the model's own Y (against the bare model in float), the Y of what the RGB path gives, RGB models
refusing Y, the Y frames' cost kept apart from the RGB frames', and OpenVINO's separate bare Y kernel."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.env import perturbed_student
from tests.support.media import synthetic_image
from vsr.luma import LumaAsRGB
from vsr.runner import FrameRunner, RuntimeOptions
from vsr.tiling import plan_grid

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")

_ov = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
RUNTIMES = ["torch", pytest.param("openvino", marks=_ov)]


def _student(colors: int) -> nn.Module:
    return perturbed_student(colors)


def _runner(model: nn.Module, runtime: str, tmp_path: Path) -> FrameRunner:
    opts = RuntimeOptions(runtime=runtime, cache_dir=tmp_path / "ov")
    runner = FrameRunner(model, scale=2, device=CPU, dtype="fp32", options=opts)
    assert (runner.info.runtime, runner.info.precision) == (runtime, "fp32")
    return runner


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Float JFIF Y of RGB levels."""
    f = rgb.astype(np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def _y8(rgb: np.ndarray) -> np.ndarray:
    """N x H x W x 1 uint8: the Y plane a BT.601 full-range decoder would hand out for these RGB frames."""
    return np.clip(np.rint(_luma(rgb)), 0, 255).astype(np.uint8)[..., None]


def _model_y(model: nn.Module, y8: np.ndarray) -> np.ndarray:
    """The bare model in float on ``y8 / 255``, in levels, clamped and rounded (``vsr.ov.LevelsNet``'s contract)."""
    with torch.no_grad():
        x = torch.from_numpy(y8).permute(0, 3, 1, 2).double() / 255
        y = copy.deepcopy(model).double()(x) * 255
    return y.clamp(0, 255).round().permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    # odd, non-square: the sub-pixel layout and edges on both axes
    return np.stack([synthetic_image(np.random.default_rng(s), 21, 27) for s in (3, 7)])


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_y_frames_give_the_models_y(runtime: str, rgb: np.ndarray, tmp_path: Path) -> None:
    model = _student(1)
    runner = _runner(LumaAsRGB(model, 2), runtime, tmp_path)
    y8 = _y8(rgb)
    out = runner(y8)
    assert out.shape == (2, 42, 54, 1) and out.dtype == np.uint8
    ref = _model_y(model, y8)
    # guard: the net's Y leaves 0..255 somewhere, so the clamp is exercised, and it is not the nearest upscale
    with torch.no_grad():
        raw = model(torch.from_numpy(y8).permute(0, 3, 1, 2).float() / 255) * 255
    assert raw.min() < -0.5
    assert np.abs(ref - y8.repeat(2, 1).repeat(2, 2)).mean() > 2
    # the same net in float32 (torch's folded kernel, OpenVINO's graph): summation order and halves rounded up
    # instead of to even differ, at most a level at a few pixels (measured: none here)
    d = np.abs(out.astype(np.float64) - ref)
    assert d.max() <= 1 and d.mean() < 0.01
    assert np.array_equal(runner(y8[1]), out[1])  # one H x W x 1 frame: as in the batch


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_y_frames_agree_with_the_rgb_paths_y(runtime: str, rgb: np.ndarray, tmp_path: Path) -> None:
    """The Y of the RGB path's output (float JFIF Y of its uint8 RGB) vs the Y path's output, on the same frames.

    torch (``vsr.yuv``): the RGB path rounds Y to 8 bits as ``_y8`` does, runs the same kernel, adds chroma and
    rounds RGB; the Y weights sum to 1, so RGB's rounding moves its Y by <= 0.5 (measured: 0.49); allowed 1.5, for a
    Y exactly on a half that float32 (there) and float64 (here) round apart, a level into the net. OpenVINO
    (``vsr.ov.rgb_around_luma``) rounds Y neither on the way in (<= 0.5 level into the net, about as much out of it)
    nor on the way out (<= 0.5), plus RGB's rounding: <= 1.5 (measured 1.40); allowed 2. Where the RGB path clipped
    a channel to 0 or 255 (the chroma pushed a saturated colour out of gamut, or the net's Y overshoots) its Y is not
    the net's, so those pixels (~6 % here) are left out."""
    runner = _runner(LumaAsRGB(_student(1), 2), runtime, tmp_path)
    out_y = runner(_y8(rgb))[..., 0].astype(np.float64)
    out_rgb = runner(rgb)
    assert out_rgb.shape == (2, 42, 54, 3)
    inside = ~((out_rgb == 0) | (out_rgb == 255)).any(axis=-1)
    assert inside.mean() > 0.9  # the comparison covers most of the frame
    d = np.abs(out_y - _luma(out_rgb))[inside]
    bound = {"torch": 1.5, "openvino": 2.0}[runtime]
    assert d.max() <= bound and d.mean() < 0.5  # measured: 0.16 torch, 0.37 OpenVINO


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_y_frames_tile_without_seams(runtime: str, tmp_path: Path) -> None:
    runner = _runner(LumaAsRGB(_student(1), 2), runtime, tmp_path)
    y8 = _y8(np.stack([synthetic_image(np.random.default_rng(s), 61, 83) for s in (1, 2)]))
    whole = runner(y8)
    budget = 52 * 52  # frames one at a time, each in 3 x 5 tiles with the default margin (> the net's field)
    assert (plan_grid(61, 83, budget=budget).rows, plan_grid(61, 83, budget=budget).cols) == (3, 5)
    tiled = runner(y8, pixel_budget=budget)
    assert tiled.shape == whole.shape == (2, 122, 166, 1)
    # the tiles hold the same pixels; torch's float order differs with the shape (oneDNN picks per shape), so a value
    # on a half may round apart: a level at a pixel (measured: 1 of 40504 on torch, none on OpenVINO)
    d = np.abs(tiled.astype(int) - whole.astype(int))
    assert d.max() <= 1 and (d > 0).mean() < 1e-3
    assert np.abs(tiled.astype(int) - runner(y8, pixel_budget=budget, overlap=0).astype(int)).max() > 2  # guard


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_an_rgb_model_refuses_y_frames(runtime: str, tmp_path: Path) -> None:
    runner = _runner(_student(3), runtime, tmp_path)
    assert not runner.luma
    with pytest.raises(ValueError, match="RGB"):
        runner(np.zeros((1, 8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        runner(np.zeros((8, 8, 1), np.uint8))
    with pytest.raises(ValueError, match="RGB"):
        _ = runner.y_kernel
    assert runner.costs[1].calls == 0 and runner.costs[3].calls == 0
    assert runner(np.zeros((1, 8, 8, 3), np.uint8)).shape == (1, 16, 16, 3)  # RGB as ever


def test_a_luma_runner_refuses_other_channel_counts(tmp_path: Path) -> None:
    runner = _runner(LumaAsRGB(_student(1), 2), "torch", tmp_path)
    with pytest.raises(ValueError, match="RGB frames or Y"):
        runner(np.zeros((1, 8, 8, 2), np.uint8))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_y_frames_have_their_own_cost(runtime: str, rgb: np.ndarray, tmp_path: Path) -> None:
    runner = _runner(LumaAsRGB(_student(1), 2), runtime, tmp_path)
    assert runner.cost is runner.costs[3]
    rgb_cost = runner.costs[3].ms_per_megapixel  # the probe's figure
    assert rgb_cost is not None and runner.costs[1].ms_per_megapixel is None
    y8 = _y8(rgb)
    runner(y8)
    # OpenVINO's first call at a shape compiles it (no cost sample: test_ov_parallel.py); torch's kernel has no compile
    first = 0 if runtime == "openvino" else 1
    assert runner.costs[1].calls == first
    runner(y8)
    assert runner.costs[1].calls == first + 1 and runner.costs[1].ms_per_megapixel is not None
    assert runner.costs[3].calls == 0 and runner.costs[3].ms_per_megapixel == rgb_cost  # RGB's figure untouched
    runner.costs[1].ms_per_megapixel = 1e6  # a marker: the calibration must replace it
    ms = runner.calibrate_cost((24, 32), channels=1)
    # the returned ms is rounded to 0.01 ms, a few % of this tiny frame's time
    assert 0 < ms < 1e3 and runner.costs[1].frame_ms(24, 32) == pytest.approx(ms, rel=0.01, abs=0.006)
    assert runner.costs[3].ms_per_megapixel == rgb_cost and runner.costs[3].calls == 0  # the RGB cost untouched


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_the_y_kernel(runtime: str, tmp_path: Path) -> None:
    """OpenVINO: a second kernel, the bare Y graph (1 channel in, no colour work) at the RGB kernel's precision;
    torch: the kernel itself, which takes Y (the RGB path puts ``vsr.yuv`` around it)."""
    runner = _runner(LumaAsRGB(_student(1), 2), runtime, tmp_path)
    y_kernel = runner.y_kernel
    assert y_kernel.channels == 1 and runner.y_kernel is y_kernel  # built once
    if runtime == "openvino":
        assert y_kernel is not runner.kernel and runner.kernel.channels == 3 and not runner.yuv
        assert (type(y_kernel).__name__, y_kernel.precision) == ("OvKernel", runner.kernel.precision)
    else:
        assert y_kernel is runner.kernel and runner.yuv


@_ov
def test_the_y_kernel_reuses_the_graph_of_the_runtime_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The float graph is converted once per model: for the runtime choice's candidates and the bare Y kernel."""
    from vsr import ov

    calls = []
    real = ov.levels_model
    monkeypatch.setattr(ov, "levels_model", lambda *a, **k: calls.append(1) or real(*a, **k))
    runner = _runner(LumaAsRGB(_student(1), 2), "openvino", tmp_path)
    assert runner.y_kernel is not runner.kernel and len(calls) == 1
    assert runner(np.zeros((1, 8, 8, 1), np.uint8)).shape == (1, 16, 16, 1)
