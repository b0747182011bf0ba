"""Near-duplicate check between image sets by thumbnail correlation (training images must never be test images).

Bytes cannot catch the classic leak (BSD200 ``302003`` was Set5 ``woman``: larger, differently cropped and graded).
A 16x16 grey thumbnail, mean-removed and unit-normalised, survives resizing, mild cropping and grading; we compare
each test thumbnail in its 8 flips/rotations against every training thumbnail. On T91 + BSD200 vs Set5 + Set14 the
highest correlation is ~0.81 (147021 vs coastguard, different photos); a re-graded, re-cropped 2x copy of a test
image scores ~0.98. The threshold sits between.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

THUMB = 16
THRESHOLD = 0.92


def thumbnail(path: str | Path, size: int = THUMB) -> np.ndarray:
    """Mean-removed, unit-norm grey thumbnail (size x size) of an image file."""
    with Image.open(path) as im:
        t = np.asarray(im.convert("L").resize((size, size), Image.Resampling.BOX), dtype=np.float64)
    t = t - t.mean()
    return t / (np.linalg.norm(t) + 1e-9)


def near_duplicates(
    train: Sequence[Path], test: Sequence[Path], threshold: float = THRESHOLD
) -> list[tuple[str, str, float]]:
    """(train image, test image, correlation) for every pair at or above ``threshold``, highest first."""
    a = np.stack([thumbnail(p).ravel() for p in train])
    variants, owners = [], []
    for j, p in enumerate(test):
        t = thumbnail(p)
        for k in range(4):
            for v in (np.rot90(t, k), np.rot90(t, k)[:, ::-1]):
                variants.append(v.ravel())
                owners.append(j)
    corr = a @ np.stack(variants).T
    found: dict[tuple[int, int], float] = {}
    for i, v in zip(*np.nonzero(corr >= threshold), strict=True):
        key = (int(i), owners[int(v)])
        found[key] = max(found.get(key, -1.0), float(corr[i, v]))
    return sorted(((train[i].name, test[j].name, c) for (i, j), c in found.items()), key=lambda r: -r[2])
