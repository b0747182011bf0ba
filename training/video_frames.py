"""Real camera footage as training images: frames sampled from video files, cached as PNGs on the machine.

A training folder may hold video files (``train/video``) or a folder of one clip's frames (``train/video-frames/*``).
Each clip gives up to ``FRAMES_PER_CLIP`` frames spread evenly over its length; frames larger than ``MAX_SIDE`` are
shrunk with an area filter (a 1080p camera frame carries codec noise at full size; area-averaging keeps the scene's
detail and gives cleaner HR truth). The frames are written once to ``~/.cache/vsr/frames/<clip>-<hash>/``, named
``<clip>@<frame>.png``: the part before ``@`` names the clip, so the held-out slice takes or leaves whole clips (frames
of one clip are near-duplicates; splitting a clip would leak the validation frames into training).

Cost: decoding the 12 shared clips (~4,400 frames) and writing ~300 PNGs takes ~20 s once per machine.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

VIDEO_EXTS = {".mp4", ".avi", ".mkv", ".mov", ".264", ".h264", ".265", ".hevc", ".webm"}
FRAMES_PER_CLIP = 24
MAX_SIDE = 1280
CACHE_VERSION = 1


def clip_name(path: Path) -> str:
    """The clip a training image belongs to: the part of its stem before ``@`` (the stem itself for photos)."""
    return path.stem.split("@", 1)[0]


def cache_root() -> Path:
    base = os.environ.get("VSR_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "vsr")
    return Path(base) / "frames"


def shrink(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    h, w = img.shape[:2]
    if max(h, w) <= MAX_SIDE:
        return img
    f = MAX_SIDE / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BOX))


def decode_all(path: Path) -> Iterator[np.ndarray]:
    import av

    with av.open(str(path)) as box:
        for frame in box.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def _pick(n: int) -> list[int]:
    """Indices of up to FRAMES_PER_CLIP frames spread evenly over ``n`` frames."""
    if n <= FRAMES_PER_CLIP:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, FRAMES_PER_CLIP).round()})


def _source_key(src: Path) -> str:
    h = hashlib.sha1(f"{CACHE_VERSION}|{FRAMES_PER_CLIP}|{MAX_SIDE}|{src.name}".encode())
    files = [src] if src.is_file() else sorted(p for p in src.iterdir() if p.is_file())
    for f in files:
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}".encode())
    return h.hexdigest()[:12]


def clip_frames(src: Path) -> list[Path]:
    """The cached frames of one clip (a video file, or a folder of frame images), extracting them if needed."""
    from PIL import Image

    name = src.stem if src.is_file() else src.name
    out = cache_root() / f"{name}-{_source_key(src)}"
    done = out / ".done"
    if done.is_file():
        return sorted(out.glob("*.png"))
    out.mkdir(parents=True, exist_ok=True)
    if src.is_file():
        frames = list(decode_all(src))  # ≤ ~1,700 small frames; 1080p clips are short
    else:
        frames = [
            np.asarray(Image.open(p).convert("RGB"))
            for p in sorted(src.iterdir())
            if p.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp"}
        ]
    for i in _pick(len(frames)):
        tmp = out / f".{name}@{i:05d}.png.tmp"
        Image.fromarray(shrink(frames[i])).save(tmp, format="PNG", compress_level=1)
        tmp.replace(out / f"{name}@{i:05d}.png")
    done.write_text("ok\n")
    return sorted(out.glob("*.png"))


def is_clip_source(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in VIDEO_EXTS


def folder_clips(folder: Path) -> list[Path]:
    """Clip sources inside ``folder``: its video files, plus its sub-folders when ``folder`` is a frames folder
    (a folder named ``video-frames`` holds one sub-folder of frames per clip)."""
    videos = sorted(p for p in folder.iterdir() if is_clip_source(p))
    if folder.name == "video-frames":
        videos += sorted(p for p in folder.iterdir() if p.is_dir())
    return videos
