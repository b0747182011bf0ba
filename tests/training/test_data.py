"""Training data: LR/HR shapes per scale, aligned crops, determinism under a seed."""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.media import write_images
from training.data import list_images, make_pairs, sample_batch, validation_pairs
from training.degrade import DegradeConfig, degrade

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("hr")
    write_images(folder, 3, height=37, width=50, seed=3)  # odd sizes: exercise crop-to-multiple
    return folder


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_hr_shapes(image_dir, scale: int) -> None:
    pairs = make_pairs(list_images([image_dir]), scale, min_lr=6)
    assert len(pairs) == 3
    for p in pairs:
        h, w = p.hr.shape[:2]
        assert h % scale == 0 and w % scale == 0
        assert p.hr.shape == (37 - 37 % scale, 50 - 50 % scale, 3)
        assert p.lr.shape == (h // scale, w // scale, 3) and p.lr.dtype == np.uint8
    b = sample_batch(pairs, scale=scale, batch=5, patch=6, rng=np.random.default_rng(0))
    assert tuple(b.lr.shape) == (5, 3, 6, 6)
    assert tuple(b.hr.shape) == (5, 3, 6 * scale, 6 * scale)
    assert b.soft is None
    assert float(b.lr.min()) >= 0.0 and float(b.hr.max()) <= 1.0
    for name, lr, hr in validation_pairs([image_dir], scale):
        assert lr.shape[0] * scale == hr.shape[0] and lr.shape[1] * scale == hr.shape[1], name


def test_small_images_are_skipped(image_dir) -> None:
    assert make_pairs(list_images([image_dir]), 4, min_lr=13) == []


def test_deterministic_under_seed(image_dir) -> None:
    pairs = make_pairs(list_images([image_dir]), 2, min_lr=8)
    deg = DegradeConfig(blur_prob=0.5, noise_prob=0.5, jpeg_prob=0.5)
    a = sample_batch(pairs, scale=2, batch=6, patch=8, rng=np.random.default_rng(42), degradations=deg)
    b = sample_batch(pairs, scale=2, batch=6, patch=8, rng=np.random.default_rng(42), degradations=deg)
    c = sample_batch(pairs, scale=2, batch=6, patch=8, rng=np.random.default_rng(43), degradations=deg)
    assert np.array_equal(a.lr.numpy(), b.lr.numpy()) and np.array_equal(a.hr.numpy(), b.hr.numpy())
    assert not np.array_equal(a.hr.numpy(), c.hr.numpy())


def test_soft_targets_crop_aligned_with_hr(image_dir) -> None:
    """Whatever crop, flip and rotation is drawn, the soft target crop matches the HR crop."""
    pairs = make_pairs(list_images([image_dir]), 2, min_lr=8)
    for p in pairs:
        p.soft = (p.hr.astype(np.float32) / 255.0).astype(np.float16)
    b = sample_batch(pairs, scale=2, batch=16, patch=8, rng=np.random.default_rng(0))
    assert b.soft is not None and b.soft.shape == b.hr.shape
    np.testing.assert_allclose(b.soft.numpy(), b.hr.numpy(), atol=1e-3)


def test_degradations_use_only_the_given_generator() -> None:
    img = np.full((16, 16, 3), 128, np.uint8)
    cfg = DegradeConfig(blur_prob=1.0, noise_prob=1.0, jpeg_prob=1.0)
    state = np.random.get_state()
    a = degrade(img, cfg, np.random.default_rng(5))
    b = degrade(img, cfg, np.random.default_rng(5))
    assert np.array_equal(a, b) and a.shape == img.shape and a.dtype == np.uint8
    assert not np.array_equal(a, img)
    assert np.array_equal(np.random.get_state()[1], state[1])  # global RNG untouched


def test_list_images_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        list_images([tmp_path / "missing"])
    with pytest.raises(FileNotFoundError):
        list_images([tmp_path])
