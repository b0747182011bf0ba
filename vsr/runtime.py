"""CPU run-time hygiene, applied once at the entry point (``vsr`` CLI) before torch and its OpenMP runtime start.

- **Allocator**: glibc serves blocks above ``M_MMAP_THRESHOLD`` (dynamic, up to 32 MiB) with ``mmap`` and gives them
  back on ``free``; every ~11 MB activation of a 640x360 frame was then faulted back in page by page (~40k minor
  faults per frame at batch 4). Raising the mmap threshold and the trim threshold keeps freed buffers in the heap for
  the next frame. Set with ``mallopt`` through ctypes (effective immediately, also after torch is imported) and
  exported as ``MALLOC_*`` so child processes (``vsr serve`` workers, benchmarks) inherit it.
- **OpenMP**: ``OMP_WAIT_POLICY=PASSIVE`` makes idle OpenMP workers sleep instead of spinning ~200 ms after each
  parallel region, so decode, JPEG encode and HTTP threads get the cores between frames. Only read when libgomp
  initialises, i.e. it must be in the environment before the first torch op: hence the entry point. ``VSR_THREADS``
  (default: all cores) sets torch's intra-op threads.

Any variable the user already set wins. ``bench/README.md`` records what each setting measured.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
# 1 GiB: larger than any activation we allocate (a 1 MP fp32 24-channel map is ~100 MB), so all stay in the heap.
MMAP_THRESHOLD = 1 << 30
TRIM_THRESHOLD = 1 << 32  # effectively never trim the top of the heap
TOP_PAD = 64 << 20  # grow the heap in 64 MiB steps: fewer brk calls while the first frames allocate

ENV_DEFAULTS = {
    "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
    "MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD),
    "MALLOC_TOP_PAD_": str(TOP_PAD),
    "OMP_WAIT_POLICY": "PASSIVE",
}


def keep_malloc_buffers(user_set: frozenset[str] = frozenset()) -> bool:
    """Tell glibc to keep freed large buffers (see the module docstring). False where there is no glibc.

    ``user_set``: the ``MALLOC_*`` variables the user set before start-up (glibc applied those; they are kept).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = True
    for param, env, value in (
        (M_MMAP_THRESHOLD, "MALLOC_MMAP_THRESHOLD_", MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, "MALLOC_TRIM_THRESHOLD_", TRIM_THRESHOLD),
        (M_TOP_PAD, "MALLOC_TOP_PAD_", TOP_PAD),
    ):
        if env in user_set:
            continue  # the user's explicit choice, already applied by glibc at start-up
        # mallopt takes an int: 2^32 does not fit, so the trim threshold is capped at INT_MAX (2 GiB)
        ok = bool(mallopt(param, min(value, 2**31 - 1))) and ok
    return ok


def configure(*, threads: int | None = None) -> dict[str, str]:
    """Apply the allocator and OpenMP settings for this process and its children; returns what was set.

    Call before ``import torch`` has run any op (the CLI's ``main`` does, first thing).
    """
    applied: dict[str, str] = {}
    user_set = frozenset(k for k in ENV_DEFAULTS if k in os.environ)
    for key, value in ENV_DEFAULTS.items():
        if key not in os.environ:
            os.environ[key] = value
            applied[key] = value
    env_threads = os.environ.get("VSR_THREADS", "").strip()
    if threads is None and env_threads.isascii() and env_threads.isdigit():  # '²'.isdigit(), but int('²') fails
        threads = int(env_threads)
    if threads and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = str(threads)
        applied["OMP_NUM_THREADS"] = str(threads)
    applied["mallopt"] = str(keep_malloc_buffers(user_set))
    return applied
