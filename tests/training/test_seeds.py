"""training.seeds on a tiny lock-step run: per-seed rows, mean ± std, and the install rule (only a model that beats
the bundled one on the held-out slice replaces it)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tests.support.env import export_tiny
from tests.support.media import write_images
from tests.support.training import tiny_teacher
from training import seeds as seeds_mod
from training.config import TrainConfig
from training.lockstep import train_lockstep
from vsr.archs.student import RepStudent

pytestmark = pytest.mark.usefixtures("one_thread")


def test_seeds_block_and_install_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "data"
    write_images(data / "train" / "A", 4, height=48, width=48, seed=0)
    write_images(data / "val" / "V", 2, height=32, width=32, seed=1)
    for name, seed in (("Set5", 2), ("Set14", 3)):
        write_images(data / "test" / name, 1, height=32, width=32, seed=seed)
    tiny_teacher(tmp_path / "teacher")
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(
        name="abl", scale=2, arch_config={"channels": 8, "depth": 1, "expand": 1, "colors": 1}, data_root=str(data),
        train_sets=["train/A"], val_sets=["val/V"], teachers=[str(tmp_path / "teacher")], alpha=0.5, steps=4,
        batch=4, patch=12, warmup=0, ema=0.0, device="cpu", amp="off", out_dir=str(tmp_path / "runs"), pool=32,
        eval_every=4, ckpt_every=4,
    )  # fmt: skip
    variants = {
        "kd": {},
        "nokd": {"alpha": 1.0, "zoomout": 0},
        "rgbkd": {"_seeds": [0], "arch_config": {"channels": 8, "depth": 1, "expand": 1}},
    }
    train_lockstep(cfg, [0, 1], variants, progress=False)
    # a bundled "x2" that is far worse than anything trained (a zero-initialised tail and a broken head bias)
    bundled = tmp_path / "models"
    bad = RepStudent(scale=2, channels=8, depth=1, expand=0)
    with torch.no_grad():
        bad.head.conv3.bias.fill_(5.0)
        bad.tail.conv3.bias.fill_(0.3)
    export_tiny(bad, bundled / "x2", name="x2")
    monkeypatch.setattr(seeds_mod, "BUNDLED_DIR", bundled)
    monkeypatch.setattr("vsr.artifact.BUNDLED_DIR", bundled)
    monkeypatch.setattr(seeds_mod, "RESULTS", tmp_path / "kd_ablation.json")
    (tmp_path / "kd_ablation.json").write_text(json.dumps({"x2": {"rows": {"keep": 1}}}))
    assert seeds_mod.main(["--scale", "2", "--run", str(tmp_path / "runs" / "abl"), "--install", "x2"]) == 0
    res = json.loads((tmp_path / "kd_ablation.json").read_text())["x2"]
    assert res["rows"] == {"keep": 1}  # existing rows kept
    block = res["seeds"]
    assert block["seeds"] == [0, 1] and len(block["kd"]) == len(block["no_kd"]) == 2
    assert block["kd_stats"]["n"] == 2 and block["kd_stats"]["std"] >= 0
    assert "installed as x2" in block["install"]
    meta = json.loads((bundled / "x2" / "model.json").read_text())
    assert meta["input_space"] == "y" and meta["scores"]["chosen_by"].startswith("held-out")
    card = (bundled / "x2" / "MODEL_CARD.md").read_text()
    assert "KD ablation over seeds" in card and "`rgbkd-s0`" in card
    assert set(block["other_variants"]["scores"]) == {"rgbkd-s0"}
    # now the bundled model is the best seed itself: nothing beats it, so nothing is installed
    before = (bundled / "x2" / "model.safetensors").read_bytes()
    shutil.copy(tmp_path / "kd_ablation.json", tmp_path / "first.json")
    assert seeds_mod.main(["--scale", "2", "--run", str(tmp_path / "runs" / "abl"), "--install", "x2"]) == 0
    verdict = json.loads((tmp_path / "kd_ablation.json").read_text())["x2"]["seeds"]["install"]
    assert "NOT installed" in verdict and (bundled / "x2" / "model.safetensors").read_bytes() == before


def test_a_later_arm_is_paired_with_each_seeds_twins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``--arm``: every student of a later run of the same base recipe, minus the KD and no-KD twins of its seed."""
    run = tmp_path / "arm"
    for s in (0, 1):
        (run / f"kdnz-s{s}" / "artifact").mkdir(parents=True)
    recipe = {"name": "a", "data_root": "d", "steps": 10}
    (run / "config.json").write_text(
        json.dumps({"base": recipe | {"name": "b"}, "seeds": [0, 1], "variants": {"kdnz": {"zoomout": 0}}})
    )
    fake = {0: (37.0, 31.0), 1: (37.5, 31.2)}  # seed -> (Set5, held-out) of the arm's student

    def score(d: Path, *_: object) -> dict:
        s5, held = fake[int(d.parent.name.rsplit("-s", 1)[1])]
        return {"sets": {"Set5": {"psnr_y": s5}, "Set14": {"psnr_y": 0.0}}, "heldout": {"heldout": {"psnr_y": held}}}

    monkeypatch.setattr(seeds_mod, "score", score)
    block = {"seeds": [0, 1], "recipe": recipe, "kd": [37.1, 37.4], "no_kd": [36.9, 37.2]}
    block["heldout"] = {"kd": [31.1, 31.1], "no_kd": [30.9, 31.0]}
    arm = seeds_mod.arm_block(run, block, 2, None)["kdnz"]
    assert arm["set5_minus_kd"]["mean"] == pytest.approx(0.0)  # (-0.1 + 0.1) / 2
    assert arm["set5_minus_no_kd"]["mean"] == pytest.approx(0.2)  # (0.1 + 0.3) / 2
    assert arm["heldout_minus_no_kd"]["mean"] == pytest.approx(0.15)  # (0.1 + 0.2) / 2
    (run / "config.json").write_text(json.dumps({"base": recipe | {"steps": 20}, "seeds": [0], "variants": {}}))
    with pytest.raises(SystemExit, match="another base recipe"):
        seeds_mod.arm_block(run, block, 2, None)
    # another teacher is an arm of its own: keyed by its run, the teacher recorded, paired the same way
    teacher = {"teachers": ["DCTLSA_x2.pt"]}
    (run / "config.json").write_text(
        json.dumps({"base": recipe | teacher, "seeds": [0, 1], "variants": {"kdnz": {"zoomout": 0}}})
    )
    other = seeds_mod.arm_block(run, block, 2, None)
    assert list(other) == ["kdnz (arm)"] and other["kdnz (arm)"]["overrides"]["base"] == teacher
    assert other["kdnz (arm)"]["set5_minus_no_kd"]["mean"] == pytest.approx(0.2)
    (run / "config.json").write_text(
        json.dumps({"base": recipe | teacher | {"steps": 20}, "seeds": [0], "variants": {}})
    )
    with pytest.raises(SystemExit, match="steps"):
        seeds_mod.arm_block(run, block, 2, None)
