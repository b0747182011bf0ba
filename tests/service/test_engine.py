"""The engine on a tiny artifact: batched == unbatched, tiling, warm-up, the CUDA-OOM fallback (simulated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from service.engine import Engine
from service.metrics import Metrics
from service.settings import Settings
from tests.support.media import rgb
from vsr.artifact import ArtifactError, load_artifact
from vsr.inference import upscale_frames


def load(tiny_artifact: dict[str, Path], **kw: object) -> Engine:
    settings = Settings(models=[str(tiny_artifact["x2"]), str(tiny_artifact["x4"])], **kw)  # type: ignore[arg-type]
    return Engine.load(settings, Metrics(CollectorRegistry()))


def test_loads_models_with_metadata(tiny_artifact: dict[str, Path]) -> None:
    engine = load(tiny_artifact, dtype="fp32")
    assert engine.names == ["x2", "x4"] and engine.default_model == "x2"
    assert engine.scale("x4") == 4
    d = engine.describe("x2")
    assert d["arch"] == "rep_student" and d["dtype"] == "fp32" and d["device"] == "cpu" and d["parameters"] > 0
    assert engine.metrics is not None
    labels = {"model": "x2", "arch": "rep_student", "scale": "2", "parameters": str(d["parameters"])}
    assert (
        engine.metrics.registry.get_sample_value(
            "vsr_model_info", {**labels, "dtype": "fp32", "runtime": "torch", "device": "cpu"}
        )
        == 1
    )


def test_warmup_sets_ready(tiny_artifact: dict[str, Path]) -> None:
    engine = load(tiny_artifact)
    assert not engine.ready
    engine.warmup()
    assert engine.ready
    assert engine.metrics is not None and engine.metrics.registry.get_sample_value("vsr_ready") == 1


def test_output_matches_the_inference_contract(tiny_artifact: dict[str, Path]) -> None:
    engine = load(tiny_artifact, dtype="fp32")
    frames = np.stack([rgb(seed=i) for i in range(3)])
    model, meta = load_artifact(tiny_artifact["x4"])
    expected = upscale_frames(model, frames, scale=4)
    out = engine.run("x4", frames)
    assert out.shape == (3, 96, 128, 3) and out.dtype == np.uint8
    d = np.abs(out.astype(int) - expected.astype(int))  # the fused uint8 kernel: float rounding at .5 ties only
    assert d.max() <= 1 and d.mean() < 0.01


@pytest.mark.parametrize("dtype", ["fp32", "auto"])
def test_batched_equals_unbatched(tiny_artifact: dict[str, Path], dtype: str) -> None:
    engine = load(tiny_artifact, dtype=dtype)
    frames = np.stack([rgb(seed=i) for i in range(4)])
    batched = engine.run("x2", frames)
    single = np.stack([engine.run("x2", f[None])[0] for f in frames])
    diff = np.abs(batched.astype(int) - single.astype(int))
    assert diff.max() <= 1, diff.max()  # fp rounding at most one level


def test_large_frames_are_tiled_like_untiled(tiny_artifact: dict[str, Path]) -> None:
    tiled = load(tiny_artifact, dtype="fp32", tile_size=40, tile_overlap=8)
    whole = load(tiny_artifact, dtype="fp32", tile_size=0)
    frame = rgb(70, 90, seed=3)[None]
    np.testing.assert_array_equal(tiled.run("x2", frame), whole.run("x2", frame))


def test_oom_splits_the_batch_then_tiles(tiny_artifact: dict[str, Path]) -> None:
    engine = load(tiny_artifact, dtype="fp32", tile_size=0)
    frames = np.stack([rgb(80, 140, seed=i) for i in range(4)])
    expected = engine.run("x2", frames)
    seen: list[tuple[int, ...]] = []

    def simulate_oom(model: str, batch: np.ndarray) -> None:
        seen.append(batch.shape)
        if len(batch) > 1 or len(seen) == 3:  # batches never fit; the first single frame fits only when tiled
            raise torch.cuda.OutOfMemoryError("simulated")

    engine.fault_hook = simulate_oom
    out = engine.run("x2", frames)
    np.testing.assert_array_equal(out, expected)
    assert seen[:3] == [(4, 80, 140, 3), (2, 80, 140, 3), (1, 80, 140, 3)]
    assert engine.metrics is not None
    assert engine.metrics.registry.get_sample_value("vsr_oom_retries_total") == 4  # 4, 2, 1 (then tiled), 2


def test_oom_gives_up_below_the_minimum_tile(tiny_artifact: dict[str, Path]) -> None:
    engine = load(tiny_artifact, dtype="fp32", tile_size=0)

    def always_oom(model: str, batch: np.ndarray) -> None:
        raise torch.cuda.OutOfMemoryError("simulated")

    engine.fault_hook = always_oom
    with pytest.raises(torch.cuda.OutOfMemoryError):
        engine.run("x2", rgb(seed=1)[None])


def test_duplicate_model_names_are_refused(tiny_artifact: dict[str, Path]) -> None:
    settings = Settings(models=[str(tiny_artifact["x2"]), str(tiny_artifact["x2"])])
    with pytest.raises(ArtifactError, match="two models"):
        Engine.load(settings)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_fp16_matches_cpu_fp32(tiny_artifact: dict[str, Path]) -> None:
    gpu = load(tiny_artifact, device="cuda")  # dtype auto -> fp16 weights
    assert gpu.dtype == torch.float16 and gpu.describe("x2")["dtype"] == "fp16"
    frames = np.stack([rgb(seed=i) for i in range(4)])
    out = gpu.run("x2", frames)
    ref = load(tiny_artifact, device="cpu", dtype="fp32").run("x2", frames)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2
    assert gpu.metrics is not None
    assert (gpu.metrics.registry.get_sample_value("vsr_gpu_memory_reserved_bytes") or 0) > 0
