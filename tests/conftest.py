"""Shared test helpers and fixtures. Keep this small: put a fixture here only when two test folders need it.

- :func:`is_ci` / :func:`require_or_skip`: a missing prerequisite (shared data, a system package) skips locally and
  FAILS in CI (``CI=true``), so CI can never go green by skipping.
- :func:`synthetic_image` / :func:`write_images`: smooth, seeded uint8 RGB test images (tiny; no real data).
- ``one_thread``: torch on one thread for the test (use on anything that trains or runs many small forwards).
- :func:`export_tiny`: export any model as an artifact with empty provenance (teachers for KD tests, etc.).
- ``tiny_artifact``: tiny x2 and x4 student artifacts, built once per session.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"  # teachers and datasets, outside the repo (absent on a fresh clone elsewhere)


# -- environment ---------------------------------------------------------------------------------------------------


def is_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_or_skip(condition: bool, reason: str) -> None:
    """Skip the calling test when ``condition`` is false; in CI fail instead."""
    if condition:
        return
    if is_ci():
        pytest.fail(f"CI requires it: {reason}", pytrace=False)
    pytest.skip(reason)


# -- synthetic data ------------------------------------------------------------------------------------------------


def synthetic_image(rng: np.random.Generator, height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth, natural-ish uint8 RGB image: random gradients and sinusoids plus a little noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for _ in range(3):
        fy, fx = rng.uniform(0.05, 0.4, size=2)
        ph = rng.uniform(0, 2 * np.pi)
        c = 0.5 + 0.25 * np.sin(fy * yy + fx * xx + ph) + 0.2 * (rng.uniform(-1, 1) * yy / height)
        channels.append(c)
    img = np.stack(channels, axis=-1) + rng.normal(0, 0.01, size=(height, width, 3))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def write_images(
    folder: Path, n: int = 3, *, height: int = 24, width: int = 32, seed: int = 0, ext: str = "png"
) -> list[Path]:
    """Write ``n`` synthetic images into ``folder`` (created); returns their paths."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.{ext}"
        Image.fromarray(synthetic_image(rng, height, width)).save(p)
        paths.append(p)
    return paths


# -- torch ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Run torch on one thread for the test: tiny models gain nothing from two, and on a busy 2-core machine
    OpenMP spin-waiting makes two threads ~20x slower (measured here while training ran beside the tests)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- artifacts -----------------------------------------------------------------------------------------------------


def export_tiny(
    model: Any, out_dir: Path, *, arch: str = "rep_student", config: dict | None = None, **meta: Any
) -> Path:
    """Export ``model`` as an artifact with empty provenance (``meta`` overrides name/training/data/scores)."""
    from training.export import export_artifact

    fields = {"name": out_dir.name, "training": {}, "data": {}, "scores": {}} | meta
    return export_artifact(model, out_dir=out_dir, arch=arch, config=config, **fields)


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"x2": folder, "x4": folder}``: tiny RepStudent artifacts (random but non-trivial weights, seeded)."""
    import torch

    from vsr.archs.student import RepStudent

    root = tmp_path_factory.mktemp("artifacts")
    out: dict[str, Path] = {}
    for scale in (2, 4):
        torch.manual_seed(scale)
        model = RepStudent(scale=scale, channels=8, depth=1, expand=0)
        with torch.no_grad():  # the tail starts at zero (pure anchor); perturb it so outputs depend on the body
            for p in model.tail.parameters():
                p.add_(0.01 * torch.randn_like(p))
        out[f"x{scale}"] = export_tiny(model, root / f"x{scale}")
    return out
