"""Camera degradations: deterministic for a seed, they change the image, codec round trips keep the size;
the clip pool caches by content (not file name) and mixes clean and degraded inputs at the asked share."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.media import synthetic_image
from training.camera import (
    available_codecs,
    codec_roundtrip,
    defocus_blur,
    degrade_clip,
    downscale_with,
    motion_blur,
    pan_zoom_clip,
    sensor_noise,
)
from training.camera_config import KERNELS, CameraConfig, CameraDegradation
from training.camera_pool import build_pool, holdout_by_content, pool_pairs
from training.video_eval import pan_clip, temporal_psnr

IMG = synthetic_image(np.random.default_rng(0), 80, 96)


def _clip(seed: int = 0, frames: int = 5) -> np.ndarray:
    return pan_zoom_clip(IMG, frames=frames, size=(48, 64), rng=np.random.default_rng(seed))


def test_pan_zoom_clip_is_seeded_and_moves() -> None:
    a, b, c = _clip(0), _clip(0), _clip(1)
    assert a.shape == (5, 48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert any(not np.array_equal(a[0], a[t]) for t in range(1, 5)), "a clip must move (or zoom)"


@pytest.mark.parametrize("codec", available_codecs())
def test_codec_roundtrip_same_size_and_lossy(codec: str) -> None:
    lr = np.stack([downscale_with(f, 2, "bicubic") for f in _clip()])[:, :23, :31]  # odd sizes: padded, cropped
    out = codec_roundtrip(lr, codec=codec, crf=35, preset="ultrafast", gop=4, bframes=2)
    assert out.shape == lr.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - lr).mean() > 0.5
    again = codec_roundtrip(lr, codec=codec, crf=35, preset="ultrafast", gop=4, bframes=2)
    assert np.array_equal(out, again), "an encoder run is deterministic for the same input and settings"


def test_higher_crf_loses_more() -> None:
    lr = np.stack([downscale_with(f, 2, "bicubic") for f in _clip()])
    err = [np.abs(codec_roundtrip(lr, codec="h264", crf=c).astype(int) - lr).mean() for c in (18, 40)]
    assert err[1] > err[0]


def test_noise_is_seeded_luma_weighted_and_changes_the_image() -> None:
    def noisy(seed: int, chroma: float = 0.3) -> np.ndarray:
        rng = np.random.default_rng(seed)
        return sensor_noise(IMG, gauss_sigma=3.0, photons=500.0, chroma=chroma, rng=rng)

    assert np.array_equal(noisy(0), noisy(0))
    assert not np.array_equal(noisy(0), noisy(1))
    d = noisy(0).astype(float) - IMG
    assert np.abs(d).mean() > 1.0
    # luma-weighted: the channels' noise is mostly shared, so its correlation across channels is high
    assert np.corrcoef(d[..., 0].ravel(), d[..., 2].ravel())[0, 1] > 0.6


def test_blurs_and_kernels_change_the_image_and_keep_sizes() -> None:
    for out in (defocus_blur(IMG, 1.5), motion_blur(IMG, 4.0, 0.7)):
        assert out.shape == IMG.shape and np.abs(out.astype(int) - IMG).mean() > 0.3
    lrs = {k: downscale_with(IMG, 2, k) for k in KERNELS}
    assert all(v.shape == (40, 48, 3) for v in lrs.values())
    assert len({v.tobytes() for v in lrs.values()}) == len(KERNELS), "each kernel gives a different LR"
    with pytest.raises(ValueError, match="unknown kernel"):
        downscale_with(IMG, 2, "nearest-ish")


def test_degrade_clip_is_deterministic_for_a_seed_and_degrades() -> None:
    cfg = CameraDegradation(blur_prob=1.0, noise_prob=1.0, kernel_prob=1.0, codecs=("h264",), presets=("ultrafast",))
    hr = _clip()
    a = degrade_clip(hr, 2, cfg, np.random.default_rng(3))
    b = degrade_clip(hr, 2, cfg, np.random.default_rng(3))
    c = degrade_clip(hr, 2, cfg, np.random.default_rng(4))
    clean = np.stack([downscale_with(f, 2, "bicubic") for f in hr])
    assert a.shape == clean.shape
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a.astype(int) - clean).mean() > 1.0


def test_temporal_psnr_punishes_flicker() -> None:
    hr = pan_clip(IMG, 2, frames=4)
    steady = np.clip(hr.astype(int) + 3, 0, 255).astype(np.uint8)  # constant offset: no flicker at all
    rng = np.random.default_rng(0)
    flicker = np.clip(hr.astype(int) + rng.integers(-3, 4, size=(4, 1, 1, 1)), 0, 255).astype(np.uint8)
    assert temporal_psnr(steady, hr, 2) > temporal_psnr(flicker, hr, 2) + 10


def _write(folder: Path, names: list[str], seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for n in names:
        Image.fromarray(synthetic_image(rng, 80, 96)).save(folder / n)
        paths.append(folder / n)
    return paths


def test_pool_caches_by_content_not_name(tmp_path: Path) -> None:
    paths = _write(tmp_path / "a", ["x.png", "y.png"])
    cfg = CameraConfig(enabled=True, clips=1, frames=4, lr_size=24)
    cfg = replace(cfg, degradation=replace(cfg.degradation, codecs=("h264",), presets=("ultrafast",)))
    cache = tmp_path / "cache"
    calls: list[int] = []

    def teacher(lr: np.ndarray) -> np.ndarray:
        calls.append(1)
        return np.repeat(np.repeat(lr, 2, 0), 2, 1).astype(np.float16) / 255

    pool = build_pool(paths, 2, cfg, seed=0, cache=cache, teacher=teacher, teacher_id="t", progress=False)
    assert len(calls) == 2 * 4 and len(pool) == 2
    renamed = [p.rename(p.with_name("renamed-" + p.name)) for p in paths]
    again = build_pool(renamed, 2, cfg, seed=0, cache=cache, teacher=teacher, teacher_id="t", progress=False)
    assert len(calls) == 8, "renamed images hit both caches"
    assert all(np.array_equal(a.degraded, b.degraded) for a, b in zip(pool, again, strict=True))
    other = build_pool(renamed, 2, cfg, seed=1, cache=cache, teacher=None, progress=False)
    assert not np.array_equal(other[0].degraded, pool[0].degraded), "another seed is another cache entry"
    assert pool[0].soft is not None and pool[0].soft.shape == pool[0].hr.shape

    pairs = pool_pairs(pool, clean_share=0.25)
    share = np.mean([any(np.shares_memory(p.lr, c.clean) for c in pool) for p in pairs])
    assert share == pytest.approx(0.25)


def test_holdout_split_is_stable_under_renames(tmp_path: Path) -> None:
    paths = _write(tmp_path / "h", [f"{i}.png" for i in range(6)], seed=5)
    train, held = holdout_by_content(paths, 3)
    assert len(held) == 2 and not set(train) & set(held)
    renamed = [p.rename(p.with_name("z" + p.name)) for p in paths]
    _, held2 = holdout_by_content(renamed, 3)
    assert sorted("z" + p.name for p in held) == sorted(p.name for p in held2)
