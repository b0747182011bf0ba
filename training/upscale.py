"""``vsr upscale IN OUT``: offline upscaling of an image, a folder of images, or a video file.

Images go through :func:`vsr.inference.upscale_frames` (tiled with overlap when larger than ``--tile``). Colour is
upscaled by the model; grayscale images come back grayscale (the model runs on the grey replicated to RGB) and an
alpha channel is resized with bicubic. The output format follows OUT's extension (a folder keeps each file's own).
Videos are handed to :func:`vsr.video.upscale_video_file`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from tqdm import tqdm

from vsr.artifact import ArtifactError, load_artifact
from vsr.imageops import bicubic_resize
from vsr.inference import TileSpec, upscale_frames

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".ts", ".webm", ".avi")
TILE_OVERLAP = 16  # LR pixels on each side: covers the student's receptive field (~8 px) with room to spare
_PIL_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
_NO_ALPHA = {"JPEG", "BMP"}


class UsageError(Exception):
    """A user mistake (missing input, unsupported extension): reported as ``error: ...`` with exit status 2."""


@dataclass(frozen=True)
class Upscaler:
    """A loaded model and how to run it: the one thing every image passes through."""

    model: nn.Module
    scale: int
    device: torch.device
    dtype: torch.dtype
    tiles: TileSpec

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        return upscale_frames(self.model, rgb, scale=self.scale, device=self.device, dtype=self.dtype, tiles=self.tiles)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked for, but CUDA is not available")
    return torch.device(name)


def upscale_image(img: Image.Image, up: Upscaler) -> Image.Image:
    """Upscale a PIL image of any common mode; grayscale stays grayscale, alpha is resized with bicubic."""
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    gray = img.mode in ("L", "LA", "1", "I", "I;16", "F")
    if img.mode in ("I", "I;16", "F"):  # 16-bit/float grey: PIL's convert clips; this tool works in 8 bits
        img = Image.fromarray(np.clip(np.asarray(img, dtype=np.float64) / 256.0, 0, 255).astype(np.uint8))
    rgba = img.convert("RGBA") if has_alpha else img.convert("RGB")
    arr = np.asarray(rgba)
    sr = up(np.ascontiguousarray(arr[..., :3]))
    out = Image.fromarray(sr)
    if gray:
        out = out.convert("L")
    if has_alpha:
        h, w = sr.shape[:2]
        alpha = Image.fromarray(bicubic_resize(np.ascontiguousarray(arr[..., 3]), (w, h)))
        out = out.convert("LA" if gray else "RGBA")
        out.putalpha(alpha)
    return out


def save_image(img: Image.Image, path: Path) -> None:
    fmt = _PIL_FORMAT[path.suffix.lower()]
    if fmt in _NO_ALPHA and img.mode in ("RGBA", "LA"):
        log.warning("%s: %s has no alpha channel; alpha dropped", path.name, fmt)
        img = img.convert("L" if img.mode == "LA" else "RGB")
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))


def plan(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    """(source, destination) image pairs for IN -> OUT; raises :class:`UsageError` on a bad request."""
    if not inp.exists():
        raise UsageError(f"input not found: {inp}")
    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise UsageError(f"input is a folder, so OUT must be a folder: {out}")
        srcs = sorted(p for p in inp.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
        if not srcs:
            raise UsageError(f"no images ({', '.join(IMAGE_EXTS)}) in {inp}")
        return [(p, out / p.name) for p in srcs]
    if inp.suffix.lower() not in IMAGE_EXTS:
        raise UsageError(
            f"unsupported input {inp.name!r}; images: {', '.join(IMAGE_EXTS)}; videos: {', '.join(VIDEO_EXTS)}"
        )
    if out.is_dir() or not out.suffix:
        out = out / inp.name  # an existing folder, or a name without an extension: write inside it
    if out.suffix.lower() not in IMAGE_EXTS:
        raise UsageError(f"unsupported output extension {out.suffix!r}; use one of {', '.join(IMAGE_EXTS)}")
    return [(inp, out)]


def _load(args: argparse.Namespace) -> tuple[nn.Module, int, torch.device]:
    device = pick_device(args.device)
    try:
        model, meta = load_artifact(args.model, device=device)
    except ArtifactError as e:
        raise UsageError(str(e)) from None
    return model, meta.scale, device


def _upscale_video(args: argparse.Namespace, inp: Path, out: Path) -> None:
    if out.suffix.lower() not in VIDEO_EXTS:
        raise UsageError(f"a video input needs a video OUT ({', '.join(VIDEO_EXTS)}), got {out.name!r}")
    from vsr.video import upscale_video_file  # PyAV-backed; imported only for videos

    model, scale, device = _load(args)
    upscale_video_file(inp, out, model, scale, device, progress=True)


def run(args: argparse.Namespace) -> list[Path]:
    """Do the work of ``vsr upscale``; returns the files written."""
    inp, out = Path(args.input), Path(args.output)
    if inp.is_file() and inp.suffix.lower() in VIDEO_EXTS:
        _upscale_video(args, inp, out)
        return [out]
    jobs = plan(inp, out)
    model, scale, device = _load(args)
    # fp32 on CPU (exact, and the offline tool has no frame budget); fp16 on CUDA like the service.
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        model = model.half()
    up = Upscaler(model, scale, device, dtype, TileSpec(tile=max(args.tile, 0), overlap=TILE_OVERLAP))
    written = []
    for src, dst in tqdm(jobs, desc=f"upscale x{scale}", unit="img"):
        try:
            with Image.open(src) as im:
                im.load()
                result = upscale_image(im, up)
        except OSError as e:
            raise UsageError(f"cannot read {src}: {e}") from None
        save_image(result, dst)
        written.append(dst)
    log.info("wrote %d file(s) to %s", len(written), out)
    return written


def cmd_upscale(args: argparse.Namespace) -> int:
    try:
        run(args)
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0
