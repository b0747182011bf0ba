"""A tiny distillation run: 4 synthetic 48x48 training images, one 32x32 validation image, a frozen
EDSR(channels=8, blocks=1) teacher exported as an artifact, and the TrainConfig of an 8-channel student on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support.env import export_tiny
from tests.support.media import write_images
from training.config import TrainConfig


def tiny_workdir(root: Path) -> Path:
    """Write the data root (``root/data``) and the teacher artifact (``root/teacher``); returns ``root``."""
    write_images(root / "data" / "train" / "A", 4, height=48, width=48, seed=0)
    write_images(root / "data" / "test" / "V", 1, height=32, width=32, seed=1)
    tiny_teacher(root / "teacher")
    return root


def camera_workdir(root: Path) -> Path:
    """Five 64x64 training images (``root/data/train/A``; big enough for camera clips) and the teacher artifact."""
    write_images(root / "data" / "train" / "A", 5, height=64, width=64, seed=0)
    tiny_teacher(root / "teacher")
    return root


def tiny_teacher(out: Path) -> Path:
    """A frozen x2 EDSR(channels=8, blocks=1) teacher (seed 0) exported as an artifact at ``out``."""
    import torch

    from vsr.archs.edsr import EDSR

    torch.manual_seed(0)
    cfg = {"scale": 2, "channels": 8, "blocks": 1}
    return export_tiny(EDSR(scale=2, channels=8, blocks=1), out, arch="edsr", config=cfg)


def tiny_config(root: Path, **kw: Any) -> TrainConfig:
    """The tiny run's config (20 steps of batch 8, KD alpha 0.5, CPU, fp32); ``kw`` overrides any field."""
    base: dict[str, Any] = dict(
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
        pool=64,
    )
    return TrainConfig(**(base | kw))
