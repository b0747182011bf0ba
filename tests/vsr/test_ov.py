"""OpenVINO as the CPU runtime: same pixels as torch, the choice measured, the disk cache used, int8 from the artifact."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.env import export_tiny
from tests.support.media import synthetic_image
from vsr.archs.student import RepStudent
from vsr.inference import upscale_frames
from vsr.runner import FrameRunner, RuntimeOptions, candidates, choose_runtime

ov = pytest.importorskip("openvino")
vov = pytest.importorskip("vsr.ov")

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


def _student(seed: int, colors: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    m = RepStudent(scale=2, channels=8, depth=2, expand=0, colors=colors)
    with torch.no_grad():  # the tail starts at zero (pure anchor): perturb everything so the body matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(int) - b.astype(int))


def _kernel(model: nn.Module, tmp_path: Path, precision: str = "fp32") -> Any:
    graph = vov.levels_model(model, int(getattr(model, "colors", 3)))
    return vov.OvKernel(graph, scale=2, precision=precision, threads=1, cache_dir=tmp_path / "cache")


def test_f32_equals_the_torch_reference_within_one_level(tmp_path: Path) -> None:
    m = _student(1)
    frames = np.stack([synthetic_image(np.random.default_rng(s), 29, 41) for s in range(2)])
    out = _kernel(m, tmp_path)(frames)
    ref = upscale_frames(m, frames, scale=2)
    assert out.shape == ref.shape == (2, 58, 82, 3) and out.dtype == np.uint8
    d = _diff(out, ref)
    assert d.max() <= 1 and d.mean() < 0.01
    assert _diff(out, upscale_frames(_student(2), frames, scale=2)).max() > 1  # guard: other weights differ


def test_luma_model_takes_and_gives_y(tmp_path: Path) -> None:
    m = _student(3, colors=1)
    y = np.random.default_rng(0).integers(0, 256, (1, 23, 31, 1), dtype=np.uint8)
    out = _kernel(m, tmp_path)(y)
    with torch.inference_mode():
        ref = m(torch.from_numpy(y).permute(0, 3, 1, 2).float() / 255).clamp(0, 1) * 255
    ref8 = ref.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert out.shape == (1, 46, 62, 1) and _diff(out, ref8).max() <= 1


def test_runner_on_openvino_matches_torch_on_rgb_frames_of_a_luma_model(tmp_path: Path) -> None:
    m = _student(4, colors=1)
    img = synthetic_image(np.random.default_rng(5), 20, 26)
    opts = RuntimeOptions("openvino", cache_dir=tmp_path)
    on_ov = FrameRunner(m, scale=2, device=CPU, dtype="fp32", options=opts)
    on_torch = FrameRunner(m, scale=2, device=CPU, dtype="fp32", options=RuntimeOptions("torch"))
    assert on_ov.info.runtime == "openvino" and on_torch.info.runtime == "torch"
    assert on_ov.kernel.channels == 3 and not on_ov.yuv and on_torch.yuv  # the colour work in the graph, or in torch
    # The graph rounds once (RGB at the end); vsr.yuv also rounds Y to 8 bits before and after the net: <= 2 levels
    d = _diff(on_ov(img), on_torch(img))
    assert d.max() <= 2 and d.mean() < 0.5


def test_kernels_built_from_one_graph_leave_it_as_it_was(tmp_path: Path) -> None:
    """The runner builds its f32 and bf16 candidates from one converted graph: the first must not rewire it."""
    graph = vov.levels_model(_student(1), 3)
    frames = np.stack([synthetic_image(np.random.default_rng(s), 13, 17) for s in range(2)])
    first = vov.OvKernel(graph, scale=2, precision="fp32", threads=1, cache_dir=tmp_path)(frames)
    assert graph.inputs[0].get_element_type() == ov.Type.f32 and str(graph.inputs[0].get_partial_shape()) == "[?,3,?,?]"
    assert np.array_equal(vov.OvKernel(graph, scale=2, precision="fp32", threads=1, cache_dir=tmp_path)(frames), first)


def test_compiled_models_go_to_the_cache_dir(tmp_path: Path) -> None:
    k = _kernel(_student(6), tmp_path)
    k(np.zeros((1, 16, 16, 3), np.uint8))
    assert any((tmp_path / "cache").iterdir()), "OpenVINO wrote no compiled blob to CACHE_DIR"
    k(np.zeros((1, 16, 20, 3), np.uint8))  # a second shape: its own compiled model
    assert len(k._compiled) == 2


@pytest.mark.parametrize("fast", ["openvino/fp32", "torch/fp32"])
def test_the_choice_is_measured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fast: str) -> None:
    """Fake timings (by the kernel being timed) decide; CPU flags do not."""

    def fake_time(fn: partial[Any], repeat: int = 3) -> float:
        k = fn.func
        key = (
            f"openvino/{k.precision}"
            if isinstance(k, vov.OvKernel)
            else f"torch/{k.dtype}".replace("torch.float32", "fp32").replace("torch.bfloat16", "bf16")
        )
        return 0.001 if key == fast else 0.01

    monkeypatch.setattr("vsr.runner.time_call", fake_time)
    kernel, info = choose_runtime(_student(7), scale=2, device=CPU, opts=RuntimeOptions(cache_dir=tmp_path))
    assert f"{info.runtime}/{info.precision}" == fast and info.ms == 1.0
    assert {"torch/fp32", "torch/bf16", "openvino/fp32", "openvino/bf16"} <= set(info.dtype_ms)
    assert "openvino/int8" not in info.dtype_ms  # no int8 IR in the artifact: never quantised here


def test_candidates() -> None:
    cuda = torch.device("cuda")
    assert candidates(cuda, "auto", RuntimeOptions()) == [("torch", "fp16")]
    assert candidates(CPU, "fp32", RuntimeOptions()) == [("torch", "fp32")]  # a named dtype keeps torch
    assert candidates(CPU, "fp32", RuntimeOptions("openvino")) == [("openvino", "fp32")]
    with_int8 = candidates(CPU, "auto", RuntimeOptions(int8=Path("m.xml")))
    assert ("openvino", "int8") in with_int8 and with_int8[0] == ("torch", "fp32")


def test_without_openvino_torch_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vsr.runner._ov_available", lambda: False)
    assert {rt for rt, _ in candidates(CPU, "auto", RuntimeOptions())} == {"torch"}
    assert candidates(CPU, "fp32", RuntimeOptions("openvino")) == [("torch", "fp32")]


# -- int8 ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def quantized(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A tiny luma artifact with an int8 variant made by ``vsr export``'s quantiser on synthetic training images."""
    pytest.importorskip("nncf")
    from PIL import Image

    from training.quantize import QuantizeConfig, quantize_artifact

    data = tmp_path / "data" / "imgs"
    data.mkdir(parents=True)
    for i in range(8):
        Image.fromarray(synthetic_image(np.random.default_rng(i), 160, 160)).save(data / f"img{i}.png")
    art = export_tiny(_student(8, colors=1), tmp_path / "tiny-y", data={"train": ["imgs"]})
    cfg = QuantizeConfig(calib_images=5, eval_images=3, lr_size=48, holdout=2)
    return art, quantize_artifact(art, tmp_path / "data", cfg)


def test_int8_variant_is_written_checked_and_close_to_fp32(quantized: tuple[Path, dict[str, Any]]) -> None:
    art, record = quantized
    meta = json.loads((art / "model.json").read_text())
    assert meta["int8"] == record and (art / "model_int8.xml").is_file() and (art / "model_int8.bin").is_file()
    assert record["used"] == (record["delta_db"] <= 0.05) and abs(record["fp32_psnr_y"] - record["psnr_y"]) < 1.0
    ir = vov.read_int8(art / "model_int8.xml")
    fq = [op for op in ir.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    readers = {t.get_node().get_type_name() for op in fq for t in op.output(0).get_target_inputs()}
    assert fq and readers == {"Convolution"}  # int8 at convolution inputs only: the output is never 8-bit rounded
    kernel = vov.OvKernel(ir, scale=2, precision="int8", threads=1)
    from training.quantize import model_input
    from vsr.artifact import load_artifact

    # a frame like the calibration ones (int8 ranges are calibrated: noise far outside them would saturate)
    y = model_input(synthetic_image(np.random.default_rng(99), 24, 32), True).astype(np.uint8).transpose(0, 2, 3, 1)
    model, _ = load_artifact(art, rgb=False)
    ref = _kernel(model, art)(y)
    d = _diff(kernel(y), ref)
    # int8 of a random 8-channel net calibrated on 13 frames: a few levels on nearly every pixel, not another picture
    assert d.mean() < 1.5 and np.percentile(d, 99) <= 6
    assert _diff(kernel(y), _kernel(_student(9, colors=1), art)(y)).mean() > 3  # guard: another net is far off


def test_int8_is_a_candidate_only_when_it_passed(quantized: tuple[Path, dict[str, Any]]) -> None:
    from vsr.artifact import ArtifactMeta, int8_ir
    from vsr.engine import Engine

    art, _ = quantized
    meta = ArtifactMeta.model_validate_json((art / "model.json").read_text())
    for used in (False, True):
        meta.int8 = {**(meta.int8 or {}), "used": used}
        (art / "model.json").write_text(meta.model_dump_json())
        assert (int8_ir(art, meta) is not None) == used
    engine = Engine.open([str(art)], device="cpu", dtype="int8")  # named: OpenVINO int8 from the IR
    d = engine.describe("tiny-y")
    assert (d["runtime"], d["precision"]) == ("openvino", "int8")
    assert engine.run("tiny-y", np.zeros((1, 8, 8, 3), np.uint8)).shape == (1, 16, 16, 3)
