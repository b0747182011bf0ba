"""The camera training pool: degraded clips precomputed once per training image, cached on disk by content.

For every training image, ``clips`` short pan/zoom clips are cut (:func:`training.camera.pan_zoom_clip`); each frame
gives three aligned arrays: the HR frame (hard target), its clean bicubic LR (the teacher's input, so the teacher's
SR of it is the soft target) and ``variants`` degraded LR versions (the student's input, :func:`degrade_clip`).

Caches are keyed by the image's pixels and every parameter that shapes the result (never by file name), so a
renamed or moved image hits the cache and a changed recipe misses it:
- ``clips-<key>.npz``: HR, clean LR and degraded LR of one image's clips (the codec runs once per clip, ever);
- ``soft-<key>.npy``: the teacher's SR of the clean LR frames (fp16), keyed by those frames' bytes + teacher id;
  with ``teacher_input="degraded"`` also of the degraded frames (keyed by their bytes, the teacher id and the input).

The pool becomes :class:`~training.data.Pair` objects, one per frame and input (clean or degraded), repeated so
that uniform sampling by the training loop draws clean inputs with probability ``clean_share``. A degraded input's
soft target is the teacher's SR of the clean frame, or of that degraded frame itself when the pool has those labels.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from training.camera import degrade_clip, pan_zoom_clip
from training.camera_config import CameraConfig
from training.config import TeacherInput
from training.data import Pair, load_cached
from training.video_frames import clip_name
from vsr.imageops import downscale
from vsr.progress import track

log = logging.getLogger(__name__)
POOL_VERSION = (
    2  # bump when the pool code changes what it produces for the same parameters (2: small frames padded for x265)
)

Teacher = Callable[[np.ndarray], np.ndarray]  # LR frame (HWC uint8) -> SR (HWC float16 in [0, 1])


def content_key(img: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(img).tobytes() + repr(img.shape).encode()).hexdigest()


def holdout_by_content(paths: Sequence[Path], every: int) -> tuple[list[Path], list[Path]]:
    """(train, held out): every ``every``-th image in the order of its content hash (stable under renames).

    Frames of camera clips (``<clip>@<frame>``) are held out whole clips at a time, by the same ``every``-th rule
    over the clips ordered by their first frame's content: one clip's frames are near-duplicates of each other."""
    if every <= 0:
        return list(paths), []
    photos = [p for p in paths if "@" not in p.stem]
    ordered = sorted(photos, key=lambda p: content_key(load_cached(p)))
    held = set(ordered[::every])
    clips: dict[str, list[Path]] = {}
    for p in paths:
        if "@" in p.stem:
            clips.setdefault(clip_name(p), []).append(p)
    by_content = sorted(clips.values(), key=lambda fs: content_key(load_cached(sorted(fs)[0])))
    for frames in by_content[::every]:
        held.update(frames)
    return [p for p in paths if p not in held], [p for p in paths if p in held]


@dataclass
class ImageClips:
    hr: np.ndarray  # clips x T x H x W x 3
    clean: np.ndarray  # clips x T x h x w x 3
    degraded: np.ndarray  # clips x variants x T x h x w x 3
    soft: np.ndarray | None = None  # clips x T x H x W x 3, float16: the teacher's SR of ``clean``
    soft_degraded: np.ndarray | None = None  # clips x variants x T x H x W x 3: of ``degraded`` (teacher_input)


def make_image_clips(img: np.ndarray, scale: int, cfg: CameraConfig, seed: int) -> ImageClips | None:
    """All clips of one image, seeded by (seed, the image's content); None if the image is too small."""
    side = min(cfg.lr_size, (min(img.shape[:2]) // scale - 8) // 2 * 2)
    if side < 16:
        return None
    rng = np.random.default_rng([seed, int(content_key(img)[:12], 16)])
    hrs, cleans, degs = [], [], []
    for _ in range(cfg.clips):
        hr = pan_zoom_clip(img, frames=cfg.frames, size=(side * scale, side * scale), rng=rng)
        hrs.append(hr)
        cleans.append(np.stack([downscale(f, scale) for f in hr]))
        degs.append(np.stack([degrade_clip(hr, scale, cfg.degradation, rng) for _ in range(cfg.variants)]))
    return ImageClips(hr=np.stack(hrs), clean=np.stack(cleans), degraded=np.stack(degs))


def _clips_cached(img: np.ndarray, scale: int, cfg: CameraConfig, seed: int, cache: Path | None) -> ImageClips | None:
    recipe = repr((POOL_VERSION, scale, seed, cfg.clips, cfg.frames, cfg.lr_size, cfg.variants, cfg.degradation))
    key = hashlib.sha256((content_key(img) + recipe).encode()).hexdigest()[:20]
    path = cache / f"clips-{key}.npz" if cache else None
    if path is not None and path.is_file():
        with np.load(path) as z:
            return ImageClips(hr=z["hr"], clean=z["clean"], degraded=z["degraded"]) if "hr" in z else None
    clips = make_image_clips(img, scale, cfg, seed)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        if clips is None:
            np.savez(tmp, empty=np.zeros(0))
        else:
            np.savez(tmp, hr=clips.hr, clean=clips.clean, degraded=clips.degraded)
        tmp.replace(path)
    return clips


def soft_key(frames: np.ndarray, teacher_id: str) -> str:
    """Cache key of the teacher's SR of ``frames`` (any leading dims x h x w x 3): their bytes, shape and the id."""
    return hashlib.sha256(frames.tobytes() + repr(frames.shape).encode() + teacher_id.encode()).hexdigest()[:20]


def _soft_cached(frames: np.ndarray, teacher: Teacher, teacher_id: str, cache: Path | None) -> np.ndarray:
    """The teacher's SR of every frame in ``frames`` (leading dims kept), from the cache where present."""
    path = cache / f"soft-{soft_key(frames, teacher_id)}.npy" if cache else None
    if path is not None and path.is_file():
        return np.load(path)
    flat = frames.reshape(-1, *frames.shape[-3:])
    out = np.stack([teacher(f) for f in flat])
    soft = out.reshape(*frames.shape[:-3], *out.shape[1:])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, soft)
        tmp.replace(path)
    return soft


def build_pool(
    paths: Sequence[Path],
    scale: int,
    cfg: CameraConfig,
    *,
    seed: int,
    cache: Path | None,
    teacher: Teacher | None = None,
    teacher_id: str = "",
    teacher_input: TeacherInput = "clean",
    progress: bool = True,
) -> list[ImageClips]:
    """Clips of every image (from the cache where it matches), with soft targets when a teacher is given: of the
    clean frames, and with ``teacher_input="degraded"`` of the degraded frames too."""
    out = []
    for p in track(paths, desc="camera pool", disable=not progress, leave=False):
        clips = _clips_cached(load_cached(p), scale, cfg, seed, cache)
        if clips is None:
            continue
        if teacher is not None:
            clips.soft = _soft_cached(clips.clean, teacher, teacher_id, cache)  # the key of old caches too
            if teacher_input == "degraded":
                clips.soft_degraded = _soft_cached(clips.degraded, teacher, f"{teacher_id};input=degraded", cache)
        out.append(clips)
    return out


def pool_pairs(pool: Sequence[ImageClips], clean_share: float) -> list[Pair]:
    """Training pairs from the pool, clean and degraded inputs repeated so that a uniform draw is clean with
    probability ``clean_share`` (rounded to a twentieth)."""
    clean, degraded = [], []
    for c in pool:
        for i in range(c.hr.shape[0]):
            for t in range(c.hr.shape[1]):
                soft = c.soft[i, t] if c.soft is not None else None
                clean.append(Pair(hr=c.hr[i, t], lr=c.clean[i, t], soft=soft))
                for v in range(c.degraded.shape[1]):
                    soft_v = c.soft_degraded[i, v, t] if c.soft_degraded is not None else soft
                    degraded.append(Pair(hr=c.hr[i, t], lr=c.degraded[i, v, t], soft=soft_v))
    share = Fraction(round(clean_share * 20), 20)
    if share == 0:
        return degraded
    if share == 1:
        return clean
    # clean fraction: a*len(clean) / (a*len(clean) + b*len(degraded)) = share
    a = share.numerator * len(degraded)
    b = (share.denominator - share.numerator) * len(clean)
    g = np.gcd(a, b)
    return clean * (a // g) + degraded * (b // g)
