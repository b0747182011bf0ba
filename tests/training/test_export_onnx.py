"""ONNX export with dynamic batch/H/W and parity against PyTorch (the reported value checked against a tolerance,
and the exported graph's output against the model's on an image)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.env import require_or_skip
from tests.support.media import rgb
from tests.support.reference import assert_model_output
from training.export import export_onnx
from vsr.artifact import load_artifact
from vsr_cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _have_onnx() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_onnx_parity(tmp_path: Path, tiny_artifact) -> None:
    require_or_skip(_have_onnx(), "onnx and onnxruntime (the [train] extra) are not installed")
    model, meta = load_artifact(tiny_artifact["x2"])
    report = export_onnx(model, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-4
    assert report["shape"] == [2, 3, 37 * meta.scale, 61 * meta.scale]  # a shape other than the traced one
    import onnx

    onnx.checker.check_model(str(tmp_path / "m.onnx"))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("rgb", [True, False])
def test_onnx_luma_model(tmp_path: Path, rgb: bool) -> None:
    """A luma artifact exports either RGB in/out (colour conversion and bilinear chroma inside the graph) or bare
    Y in/out; both match PyTorch."""
    require_or_skip(_have_onnx(), "onnx and onnxruntime (the [train] extra) are not installed")
    from tests.support.env import export_tiny
    from vsr.archs.student import RepStudent

    torch.manual_seed(0)
    student = RepStudent(scale=2, channels=8, depth=1, expand=0, colors=1)
    with torch.no_grad():
        for p in student.tail.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model, _ = load_artifact(export_tiny(student, tmp_path / "luma"), rgb=rgb)
    report = export_onnx(model, tmp_path / "m.onnx")
    assert report["max_abs_diff"] < 1e-4 and report["input_space"] == ("rgb" if rgb else "y")
    assert report["shape"] == [2, 3 if rgb else 1, 74, 122]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_vsr_export_onnx_cli_parity_and_the_exported_graph_is_the_model(tmp_path: Path, tiny_artifact, capsys) -> None:
    """The parity ``vsr export --onnx`` reports is within tolerance, and the file it wrote, loaded here with
    onnxruntime, gives the model's output (the plain forward pass on the artifact's weights) on an image."""
    require_or_skip(_have_onnx(), "onnx and onnxruntime (the [train] extra) are not installed")
    out = tmp_path / "x4.onnx"
    assert main(["export", "--model", str(tiny_artifact["x4"]), "--onnx", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["onnx"] == str(out) and printed["parity"]["max_abs_diff"] < 1e-4, printed
    import onnxruntime as ort

    lr = rgb(20, 28, seed=7)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = (lr.astype(np.float32) / 255.0).transpose(2, 0, 1)[None]
    (y,) = sess.run(["sr"], {"lr": x})
    sr = np.clip(np.rint(y[0].transpose(1, 2, 0) * 255.0), 0, 255).astype(np.uint8)
    assert_model_output(sr, lr, tiny_artifact["x4"])


def test_export_from_checkpoint(tmp_path: Path, capsys) -> None:
    """``vsr export --checkpoint`` turns a training checkpoint into a loadable artifact."""
    from training.config import TrainConfig
    from vsr.archs import build

    cfg = TrainConfig(name="ck", arch_config={"channels": 8, "depth": 1, "expand": 2}, alpha=1.0, ema=0)
    model = build(cfg.arch, cfg.arch_config)
    ck = {"config": cfg.to_dict(), "step": 7, "model": model.state_dict(), "ema": None}
    torch.save(ck, tmp_path / "checkpoint.pt")
    art = tmp_path / "art"
    assert main(["export", "--checkpoint", str(tmp_path / "checkpoint.pt"), "--out", str(art)]) == 0
    loaded, meta = load_artifact(art)
    assert meta.name == "ck" and meta.training["steps"] == 7 and meta.config["fused"] is True
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model.eval()(x), atol=1e-5, rtol=1e-5)
