"""Tiny artifacts for model-repository tests (``tests/service/test_repository.py``, the stream model switch), and
the reference they are checked against: the artifact's plain forward (``vsr.inference.upscale_frames``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.support.env import export_tiny
from vsr.artifact import load_artifact
from vsr.inference import upscale_frames


def tiny_model(folder: Path, *, seed: int, channels: int = 8, depth: int = 1, tail: float = 0.05) -> Path:
    """A tiny x2 artifact named after its folder; ``seed`` and ``tail`` make outputs differ between models."""
    import torch

    from vsr.archs.student import RepStudent

    torch.manual_seed(seed)
    model = RepStudent(scale=2, channels=channels, depth=depth, expand=0)
    with torch.no_grad():
        for p in model.tail.parameters():
            p.add_(tail * torch.randn_like(p))
    return export_tiny(model, folder)


def reference(folder: Path, image: np.ndarray) -> np.ndarray:
    model, meta = load_artifact(folder)
    return upscale_frames(model, image, scale=meta.scale)
