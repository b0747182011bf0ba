"""training.promote: a run's student replaces a bundled model only when it beats it on the held-out slice, and the
old model's int8 IR never stays beside the new weights."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.env import export_tiny
from tests.support.media import write_images
from tests.support.training import tiny_config, tiny_workdir
from training import promote
from training.run import train
from vsr.archs.student import RepStudent

pytestmark = pytest.mark.usefixtures("one_thread")


def test_promote_installs_only_a_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tiny_workdir(tmp_path)
    for name, seed in (("Set5", 2), ("Set14", 3)):
        write_images(root / "data" / "test" / name, 1, height=32, width=32, seed=seed)
    cfg = tiny_config(root)
    train(cfg, progress=False)
    run = cfg.run_dir
    bundled = tmp_path / "models"
    bad = RepStudent(scale=2, channels=8, depth=1, expand=0)  # far worse than anything trained: broken biases
    with torch.no_grad():
        bad.head.conv3.bias.fill_(5.0)
        bad.tail.conv3.bias.fill_(0.3)
    export_tiny(bad, bundled / "x2", name="x2")
    (bundled / "x2" / "model_int8.xml").write_text("<stale/>")
    monkeypatch.setattr(promote, "BUNDLED_DIR", bundled)
    monkeypatch.setattr("vsr.artifact.BUNDLED_DIR", bundled)
    monkeypatch.setattr(promote, "RESULTS", tmp_path / "promote.json")
    quantised: list[Path] = []

    def fake_quantize(folder: Path, data_root: Any) -> dict[str, Any]:  # NNCF is slow; its own tests cover it
        quantised.append(Path(folder))
        return {"used": False, "delta_db": None}

    monkeypatch.setattr("training.quantize.quantize_artifact", fake_quantize)
    assert promote.main(["--run", str(run), "--name", "x2", "--install"]) == 0
    res = json.loads((tmp_path / "promote.json").read_text())["x2"]
    assert res["wins"] and res["heldout_gain_db"] > 1.0 and "installed as x2" in res["verdict"]
    installed = bundled / "x2"
    assert (installed / "model.safetensors").read_bytes() == (run / "artifact" / "model.safetensors").read_bytes()
    assert not (installed / "model_int8.xml").exists() and quantised == [installed]
    meta = json.loads((installed / "model.json").read_text())
    assert (
        meta["name"] == "x2"
        and meta["int8"] is None
        and meta["scores"]["replaced"]["params"] == res["bundled"]["params"]
    )
    assert "beat the bundled model" in (installed / "MODEL_CARD.md").read_text()
    # now the bundled model is the run's own student: no gain, nothing installed, files untouched
    before = (installed / "model.json").read_text()
    assert promote.main(["--run", str(run), "--name", "x2", "--install"]) == 0
    res = json.loads((tmp_path / "promote.json").read_text())["x2"]
    assert not res["wins"] and "NOT installed" in res["verdict"] and (installed / "model.json").read_text() == before
    assert promote.main(["--run", str(tmp_path / "nowhere"), "--name", "x2"]) == 2
