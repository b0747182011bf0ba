"""Memory: what a frame costs to upscale (the batcher's budget is counted in these bytes), the default budget for
this machine, and handing freed memory back to the OS after a spike.

**Cost of one frame** (host or device bytes, an upper bound, checked against measured peaks in
``tests/core/test_memory.py``): the uint8 input and its float copy, the float output of the model, its clamped copy
and the uint8 result, and the live activations — ``LIVE_MAPS`` feature maps of the model's widest layer at the
frame's (or, when tiled, the tile's) resolution. A 3840x2160 frame through the 24-channel x2 student costs ~1.0 GB,
nearly all of it output: the pixel cap alone lets eight such frames batch into 6 GB, which is why the batcher counts
bytes, not frames.

**Giving memory back.** glibc keeps freed heap memory (and ``vsr.runtime`` tells it to keep big buffers, so that
steady-state frames do not fault their activations back in page by page). After an unusually large batch that
memory would stay resident for good (2.6 GB after one peak, measured); :func:`release_memory` calls
``malloc_trim(0)``, which returns the free pages of every arena to the OS (a few ms), so the steady state keeps its
buffers and a spike does not become the new resident size.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import cache
from pathlib import Path

import torch
from torch import nn

LIVE_MAPS = 4  # feature maps alive at once in a conv stack with a skip (input, output, the skip, one temp)
FLOAT_BYTES = 4  # CPU keeps activations in fp32 around bf16 convs; counting 4 bytes stays an upper bound
DEFAULT_BUDGET_CAP = 1536 * 1024 * 1024  # with ~0.4-0.6 GB of process baseline, RSS stays under 2.5 GB
DEFAULT_BUDGET_SHARE = 0.4  # of the memory this process may use (cgroup limit, else physical memory)


def widest_layer(model: nn.Module) -> int:
    """The most channels any conv of ``model`` outputs (the activations' width)."""
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    return max(widths, default=64)


def frame_bytes(h: int, w: int, *, scale: int, channels: int, tile: int = 0, overlap: int = 0) -> int:
    """Upper bound of the bytes one ``h`` x ``w`` frame needs while it is upscaled (see the module docstring)."""
    pixels = h * w
    io = pixels * 3 * (1 + FLOAT_BYTES)  # uint8 in, float copy
    out = pixels * scale * scale * 3 * (2 * FLOAT_BYTES + 1)  # float output, clamped copy, uint8 result
    if tile > 0 and (h > tile or w > tile):
        area = min(h, tile + 2 * overlap) * min(w, tile + 2 * overlap)
        tile_out = area * scale * scale * 3 * FLOAT_BYTES  # each tile's own output before it is copied in
    else:
        area, tile_out = pixels, 0
    return io + out + area * channels * FLOAT_BYTES * LIVE_MAPS + tile_out


def memory_limit_bytes() -> int:
    """What this process may use: the cgroup (container) limit when there is one, else physical memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            return int(text)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def default_budget_bytes() -> int:
    """The batcher's default budget: ``DEFAULT_BUDGET_SHARE`` of :func:`memory_limit_bytes`, at most 1.5 GiB.

    On a CUDA device the budget is the device's memory instead (the host holds only inputs and outputs)."""
    if torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(0).total_memory * 0.6)
    return min(DEFAULT_BUDGET_CAP, int(memory_limit_bytes() * DEFAULT_BUDGET_SHARE))


@cache
def _malloc_trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (e.g. musl): nothing to trim
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


def release_memory() -> bool:
    """Return freed heap pages to the OS (glibc ``malloc_trim(0)``); False where that does not exist."""
    fn = _malloc_trim()
    return bool(fn(0)) if fn is not None else False
