"""No training image is a test image: thumbnail comparison of T91 + BSD200 against Set5 + Set14 (the shared data),
and the check itself flags a re-graded, re-cropped, rotated copy of a test image (so it can fail)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.env import SHARED, require_or_skip
from training.data import list_images
from training.dedup import near_duplicates

DATA = SHARED / "datasets"


def test_no_training_image_is_a_test_image() -> None:
    require_or_skip((DATA / "train").is_dir() and (DATA / "test").is_dir(), f"{DATA} missing")
    train = list_images([DATA / "train" / "T91", DATA / "train" / "BSD200"])
    test = list_images([DATA / "test" / "Set5", DATA / "test" / "Set14"])
    assert len(train) >= 290 and len(test) == 19
    assert near_duplicates(train, test) == []


def test_check_flags_an_edited_copy(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:60, 0:80]
    base = (120 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0) + 30 * (xx > 50)).astype(np.uint8)
    test_img = np.stack([base, base // 2 + 40, 255 - base], axis=-1)
    Image.fromarray(test_img).save(tmp_path / "test.png")
    copy = np.asarray(Image.fromarray(test_img).resize((160, 120)))[4:-6, 3:-5]  # larger, cropped
    graded = np.clip((copy / 255.0) ** 0.8 * 255 * 1.05 + 5, 0, 255).astype(np.uint8)  # re-graded
    Image.fromarray(np.rot90(graded).copy()).save(tmp_path / "copy.png")  # and rotated
    other = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    Image.fromarray(other).save(tmp_path / "other.png")
    hits = near_duplicates([tmp_path / "copy.png", tmp_path / "other.png"], [tmp_path / "test.png"])
    assert [(a, b) for a, b, _ in hits] == [("copy.png", "test.png")]
