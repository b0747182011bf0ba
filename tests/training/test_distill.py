"""A few distillation steps on synthetic images lower the loss; checkpoints resume; ``train`` runs end to end.

Everything is tiny: 48x48 HR images, a RepStudent(channels=8, depth=1) and a frozen EDSR(channels=8, blocks=1)
teacher exported as an artifact (teachers are passed as paths, like on the command line).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import export_tiny, write_images
from training.config import TrainConfig
from training.data import sample_batch
from training.loop import build_state, checkpoint, load_teachers, prepare_data, restore, train_step
from training.losses import kd_loss
from vsr.archs.edsr import EDSR
from vsr.engine import pick_device

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with train/val images and a teacher artifact; cwd moved there (soft targets cache to ./.cache)."""
    write_images(tmp_path / "data" / "train" / "A", 4, height=48, width=48, seed=0)
    write_images(tmp_path / "data" / "test" / "V", 1, height=32, width=32, seed=1)
    torch.manual_seed(0)
    export_tiny(
        EDSR(scale=2, channels=8, blocks=1),
        tmp_path / "teacher",
        arch="edsr",
        config={"scale": 2, "channels": 8, "blocks": 1},
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _cfg(root: Path, **kw) -> TrainConfig:
    base = dict(
        name="tiny",
        scale=2,
        arch_config={"channels": 8, "depth": 1, "expand": 2},
        data_root=str(root / "data"),
        train_sets=["train/A"],
        val_sets=["test/V"],
        teachers=[str(root / "teacher")],
        alpha=0.5,
        steps=20,
        batch=8,
        patch=12,
        lr=5e-3,
        warmup=0,
        ema=0.0,
        device="cpu",
        amp="off",
        out_dir=str(root / "runs"),
    )
    return TrainConfig(**(base | kw))


def test_few_steps_lower_the_loss(workdir: Path) -> None:
    cfg = _cfg(workdir)
    device = pick_device(cfg.device)
    teachers, weights, descs = load_teachers(cfg, device)
    assert descs[0]["arch"] == "edsr" and not any(p.requires_grad for p in teachers[0].parameters())
    pairs = prepare_data(cfg, device, teachers, weights, descs)
    assert all(p.soft is not None and p.soft.shape == p.hr.shape for p in pairs)
    assert list((workdir / ".cache" / "x2").glob("soft-*.npz"))  # teacher outputs cached once

    state = build_state(cfg, device, None)
    # A fresh student is exactly nearest-neighbour upsampling (zero tail), already near the optimum on these
    # synthetic images; start it off that point so a handful of steps has something measurable to learn.
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for prm in state.model.tail.parameters():
            prm.add_(0.05 * torch.randn(prm.shape, generator=gen))
    probe = sample_batch(pairs, scale=2, batch=16, patch=12, rng=np.random.default_rng(123))

    def probe_loss() -> float:
        with torch.no_grad():
            return float(kd_loss(state.model(probe.lr), probe.hr, probe.soft, alpha=cfg.alpha)[0])

    before = probe_loss()
    teacher_before = [p.detach().clone() for p in teachers[0].parameters()]
    parts = [train_step(state, cfg, pairs, device, None) for _ in range(cfg.steps)]
    after = probe_loss()
    assert state.step == cfg.steps
    assert {"hard", "soft", "loss"} <= set(parts[-1])
    assert after < 0.9 * before, (before, after)
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teachers[0].parameters(), strict=True))  # frozen


def test_checkpoint_resume_is_exact(workdir: Path) -> None:
    cfg = _cfg(workdir, alpha=1.0, teachers=[], steps=6, ema=0.9)
    device = torch.device("cpu")
    pairs = prepare_data(cfg, device, [], [], [])
    a = build_state(cfg, device, None)
    for _ in range(3):
        train_step(a, cfg, pairs, device, None)
    torch.save(checkpoint(a, cfg), workdir / "ck.pt")  # through disk, as in training.run: no shared tensors
    b = build_state(cfg, device, None)
    restore(b, torch.load(workdir / "ck.pt", weights_only=False))
    la = [train_step(a, cfg, pairs, device, None)["loss"] for _ in range(3)]
    lb = [train_step(b, cfg, pairs, device, None)["loss"] for _ in range(3)]
    assert la == lb and a.step == b.step == 6


def test_train_end_to_end(workdir: Path) -> None:
    from training.run import train

    cfg = _cfg(workdir, steps=4, eval_every=2, ckpt_every=2, batch=4)
    summary = train(cfg, progress=False)
    run_dir = workdir / "runs" / "tiny"
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "eval" in r] == [2, 4]
    assert (run_dir / "checkpoint.pt").is_file()
    from vsr.artifact import load_artifact

    model, meta = load_artifact(summary["artifact"])
    assert meta.training["steps"] == 4 and meta.training["teachers"][0]["arch"] == "edsr"
    assert meta.scores["val"]["V"]["images"] == 1
    # resuming a finished run is a no-op that still exports
    assert train(cfg, progress=False)["steps"] == 4
