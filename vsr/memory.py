"""Memory: what a frame costs to upscale (the batcher's budget is counted in these bytes), the default budget for
this machine, and handing freed memory back to the OS after a spike.

**Cost of one frame** (host or device bytes, an upper bound, checked against a measured peak in
``tests/reliability/test_memory_budget.py``): the uint8 input, the uint8 output and one copy of it, and the working
set of the model call — ``LIVE_MAPS`` fp32 feature maps of the widest layer plus slack per LR pixel, for at most the
runner's pixels per call (larger frames are tiled). A 3840x2160 frame through the 24-channel x2 student costs
~0.4 GB, two thirds of it output: the pixel cap alone lets eight such frames into one batch, which is why the
batcher counts bytes, not frames.

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

LIVE_MAPS = 2  # fp32 maps of the widest layer per LR pixel of a call (a conv's input and output)
WORK_SLACK = 64  # bytes per LR pixel of the call: the float input, the last conv's 3*s*s maps, the shuffle
FLOAT_BYTES = 4  # CPU keeps activations in fp32 around bf16 convs; counting 4 bytes stays an upper bound
DEFAULT_BUDGET_CAP = 1536 * 1024 * 1024  # with ~0.4-0.6 GB of process baseline, RSS stays under 2.5 GB
DEFAULT_BUDGET_SHARE = 0.4  # of the memory this process may use (cgroup limit, else physical memory)


def widest_layer(model: nn.Module) -> int:
    """The most channels any conv of ``model`` outputs (the activations' width)."""
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    return max(widths, default=64)


def frame_bytes(h: int, w: int, *, scale: int, channels: int, work_pixels: int) -> int:
    """Upper bound of the bytes one ``h`` x ``w`` frame needs while it is upscaled (see the module docstring).

    ``work_pixels``: the most LR pixels the runner feeds the model in one call (``FrameRunner.pixel_budget``); a
    larger frame runs in tiles of that size, so its activations never exceed that many pixels' worth."""
    pixels = h * w
    io = pixels * 3 * (1 + 2 * scale * scale)  # uint8 in; uint8 result and one copy of it (tiles, stacking)
    work = min(pixels, work_pixels) * (LIVE_MAPS * channels * FLOAT_BYTES + WORK_SLACK)
    return io + work


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
