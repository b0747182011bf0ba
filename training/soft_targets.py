"""Teacher outputs for KD, computed once per training image and cached (memory + disk), keyed by content.

The teacher is frozen and sees the same clean LR every epoch, so its output per image never changes: caching it as
fp16 turns the teacher's cost (RLFN on a CPU: ~0.3 s per image) into a one-off ~80 s for T91 + BSD200. Each image's
entry is keyed by the teachers' *weights* (a hash of their tensors, not their file names), the blend weights and the
input image's pixels, so a changed teacher or a changed image list can never reuse a stale target.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.data import Pair
from vsr.inference import to_tensor
from vsr.progress import track
from vsr.tiling import plan_grid, run_tiled

log = logging.getLogger(__name__)

TEACHER_TILE_PIXELS = 304 * 304  # LR pixels per teacher call, margins included: bounds an EDSR's activations


def weights_hash(model: nn.Module) -> str:
    """sha256 of a model's state (names, shapes, dtypes and values): the identity of a teacher's weights."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def entry_key(teacher_key: str, image: np.ndarray) -> str:
    """Cache key of one teacher output: the teachers' identity + the input pixels (and their shape)."""
    h = hashlib.sha256(teacher_key.encode())
    h.update(f"{image.shape}:{image.dtype};".encode())
    h.update(np.ascontiguousarray(image).tobytes())
    return h.hexdigest()[:32]


def teachers_key(teachers: Sequence[nn.Module], weights: Sequence[float]) -> str:
    return ";".join(f"{weights_hash(t)}*{w!r}" for t, w in zip(teachers, weights, strict=True))


@torch.inference_mode()
def teacher_sr(
    teachers: Sequence[nn.Module], weights: Sequence[float], lr: np.ndarray, device: torch.device
) -> np.ndarray:
    """Weighted sum of the teachers' SR of one LR image, HWC float16 in [0, 1]."""
    x = to_tensor(lr, device=device, dtype=torch.float32)
    grid = plan_grid(*x.shape[2:], budget=TEACHER_TILE_PIXELS, overlap=24)
    out = None
    for t, w in zip(teachers, weights, strict=True):
        scale = int(getattr(t, "scale", 1))
        y = run_tiled(t, x, grid, scale).clamp(0, 1) * w
        out = y if out is None else out + y
    assert out is not None
    return out[0].permute(1, 2, 0).to(torch.float16).cpu().numpy()


def cached_teacher_sr(
    images: Sequence[np.ndarray],
    teachers: Sequence[nn.Module],
    weights: Sequence[float],
    *,
    device: torch.device,
    cache_dir: Path | None,
    desc: str = "teacher outputs",
) -> list[np.ndarray]:
    """The teachers' SR of every image (uint8 HWC RGB), from ``cache_dir/<key>.npy`` where present."""
    tkey = teachers_key(teachers, weights)
    out, hits = [], 0
    for img in track(images, desc=desc, leave=False):
        path = cache_dir / f"{entry_key(tkey, img)}.npy" if cache_dir is not None else None
        if path is not None and path.is_file():
            out.append(np.load(path))
            hits += 1
            continue
        sr = teacher_sr(teachers, weights, img, device)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npy")
            np.save(tmp, sr)
            tmp.replace(path)  # atomic: a killed run never leaves a truncated entry
        out.append(sr)
    log.info("teacher outputs: %d of %d from the cache %s", hits, len(images), cache_dir)
    return out


def attach_soft_targets(
    pairs: Sequence[Pair],
    teachers: Sequence[nn.Module],
    weights: Sequence[float],
    *,
    device: torch.device,
    cache_dir: Path | None,
) -> None:
    """Fill ``pair.soft`` (the teachers' SR of ``pair.lr``) for every pair."""
    for p, sr in zip(
        pairs,
        cached_teacher_sr([p.lr for p in pairs], teachers, weights, device=device, cache_dir=cache_dir),
        strict=True,
    ):
        p.soft = sr


def zoom_out_pairs(
    hr_images: Sequence[np.ndarray],
    teachers: Sequence[nn.Module],
    weights: Sequence[float],
    *,
    device: torch.device,
    cache_dir: Path | None,
) -> list[Pair]:
    """Teacher-only samples: each HR image is fed to the teacher *as LR*; the pair's ``lr`` is the HR image and
    its ``soft`` the teacher's output. There is no ground truth (``hr`` is a placeholder; ``has_hr`` False in the
    pool), so only a KD student learns from them: detail at a scale the data has no HR for."""
    srs = cached_teacher_sr(hr_images, teachers, weights, device=device, cache_dir=cache_dir, desc="zoom-out")
    return [
        Pair(hr=np.zeros((0, 0, 3), np.uint8), lr=np.asarray(img), soft=sr)
        for img, sr in zip(hr_images, srs, strict=True)
    ]
