"""Where things are, and what to do when a prerequisite is missing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"  # teachers and datasets, outside the repo (absent on a fresh clone elsewhere)


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip the calling test when ``condition`` is false; in CI fail instead (CI can never go green by skipping)."""
    if condition:
        return
    if is_ci():
        pytest.fail(f"CI requires it: {reason}", pytrace=False)
    pytest.skip(reason)


def export_tiny(
    model: Any, out_dir: Path, *, arch: str = "rep_student", config: dict | None = None, **meta: Any
) -> Path:
    """Export ``model`` as an artifact with empty provenance (``meta`` overrides name/training/data/scores)."""
    from training.export import export_artifact

    fields = {"name": out_dir.name, "training": {}, "data": {}, "scores": {}} | meta
    return export_artifact(model, out_dir=out_dir, arch=arch, config=config, **fields)


def perturbed_student(colors: int, seed: int = 5) -> Any:
    """A tiny x2 RepStudent (8 channels, 2 blocks; ``colors`` 3 = RGB, 1 = luma) with every weight perturbed: its
    tail starts at zero (a pure anchor), and the tests need an output that depends on the body."""
    import torch

    from vsr.archs.student import RepStudent

    torch.manual_seed(seed)
    m = RepStudent(scale=2, channels=8, depth=2, expand=0, colors=colors)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()
