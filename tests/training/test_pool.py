"""The crop pool: aligned LR/HR/teacher crops after the vectorised flips, determinism, resume by seek, teacher-only
samples marked, luma batches; the held-out validation slice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.data import Pair, split_holdout
from training.pool import CropPool


def _pairs(n: int = 3, h: int = 20, w: int = 26, soft: bool = True) -> list[Pair]:
    """LR random; HR = nearest-upsampled LR, so HR[::2, ::2] == LR exactly (alignment is checkable)."""
    rng = np.random.default_rng(0)
    out = []
    for _ in range(n):
        lr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        hr = lr.repeat(2, axis=0).repeat(2, axis=1)
        out.append(Pair(hr=hr, lr=lr, soft=(hr.astype(np.float16) / 255) if soft else None))
    return out


def test_batches_stay_aligned_after_flips_and_transposes() -> None:
    pool = CropPool(_pairs(), scale=2, patch=8, size=64, seed=0)
    b = pool.batch(32, np.random.default_rng(1))
    assert tuple(b.lr.shape) == (32, 3, 8, 8) and tuple(b.hr.shape) == (32, 3, 16, 16) and b.has_hr is None
    assert b.soft is not None
    torch.testing.assert_close(b.hr[:, :, ::2, ::2], b.lr, rtol=0, atol=0)
    torch.testing.assert_close(b.soft[:, :, ::2, ::2], b.lr, rtol=0, atol=2e-3)  # fp16 storage
    # the augmentation really varies: not every crop keeps its orientation
    raw = torch.from_numpy(pool.lr).permute(0, 3, 1, 2).float() / 255
    assert any(not any(torch.equal(x, r) for r in raw) for x in b.lr)


def test_deterministic_and_resumable_by_seek() -> None:
    def draws(pool: CropPool, rng: np.random.Generator, n: int) -> list[torch.Tensor]:
        return [pool.batch(4, rng).lr for _ in range(n)]

    a = CropPool(_pairs(), scale=2, patch=6, size=16, seed=3, refresh=5)
    rng_a = np.random.default_rng(7)
    draws(a, rng_a, 5)
    state = rng_a.bit_generator.state
    tail_a = draws(a, rng_a, 4)
    b = CropPool(_pairs(), scale=2, patch=6, size=16, seed=3, refresh=5)
    b.seek(5)  # as after 5 batches, without replaying them
    rng_b = np.random.default_rng(0)
    rng_b.bit_generator.state = state
    assert all(torch.equal(x, y) for x, y in zip(tail_a, draws(b, rng_b, 4), strict=True))
    c = CropPool(_pairs(), scale=2, patch=6, size=16, seed=4, refresh=5)
    assert not np.array_equal(c.lr, CropPool(_pairs(), scale=2, patch=6, size=16, seed=3).lr)


def test_teacher_only_samples_are_marked() -> None:
    gt = _pairs()
    zoom = [Pair(hr=np.zeros((0, 0, 3), np.uint8), lr=p.hr, soft=np.zeros((80, 104, 3), np.float16)) for p in gt]
    pool = CropPool(gt, scale=2, patch=8, size=200, seed=0, teacher_only=zoom, teacher_share=0.5)
    frac = 1 - pool.has_hr.mean()
    assert 0.3 < frac < 0.7
    b = pool.batch(64, np.random.default_rng(0))
    assert b.has_hr is not None and b.has_hr.dtype == torch.bool and not bool(b.has_hr.all())
    assert float(b.hr[~b.has_hr].abs().max()) == 0.0  # no made-up ground truth
    with pytest.raises(ValueError, match="soft targets"):
        CropPool(_pairs(soft=False), scale=2, patch=8, size=8, seed=0, teacher_only=zoom)


def test_batches_adapt_to_each_student() -> None:
    """One RGB batch serves every student in lock-step: luma students get Y, students without the zoom-out samples
    (no-KD twins) get the ground-truth samples only."""
    from training.config import TrainConfig
    from training.loop import adapt_batch

    gt = _pairs()
    zoom = [Pair(hr=np.zeros((0, 0, 3), np.uint8), lr=p.hr, soft=np.zeros((80, 104, 3), np.float16)) for p in gt]
    pool = CropPool(gt, scale=2, patch=8, size=64, seed=0, teacher_only=zoom, teacher_share=0.5)
    rgb = pool.batch(16, np.random.default_rng(0))
    assert rgb.has_hr is not None
    luma_kd = TrainConfig(teachers=["t"], arch_config={"colors": 1}, zoomout=8)
    b = adapt_batch(rgb, luma_kd)
    assert b.lr.shape[:2] == (16, 1) and b.soft is not None and b.soft.shape[1] == 1 and b.has_hr is not None
    nokd = adapt_batch(rgb, TrainConfig(alpha=1.0, arch_config={"colors": 1}))
    assert nokd.lr.shape[0] == int(rgb.has_hr.sum()) and nokd.has_hr is None
    plain = CropPool(gt, scale=2, patch=8, size=64, seed=0)
    b = adapt_batch(plain.batch(8, np.random.default_rng(0)), luma_kd)
    assert b.lr.shape[1] == 1 and b.hr.shape[1] == 1 and b.soft is not None and b.soft.shape[1] == 1
    torch.testing.assert_close(b.hr[:, :, ::2, ::2], b.lr, rtol=0, atol=1e-6)


def test_holdout_slice_is_stable_and_disjoint() -> None:
    paths = [Path(f"/d/img{i}.png") for i in range(200)]
    train, held = split_holdout(paths, 10)
    assert not set(train) & set(held) and len(train) + len(held) == 200
    assert 8 <= len(held) <= 35
    # membership depends on the name only: adding images does not reshuffle the slice
    _, held2 = split_holdout([*paths, Path("/d/new.png")], 10)
    assert set(held) <= set(held2)
    assert split_holdout(paths, 0) == (paths, [])


def test_validation_on_test_sets_is_refused() -> None:
    from training.config import TrainConfig

    with pytest.raises(ValueError, match="held-out"):
        TrainConfig(val_sets=["test/Set5"], alpha=1.0)
