"""``vsr upscale IN OUT``: offline upscaling of an image, a folder of images, or a video file.

Images and videos run on the shared engine (``vsr.engine.Engine``: the service's device, dtype and tiling choices;
tiled with overlap when larger than ``--tile``). Colour is
upscaled by the model; grayscale images come back grayscale (the model runs on the grey replicated to RGB) and an
alpha channel is resized with bicubic. The output format follows OUT's extension (a folder keeps each file's own).
Videos are handed to :func:`vsr_cli.video.upscale_video_file`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from vsr.artifact import ArtifactError
from vsr.engine import DeviceError, Engine
from vsr.imageops import bicubic_resize
from vsr.inference import TileSpec

log = logging.getLogger(__name__)

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".ts", ".webm", ".avi")
TILE_OVERLAP = 16  # LR pixels on each side: covers the student's receptive field (~8 px) with room to spare
_PIL_FORMAT = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}
_SAVE_OPTIONS: dict[str, dict[str, object]] = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
_NO_ALPHA = {"JPEG", "BMP"}


class UsageError(Exception):
    """A user mistake (missing input, unsupported extension): reported as ``error: ...`` with exit status 2."""


UpscaleFn = Callable[[np.ndarray], np.ndarray]  # uint8 RGB HWC -> uint8 RGB HWC, ``scale`` times larger


def upscale_image(img: Image.Image, up: UpscaleFn) -> Image.Image:
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


def _engine(args: argparse.Namespace) -> Engine:
    """The shared engine with the one model asked for (``--device auto``: the service's device and dtype choice)."""
    tiles = TileSpec(tile=max(args.tile, 0), overlap=TILE_OVERLAP)
    try:
        return Engine.open([args.model], device=args.device, tiles=tiles)
    except (ArtifactError, DeviceError) as e:
        raise UsageError(str(e)) from None


def _upscale_video(args: argparse.Namespace, inp: Path, out: Path) -> None:
    if out.suffix.lower() not in VIDEO_EXTS:
        raise UsageError(f"a video input needs a video OUT ({', '.join(VIDEO_EXTS)}), got {out.name!r}")
    from vsr_cli.video import upscale_video_file  # PyAV-backed; imported only for videos

    engine = _engine(args)
    upscale_video_file(inp, out, engine, engine.default_model, progress=True)


def run(args: argparse.Namespace) -> list[Path]:
    """Do the work of ``vsr upscale``; returns the files written."""
    inp, out = Path(args.input), Path(args.output)
    if inp.is_file() and inp.suffix.lower() in VIDEO_EXTS:
        _upscale_video(args, inp, out)
        return [out]
    jobs = plan(inp, out)
    engine = _engine(args)
    name, scale = engine.default_model, engine.scale(engine.default_model)

    def up(rgb: np.ndarray) -> np.ndarray:
        return engine.run(name, rgb[None])[0]

    written = []
    # Decode of the next image and encode of the previous one run in two I/O threads while the model runs (PIL
    # releases the GIL in both): on 2 cores they fill the gaps between the model's parallel regions.
    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, ThreadPoolExecutor(1, "write") as writer:
        nxt = reader.submit(_read, jobs[0][0])
        saves: list[Future[None]] = []
        for i, (_src, dst) in enumerate(tqdm(jobs, desc=f"upscale x{scale}", unit="img")):
            im = nxt.result()
            if i + 1 < len(jobs):
                nxt = reader.submit(_read, jobs[i + 1][0])
            result = upscale_image(im, up)
            saves.append(writer.submit(save_image, result, dst))
            while len(saves) > 2:  # bounded: at most two upscaled images wait for their encode
                saves.pop(0).result()
            written.append(dst)
        for f in saves:
            f.result()
    log.info("wrote %d file(s) to %s", len(written), out)
    return written


def _read(src: Path) -> Image.Image:
    try:
        im = Image.open(src)
        im.load()  # reads the pixels and closes the file (single-frame formats); the image stays usable
        return im
    except OSError as e:
        raise UsageError(f"cannot read {src}: {e}") from None


def cmd_upscale(args: argparse.Namespace) -> int:
    try:
        run(args)
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0
