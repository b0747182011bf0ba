"""``vsr upscale IN OUT``: offline upscaling of an image, a folder of images, or a video file.

Images and videos run on the shared engine (``vsr.engine.Engine``: the service's device, dtype and tiling choices;
tiled with overlap when larger than ``--tile``). Images are read and written by the service's code
(:mod:`vsr.images`): EXIF orientation applied, ICC profile kept, CMYK converted to sRGB, 16 bits reduced to 8;
grayscale images come back grayscale (the model runs on the grey replicated to RGB) and an alpha channel is resized
with bicubic. The output format follows OUT's extension (a folder keeps each file's own).
Videos are handed to :func:`vsr_cli.video.upscale_video_file` (``--tile`` applies to their frames too). A folder
may mix images and videos; files that cannot be read are skipped, listed at the end, and the exit status is 1.
OUT never overwrites its input (not through a symlink or a hard link either); IN and OUT are regular files or folders
(a FIFO would block forever).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from vsr.artifact import ArtifactError
from vsr.engine import DeviceError, Engine
from vsr.errors import UsageError
from vsr.images import (
    SUFFIX_FORMATS,
    DecodedImage,
    ImageError,
    encode,
    format_for_path,
    model_input,
    model_output,
    output_notes,
    read_image,
)
from vsr.planes import Planes
from vsr.progress import track
from vsr.tiling import TileSpec
from vsr.video import VideoError

log = logging.getLogger(__name__)

IMAGE_EXTS = tuple(SUFFIX_FORMATS)
VIDEO_EXTS = (".mp4", ".mkv", ".mov", ".ts", ".webm", ".avi")
TILE_OVERLAP = 16  # LR pixels on each side: covers the student's receptive field (~8 px) with room to spare
QUALITY = 95  # JPEG/WebP: offline, so a little more size for less loss than the service's default (90)


def save_image(sr: np.ndarray | Planes, decoded: DecodedImage, path: Path) -> None:
    """Encode the model's output as ``path``'s extension asks, carrying the input's alpha, grey and ICC profile
    (:mod:`vsr.images`, the service's code too); what the output loses is logged."""
    fmt = format_for_path(path)
    if fmt is None:  # plan() lets only our extensions through
        raise UsageError(f"unsupported output extension {path.suffix!r}; use one of {', '.join(IMAGE_EXTS)}")
    for note in output_notes(decoded, fmt):
        log.warning("%s: %s", path.name, note)
    data = encode(sr, decoded, fmt, quality=QUALITY)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def plan(inp: Path, out: Path) -> list[tuple[Path, Path]]:
    """(source, destination) pairs for IN -> OUT (images and videos); raises :class:`UsageError` on a bad request."""
    if not inp.exists():
        raise UsageError(f"input not found: {inp}")
    if not inp.is_dir() and not inp.is_file():  # a FIFO would block the read forever; a device never ends
        raise UsageError(f"input is not a regular file or a folder: {inp}")
    if inp.is_dir():
        if out.exists() and not out.is_dir():
            raise UsageError(f"input is a folder, so OUT must be a folder: {out}")
        srcs = sorted(p for p in inp.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS + VIDEO_EXTS)
        if not srcs:
            raise UsageError(f"no images ({', '.join(IMAGE_EXTS)}) or videos ({', '.join(VIDEO_EXTS)}) in {inp}")
        jobs = [(p, out / p.name) for p in srcs]
    elif inp.suffix.lower() in VIDEO_EXTS:
        if out.suffix.lower() not in VIDEO_EXTS:
            raise UsageError(f"a video input needs a video OUT ({', '.join(VIDEO_EXTS)}), got {out.name!r}")
        jobs = [(inp, out)]
    elif inp.suffix.lower() in IMAGE_EXTS:
        if out.is_dir() or not out.suffix:
            out = out / inp.name  # an existing folder, or a name without an extension: write inside it
        if out.suffix.lower() not in IMAGE_EXTS:
            raise UsageError(f"unsupported output extension {out.suffix!r}; use one of {', '.join(IMAGE_EXTS)}")
        jobs = [(inp, out)]
    else:
        raise UsageError(
            f"unsupported input {inp.name!r}; images: {', '.join(IMAGE_EXTS)}; videos: {', '.join(VIDEO_EXTS)}"
        )
    for src, dst in jobs:
        _check_destination(src, dst)
    return jobs


def _check_destination(src: Path, dst: Path) -> None:
    """OUT is never the input under another name (the same path, a symlink or a hard link: same device and inode)
    and never a FIFO or device (writing one blocks, or goes somewhere else)."""
    if dst.resolve() == src.resolve() or (dst.exists() and os.path.samefile(src, dst)):
        raise UsageError(f"refusing to overwrite the input {src}; choose another OUT")
    if dst.exists() and not dst.is_file():
        raise UsageError(f"OUT exists and is not a regular file: {dst}")


def _engine(args: argparse.Namespace) -> Engine:
    """The shared engine with the one model asked for (``--device auto``: the service's device and dtype choice)."""
    tiles = TileSpec(tile=max(args.tile, 0), overlap=TILE_OVERLAP)
    try:
        return Engine.open([args.model], device=args.device, dtype=args.dtype, tiles=tiles)
    except (ArtifactError, DeviceError) as e:
        raise UsageError(str(e)) from None


def _upscale_video(engine: Engine, src: Path, dst: Path) -> None:
    """Raises VideoError when ``src`` cannot be read; a partial ``dst`` is removed."""
    from vsr_cli.video import upscale_video_file  # PyAV-backed; imported only for videos

    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        upscale_video_file(src, dst, engine, engine.default_model, progress=True)
    except BaseException:
        dst.unlink(missing_ok=True)
        raise


@dataclass
class Outcome:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)


def run(args: argparse.Namespace) -> Outcome:
    """Do the work of ``vsr upscale``. A single bad input is a :class:`UsageError`; in a folder, a file that cannot
    be read is recorded in ``failed`` and the rest go on."""
    inp, out = Path(args.input), Path(args.output)
    jobs = plan(inp, out)
    engine = _engine(args)
    name, scale = engine.default_model, engine.scale(engine.default_model)
    done = Outcome()

    luma = engine.runner(name).luma

    def up(decoded: DecodedImage, dst: Path) -> np.ndarray | Planes:
        """The model's output: RGB, or for a luma model and a JPEG in and out, the new Y with the decoder's chroma
        (no colour conversion either side: vsr.images.model_input)."""
        x = model_input(decoded, format_for_path(dst) or "", scale, luma=luma)
        return model_output(engine.run(name, x[None])[0], decoded)

    # Decode of the next image and encode of the previous one run in two I/O threads while the model runs (PIL
    # releases the GIL in both): on 2 cores they fill the gaps between the model's parallel regions.
    with ThreadPoolExecutor(1, thread_name_prefix="read") as reader, ThreadPoolExecutor(1, "write") as writer:
        nxt = _prefetch(reader, jobs, 0, luma)
        saves: list[tuple[Path, Future[None]]] = []
        for i, (src, dst) in enumerate(track(jobs, desc=f"upscale x{scale}", unit="file")):
            cur, nxt = nxt, _prefetch(reader, jobs, i + 1, luma)
            try:
                if cur is None:
                    _upscale_video(engine, src, dst)
                else:
                    decoded = cur.result()
                    saves.append((dst, writer.submit(save_image, up(decoded, dst), decoded, dst)))
            except (OSError, ImageError, VideoError) as e:  # unreadable or corrupt input
                if not inp.is_dir():
                    raise UsageError(f"cannot read {src}: {e}") from None
                log.warning("skipped %s: %s", src, e)
                done.failed.append((src, str(e)))
                continue
            while len(saves) > 2:  # bounded: at most two upscaled images wait for their encode
                _saved(*saves.pop(0))
            done.written.append(dst)
        for dst, f in saves:
            _saved(dst, f)
    log.info("wrote %d file(s) to %s", len(done.written), out)
    return done


def _prefetch(
    reader: ThreadPoolExecutor, jobs: list[tuple[Path, Path]], i: int, ycc: bool
) -> Future[DecodedImage] | None:
    """The ``i``-th image, read in the background (None past the end and for videos, which stream themselves);
    ``ycc``: keep a JPEG's YCbCr too (a luma model's input)."""
    if i >= len(jobs) or jobs[i][0].suffix.lower() in VIDEO_EXTS:
        return None
    return reader.submit(partial(read_image, ycc=ycc), jobs[i][0])  # the user's own file: no decode caps


def _saved(dst: Path, f: Future[None]) -> None:
    try:
        f.result()
    except OSError as e:
        raise UsageError(f"cannot write {dst}: {e}") from None


def cmd_upscale(args: argparse.Namespace) -> int:
    """0: everything written; 1: a folder had files that could not be read (listed on stderr); 2: bad request."""
    done = run(args)
    if not done.failed:
        return 0
    lines = [f"error: {len(done.failed)} of {len(done.failed) + len(done.written)} files failed"]
    lines += [f"  {src}: {reason}" for src, reason in done.failed]
    sys.stderr.write("\n".join(lines) + "\n")
    return 1
