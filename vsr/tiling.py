"""Tiles chosen by pixel count and memory, not by width.

A frame runs whole when its pixels fit the device's budget (CPU: ~1 MP, so 1280x720 input is one call; CUDA: 1080p,
or less when free memory says so). Larger frames are cut into the fewest near-equal tiles that fit, each with an
``overlap`` margin (LR pixels) on every side; only each tile's core is kept, so seams equal the whole-frame result
wherever the receptive field fits in the margin (the student's is 7 px; 16 is the default).
The old rule (512-px square tiles) cut a 640-wide frame in two and paid the margin twice for nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

CPU_MAX_PIXELS = 1_050_000  # ~1 MP: 1280x720 (0.92 MP) untiled; activations ~100 MB per 24-channel fp32 map
CUDA_MAX_PIXELS = 1920 * 1088  # 1080p untiled on CUDA
DEFAULT_OVERLAP = 16


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


def run_tiled(fn: Callable[[np.ndarray], np.ndarray], frames: np.ndarray, grid: TileGrid, scale: int) -> np.ndarray:
    """Apply ``fn`` (uint8 NHWC -> uint8 NHWC, ``scale`` x) tile by tile; the result equals the untiled one."""
    if not grid.tiled:
        return fn(frames)
    n, h, w, c = frames.shape
    out = np.empty((n, h * scale, w * scale, c), np.uint8)
    m = grid.overlap
    for y0, y1 in _spans(h, grid.rows):
        for x0, x1 in _spans(w, grid.cols):
            py0, py1, px0, px1 = max(y0 - m, 0), min(y1 + m, h), max(x0 - m, 0), min(x1 + m, w)
            sr = fn(np.ascontiguousarray(frames[:, py0:py1, px0:px1]))
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[
                :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
    return out
