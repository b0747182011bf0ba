"""Wall-clock bounds that hold on a loaded machine. A test that needs one ("the 504 comes at the deadline, not
after the stuck batch") states it for an idle machine and stretches it by the CPU contention measured at that
moment, never shrinks it: speed targets belong in the benchmarks, a test only checks that something happened in
time rather than much later."""

from __future__ import annotations

import time

MAX_STRETCH = 10.0


def contention(work_s: float = 0.05) -> float:
    """Wall time over this thread's CPU time for a short busy loop: ~1 with a free core, ~2 when sharing one with
    another busy process (e.g. a training run on a 2-core machine), more under heavier load. Never below 1."""
    wall0, cpu0 = time.perf_counter(), time.thread_time()
    while time.thread_time() - cpu0 < work_s:
        sum(range(1000))
    return max(1.0, (time.perf_counter() - wall0) / max(time.thread_time() - cpu0, 1e-9))


def stretch(seconds: float) -> float:
    """``seconds`` (an idle machine's bound) times the contention now (capped at x10)."""
    return seconds * min(contention(), MAX_STRETCH)
