"""Training data: HR images from folders, bicubic LR, aligned random crops, flips/rot90, cached teacher targets.

LR is made once per image by bicubic downscaling (the field's protocol); crops of LR, HR and the teacher's SR of the
whole LR image are cut at aligned positions. Caching the teacher's output per image makes KD on a CPU cost nothing per
step (RLFN x2 over all 291 training images takes ~80 s once). With degradations on, LR crops are degraded per sample
and the soft target stays the teacher's output on the clean LR (the teacher then also teaches restoration).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from training.degrade import DegradeConfig, degrade
from training.video_frames import clip_frames, clip_name, folder_clips
from vsr.imageops import crop_to_multiple, downscale, load_rgb

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def list_images(folders: Sequence[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for folder in folders:
        f = Path(folder)
        if not f.is_dir():
            raise FileNotFoundError(f"image folder not found: {f}")
        clips = folder_clips(f)
        if clips:  # camera footage: frames sampled from each clip, cached on this machine
            paths += [frame for clip in clips for frame in clip_frames(clip)]
            continue
        paths += sorted(p for p in f.rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    if not paths:
        raise FileNotFoundError(f"no images in {list(map(str, folders))}")
    return paths


def is_held_out(path: Path, every: int) -> bool:
    """Deterministic held-out slice: about one image in ``every``, chosen by a hash of the file name (stable when
    images are added or removed, independent of folder order). Frames of camera clips go by their clip's name, so a
    clip is held out whole. ``every`` <= 0 holds nothing out."""
    if every <= 0:
        return False
    return int(hashlib.sha1(clip_name(path).encode()).hexdigest(), 16) % every == 0


def split_holdout(paths: Sequence[Path], every: int) -> tuple[list[Path], list[Path]]:
    """(training images, held-out validation images)."""
    held = [p for p in paths if is_held_out(p, every)]
    return [p for p in paths if not is_held_out(p, every)], held


_DECODED: dict[str, np.ndarray] = {}


def load_cached(path: Path) -> np.ndarray:
    """Decode once per process (PNG decode dominates epoch time otherwise)."""
    key = str(path.resolve())
    if key not in _DECODED:
        _DECODED[key] = load_rgb(key)
    return _DECODED[key]


@dataclass
class Pair:
    """One training image: HR cropped to a multiple of the scale, its LR, and optional soft targets (HWC)."""

    hr: np.ndarray
    lr: np.ndarray
    soft: np.ndarray | None = None  # teacher SR, float16 in [0, 1], same size as hr


def make_pairs(paths: Sequence[Path], scale: int, *, min_lr: int) -> list[Pair]:
    pairs = []
    for p in paths:
        hr = crop_to_multiple(load_cached(p), scale)
        if min(hr.shape[:2]) // scale < min_lr:
            continue  # too small for one crop
        pairs.append(Pair(hr=hr, lr=downscale(hr, scale)))
    return pairs


def _augment(arrays: list[np.ndarray], k: int, flip: bool) -> list[np.ndarray]:
    out = []
    for a in arrays:
        a = np.rot90(a, k) if k else a
        out.append(a[:, ::-1] if flip else a)
    return out


@dataclass(frozen=True)
class Batch:
    lr: torch.Tensor  # NChw float in [0, 1]; C = 3 (RGB) or 1 (luma)
    hr: torch.Tensor  # NCHW float in [0, 1] (zeros where has_hr is False)
    soft: torch.Tensor | None  # NCHW teacher output, or None without teachers
    has_hr: torch.Tensor | None = None  # N bool: False for teacher-only samples; None = all have ground truth


def sample_batch(
    pairs: Sequence[Pair],
    *,
    scale: int,
    batch: int,
    patch: int,
    rng: np.random.Generator,
    degradations: DegradeConfig | None = None,
) -> Batch:
    """Draw ``batch`` aligned crops (``patch`` LR pixels) with random flips and 90° rotations."""
    lrs, hrs, softs = [], [], []
    for _ in range(batch):
        pair = pairs[int(rng.integers(len(pairs)))]
        h, w = pair.lr.shape[:2]
        y, x = int(rng.integers(h - patch + 1)), int(rng.integers(w - patch + 1))
        ys, xs, ps = y * scale, x * scale, patch * scale
        crops = [pair.lr[y : y + patch, x : x + patch], pair.hr[ys : ys + ps, xs : xs + ps]]
        if pair.soft is not None:
            crops.append(pair.soft[ys : ys + ps, xs : xs + ps])
        crops = _augment(crops, int(rng.integers(4)), bool(rng.integers(2)))
        lr = np.ascontiguousarray(crops[0])
        if degradations is not None and degradations.enabled:
            lr = degrade(lr, degradations, rng)
        lrs.append(lr)
        hrs.append(crops[1])
        if pair.soft is not None:
            softs.append(crops[2])

    def stack(xs: list[np.ndarray], div: float) -> torch.Tensor:
        return torch.from_numpy(np.stack(xs).astype(np.float32) / div).permute(0, 3, 1, 2).contiguous()

    soft = stack(softs, 1.0) if softs else None
    return Batch(lr=stack(lrs, 255.0), hr=stack(hrs, 255.0), soft=soft)


def validation_pairs(
    folders: Sequence[str | Path] | Sequence[Path], scale: int, *, files: Sequence[Path] | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Deterministic validation: (name, LR, HR) for every image of ``folders`` (or exactly ``files``)."""
    out = []
    for p in files if files is not None else list_images(folders):
        hr = crop_to_multiple(load_cached(p), scale)
        out.append((p.stem, downscale(hr, scale), hr))
    return out
