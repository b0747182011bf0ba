"""A batch on OpenVINO runs one frame per throughput stream (same pixels as one by one), and the cost the stream model
choice budgets with is a camera-sized measurement that a shape's first (compiling) call does not distort."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.env import perturbed_student
from tests.support.media import synthetic_image
from vsr.inference import upscale_frames
from vsr.runner import FrameRunner, RuntimeOptions

pytest.importorskip("openvino")
vov = pytest.importorskip("vsr.ov")
CPU = torch.device("cpu")


def _student(colors: int) -> nn.Module:
    return perturbed_student(colors)


def _kernel(model: nn.Module, tmp_path: Path, threads: int) -> Any:
    graph = vov.levels_model(model, int(getattr(model, "colors", 3)))
    if getattr(model, "colors", 3) == 1:
        graph = vov.rgb_around_luma(graph, 2)
    return vov.OvKernel(graph, scale=2, precision="fp32", threads=threads, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize("colors", [3, 1])
def test_a_batch_runs_frame_per_stream_with_the_same_pixels(tmp_path: Path, colors: int) -> None:
    m = _student(colors)
    frames = np.stack([synthetic_image(np.random.default_rng(s), 27, 38) for s in range(5)])  # odd count: 2+2+1
    k = _kernel(m, tmp_path, threads=2)
    assert k.streams == 2
    out = k(frames)
    assert list(k._parallel_reqs) == [(1, 27, 38, 3)]  # the throughput compile ran them, not the batch-5 request
    one_by_one = np.stack([k(f) for f in frames])
    assert out.shape == (5, 54, 76, 3) and out.dtype == np.uint8
    assert np.array_equal(out, one_by_one)  # every frame in its own place: no frame mixed up or overwritten
    if colors == 3:  # the luma graph against torch: tests/vsr/test_ov_luma.py
        ref = upscale_frames(m, frames, scale=2)
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2  # float order differs from torch
    assert len({f.tobytes() for f in out}) == 5


def test_one_thread_runs_a_batch_as_one_request(tmp_path: Path) -> None:
    k = _kernel(_student(3), tmp_path, threads=1)
    frames = np.stack([synthetic_image(np.random.default_rng(s), 16, 20) for s in range(3)])
    out = k(frames)
    assert k.streams == 0 and not k._parallel_reqs and out.shape == (3, 32, 40, 3)


def test_a_compiling_call_is_no_cost_sample_and_calibration_sets_the_cost(tmp_path: Path) -> None:
    runner = FrameRunner(
        _student(3), scale=2, device=CPU, options=RuntimeOptions(runtime="openvino", cache_dir=tmp_path)
    )
    assert runner.info.runtime == "openvino"
    runner.cost.ms_per_megapixel = 1e6  # a marker: any observed call moves it
    frame = synthetic_image(np.random.default_rng(0), 33, 47)
    runner(frame)  # first call at this shape: compiles
    assert runner.cost.ms_per_megapixel == 1e6 and runner.cost.calls == 0
    runner(frame)  # compiled already: a sample
    assert runner.cost.ms_per_megapixel < 1e6 and runner.cost.calls == 1
    ms = runner.calibrate_cost((40, 64))
    # the returned ms is rounded to 0.01 ms: on a fast CPU this tiny frame takes ~0.2 ms, where that is 2-3 %
    assert ms > 0 and runner.cost.frame_ms(40, 64) == pytest.approx(ms, rel=0.01, abs=0.006)


def test_warmup_calibrates_every_model_at_the_cost_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.env import export_tiny
    from vsr.engine import COST_SIZE, Engine

    arts = [export_tiny(_student(c), tmp_path / f"m{c}", name=f"m{c}") for c in (3, 1)]
    engine = Engine.open([str(a) for a in arts], device="cpu", dtype="fp32")
    seen: list[tuple[str, tuple[int, int], int]] = []
    for name in engine.models:
        runner = engine.runners[name]
        monkeypatch.setattr(
            runner, "calibrate_cost", lambda size, channels=3, n=name: seen.append((n, size, channels)) or 1.0
        )
    engine.warmup()
    # the luma model also on Y frames: the cost of a stream whose frames come as planes (vsr/planes.py)
    assert seen == [("m3", COST_SIZE, 3), ("m1", COST_SIZE, 3), ("m1", COST_SIZE, 1)]
