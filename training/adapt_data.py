"""A site's footage as adaptation data (``vsr adapt``): frames sampled from each clip, the last part held back.

- **Reading** (bounded memory): each clip's frames are counted from its packets (no decode), then at most
  ``frames`` of them, spread evenly over the clip, are decoded and kept (shrunk to ``MAX_SIDE``). The last
  ``holdout`` share of those is the clip's held-back part; the model is chosen on it, never trained on it.
- **Training pairs**: the HR truth is the frame; its clean LR the bicubic downscale (the teacher's input); the
  student's inputs are that LR and its H.264 round trips at several CRFs, the training frames of a clip encoded as
  one clip, so the codec's inter-frame artefacts are the ones a camera stream shows (``training.camera``).
- **Scoring**: held-back frames downscaled, then through libx264 at a CRF, upscaled; mean PSNR-Y (``scale``
  border cropped) — the same for the base and the adapted model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from training.camera import codec_roundtrip
from training.data import Pair
from training.metrics import psnr_y
from training.video_frames import VIDEO_EXTS
from vsr.imageops import downscale

MAX_SIDE = 1280  # larger frames are area-shrunk (less codec noise in the HR truth, bounded memory)
Teacher = Callable[[np.ndarray], np.ndarray]  # clean LR (uint8 HWC) -> SR (float16 HWC in [0, 1])
Upscale = Callable[[np.ndarray], np.ndarray]


class NoFootage(ValueError):
    """No readable video in the clips folder (or none long enough to hold frames back)."""


@dataclass
class SiteClip:
    name: str
    train: np.ndarray  # T x H x W x 3 uint8 (H, W multiples of 2*scale)
    held: np.ndarray  # the held-back frames, same size
    total_frames: int  # frames in the file


def video_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTS)


def _count(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for p in c.demux(video=0) if p.size)


def _shrink(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return img
    f = MAX_SIDE / max(h, w)
    return np.asarray(Image.fromarray(img).resize((round(w * f), round(h * f)), Image.Resampling.BOX))


def read_clip(path: Path, *, frames: int, holdout: float, scale: int) -> SiteClip:
    """Up to ``frames`` frames spread evenly over the clip; the last ``holdout`` share of them held back."""
    total = _count(path)
    if total < 2:
        raise NoFootage(f"{path.name}: {total} frame(s); at least 2 are needed (one to train, one held back)")
    n = min(frames, total)
    want = sorted({round(i * (total - 1) / max(n - 1, 1)) for i in range(n)})
    keep, out = set(want), []
    with av.open(str(path)) as c:
        for i, frame in enumerate(c.decode(video=0)):
            if i in keep:
                out.append(_shrink(frame.to_ndarray(format="rgb24")))
            if i >= want[-1]:
                break
    m = 2 * scale  # even LR sizes for 4:2:0
    h, w = (min(f.shape[0] for f in out) // m) * m, (min(f.shape[1] for f in out) // m) * m
    clip = np.stack([f[:h, :w] for f in out])
    n_held = min(max(1, math.ceil(len(clip) * holdout)), len(clip) - 1)
    return SiteClip(path.stem, clip[:-n_held], clip[-n_held:], total)


def read_site(folder: Path, *, frames: int, holdout: float, scale: int) -> list[SiteClip]:
    files = video_files(folder)
    if not files:
        raise NoFootage(f"no video files in {folder} (looked for {', '.join(sorted(VIDEO_EXTS))})")
    return [read_clip(p, frames=frames, holdout=holdout, scale=scale) for p in files]


def label(
    clips: Sequence[SiteClip], teacher: Teacher, scale: int, *, stop: Callable[[], bool]
) -> list[list[np.ndarray]]:
    """The teacher's SR of each clip's training frames (clean LR), clip by clip, frame by frame, until ``stop()``:
    a clip's list may come back short (only labelled frames are trained on)."""
    out: list[list[np.ndarray]] = [[] for _ in clips]
    order = [(i, t) for t in range(max(len(c.train) for c in clips)) for i, c in enumerate(clips) if t < len(c.train)]
    for i, t in order:  # round-robin over clips: a cut-off leaves every clip some labelled frames
        if stop():
            break
        out[i].append(teacher(downscale(clips[i].train[t], scale)))
    return out


def training_pairs(
    clips: Sequence[SiteClip], scale: int, crfs: Sequence[int], soft: Sequence[Sequence[np.ndarray]] | None = None
) -> list[Pair]:
    """HR frame, and as inputs its clean LR and its H.264 round trips at ``crfs``; with ``soft``, only the frames
    the teacher labelled (each pair carries its frame's label)."""
    pairs: list[Pair] = []
    for i, c in enumerate(clips):
        n = len(soft[i]) if soft is not None else len(c.train)
        if n == 0:
            continue
        hr = c.train[:n]
        clean = np.stack([downscale(f, scale) for f in hr])
        inputs = [clean] + [codec_roundtrip(clean, codec="h264", crf=crf, preset="veryfast") for crf in crfs]
        for t in range(n):
            label_t = soft[i][t] if soft is not None else None
            pairs += [Pair(hr=hr[t], lr=lr[t], soft=label_t) for lr in inputs]
    return pairs


def held_back_inputs(clips: Sequence[SiteClip], scale: int, crf: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per clip: (its held-back HR frames, their LR through libx264 at ``crf``)."""
    out = []
    for c in clips:
        lr = np.stack([downscale(f, scale) for f in c.held])
        out.append((c.held, codec_roundtrip(lr, codec="h264", crf=crf, preset="veryfast")))
    return out


def score(upscale: Upscale, inputs: Sequence[tuple[np.ndarray, np.ndarray]], scale: int) -> float:
    """Mean PSNR-Y over every held-back frame of every clip."""
    values = [psnr_y(upscale(lr), hr, border=scale) for hrs, lrs in inputs for hr, lr in zip(hrs, lrs, strict=True)]
    return float(np.mean(values))
