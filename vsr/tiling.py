"""The one tiler: tiles chosen by pixel count and memory, not by width, for every caller.

A frame runs whole when its pixels fit the budget (the device's by default — CPU: ~1 MP, so 1280x720 input is one
call; CUDA: 1080p, or less when free memory says so; a :class:`TileSpec` with ``tile`` N > 0: N*N pixels, margins
included). Larger frames are cut into the fewest near-equal tiles that fit (:func:`plan_grid`), each with an
``overlap`` margin (LR pixels) on every side; only each tile's core is kept (:func:`run_tiled`), so seams equal the
whole-frame result wherever the receptive field fits in the margin (the student's is 7 px; 16 is the default).
The old rule (512-px square tiles) cut a 640-wide frame in two and paid the margin twice for nothing.

Callers: the engine and the CLI's ``--tile`` (through :class:`vsr.runner.FrameRunner`, uint8 NHWC arrays, also on
CUDA), the reference path (:func:`vsr.inference.upscale_frames`, float NCHW tensors) and the teachers' soft targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

CPU_MAX_PIXELS = 1_050_000  # ~1 MP: 1280x720 (0.92 MP) untiled; activations ~100 MB per 24-channel fp32 map
CUDA_MAX_PIXELS = 1920 * 1088  # 1080p untiled on CUDA
DEFAULT_OVERLAP = 16


@dataclass(frozen=True)
class TileSpec:
    """What a caller asks for: ``tile`` N > 0 caps one call at N*N LR pixels (margins included; 0 = the caller's
    default), ``overlap`` is the margin in LR pixels on each side of a tile."""

    tile: int = 0
    overlap: int = DEFAULT_OVERLAP

    @property
    def budget(self) -> int | None:
        return self.tile * self.tile if self.tile > 0 else None


@dataclass(frozen=True)
class TileGrid:
    """``rows`` x ``cols`` tiles with ``overlap`` LR pixels of margin; 1 x 1 means untiled."""

    rows: int = 1
    cols: int = 1
    overlap: int = DEFAULT_OVERLAP

    @property
    def tiled(self) -> bool:
        return self.rows * self.cols > 1


def max_pixels(device: torch.device, *, bytes_per_pixel: int = 0) -> int:
    """The largest LR frame (pixels x batch) run in one call on ``device``.

    ``bytes_per_pixel``: the model's working memory per LR pixel (two activation maps + output); on CUDA the budget
    is also capped at half the free memory so that a batch and the allocator's slack fit.
    """
    if device.type != "cuda":
        return CPU_MAX_PIXELS
    limit = CUDA_MAX_PIXELS
    if bytes_per_pixel > 0 and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        limit = min(limit, max(free // 2 // bytes_per_pixel, 64 * 64))
    return limit


def plan_grid(height: int, width: int, *, budget: int, overlap: int = DEFAULT_OVERLAP, batch: int = 1) -> TileGrid:
    """The fewest tiles (then the squarest) whose padded size times ``batch`` fits ``budget`` pixels."""
    if height * width * batch <= budget:
        return TileGrid(1, 1, overlap)
    per_tile = max(budget // max(batch, 1), 1)
    best: tuple[int, int] | None = None
    for rows in range(1, height + 1):
        if best is not None and rows > best[0] * best[1]:
            break  # more rows can only mean more tiles
        core_w = per_tile // (math.ceil(height / rows) + 2 * overlap) - 2 * overlap
        if core_w < 1:
            continue
        cols = math.ceil(width / core_w)
        if best is None or rows * cols < best[0] * best[1]:
            best = (rows, cols)
    rows, cols = best or (height, width)
    return TileGrid(rows, cols, overlap)


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    edges = [round(i * n / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if b > a]


Frames = TypeVar("Frames", np.ndarray, torch.Tensor)


def _window(x: Frames, ys: slice, xs: slice) -> tuple[slice, ...]:
    """The index of rows ``ys`` and columns ``xs``: numpy frames are NHWC, tensors NCHW (the model's layout)."""
    return (slice(None), slice(None), ys, xs) if isinstance(x, torch.Tensor) else (slice(None), ys, xs, slice(None))


def _empty(like: Frames, n: int, h: int, w: int) -> Frames:
    if isinstance(like, torch.Tensor):
        return like.new_empty((n, like.shape[1], h, w))
    return np.empty((n, h, w, like.shape[3]), like.dtype)


def run_tiled(fn: Callable[[Frames], Frames], frames: Frames, grid: TileGrid, scale: int, align: int = 1) -> Frames:
    """Apply ``fn`` (``scale`` x larger out) tile by tile; the result equals the untiled one wherever the receptive
    field fits in the margin. ``frames``: uint8 NHWC numpy frames, or float NCHW tensors. ``align``: each tile
    starts on a multiple of it (a space-to-depth model, :func:`model_alignment`, sees the frame's own grid)."""
    if not grid.tiled:
        return fn(frames)
    nchw = isinstance(frames, torch.Tensor)
    n, h, w = (frames.shape[0], *frames.shape[2:4]) if nchw else frames.shape[:3]
    out: Frames | None = None
    m = grid.overlap
    for y0, y1 in _spans(h, grid.rows):
        for x0, x1 in _spans(w, grid.cols):
            py0, py1, px0, px1 = max(y0 - m, 0), min(y1 + m, h), max(x0 - m, 0), min(x1 + m, w)
            py0, px0 = py0 - py0 % align, px0 - px0 % align
            tile = frames[_window(frames, slice(py0, py1), slice(px0, px1))]
            if isinstance(tile, np.ndarray):
                tile = np.ascontiguousarray(tile)  # a kernel reads a plain buffer
            sr = fn(tile)
            if out is None:
                out = _empty(sr, n, h * scale, w * scale)
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            core = sr[_window(sr, slice(oy, oy + (y1 - y0) * scale), slice(ox, ox + (x1 - x0) * scale))]
            out[_window(out, slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))] = core
    assert out is not None  # a tiled grid has at least two tiles
    return out


def model_alignment(model: object) -> int:
    """The multiple a tile must start on for ``model`` (its largest space-to-depth factor; 1 for most nets)."""
    modules = model.modules() if isinstance(model, torch.nn.Module) else []
    return max((int(getattr(m, "unshuffle", 1)) for m in modules), default=1)
