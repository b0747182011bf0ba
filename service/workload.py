"""How the one inference worker is shared between sources, and whether it is overloaded.

**Fair share.** Each source (``upload``, ``oip``, ``video``, ``stream:{name}``) has an account of the worker time it
was given; the batcher serves the waiting source with the least (ties: the one that has waited longest), so past
capacity every source gets an equal share of worker *time* — a 4K camera cannot take nine turns of the worker from
720p ones, and a busy source cannot starve a quiet one. A batch's time is split among its frames by pixels. An
account is never behind the least-served waiting source (``vtime``): a source that was idle starts level with the
others instead of with a credit it could spend to starve them.

**Overload.** Over the last ``window_s`` the worker was busy at least ``BUSY_OVER`` of the time *and* most batches
left work waiting: demand is above capacity, so streams drop frames (each keeps only its newest) and uploads may
get 503. A busy worker that keeps up (one camera that fits) is not overloaded.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

WINDOW_S = 10.0
BUSY_OVER = 0.9
BACKLOG_OVER = 0.5


@dataclass(frozen=True)
class WorkerLoad:
    """The last window: worker busy fraction, overload state, and each source's fraction of the worker time."""

    busy: float
    overloaded: bool
    shares: dict[str, float]


@dataclass(frozen=True)
class _Batch:
    end: float
    took: float
    backlog: bool
    seconds: dict[str, float]  # worker time by source


class WorkerShare:
    """The fair-share accounts and the overload window. Thread-safe."""

    def __init__(self, window_s: float = WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.window_s, self.clock = window_s, clock
        self.started = clock()
        self.served: dict[str, float] = {}  # worker seconds per source (the fair-queueing account)
        self.vtime = 0.0
        self._recent: deque[_Batch] = deque()
        self._lock = threading.Lock()

    # ---- scheduling (the batcher, under its own lock) ------------------------------------------------------------

    def arrive(self, source: str) -> None:
        """A source queues work: an idle source comes back level with the least-served waiting one."""
        with self._lock:
            self.served[source] = max(self.served.get(source, self.vtime), self.vtime)

    def order(self, waiting: Iterable[str]) -> list[str]:
        """``waiting`` (in arrival order) by least served first; ties keep arrival order."""
        with self._lock:
            return sorted(waiting, key=lambda s: self.served.get(s, self.vtime))

    def settle(self, waiting: Iterable[str]) -> None:
        """Move ``vtime`` to the least-served waiting source (call it as that source is served, before its queue
        may empty: a camera that keeps one frame in flight must not lose its place each time it has none queued);
        forget idle accounts that are not ahead of it."""
        with self._lock:
            accounts = [self.served.get(s, self.vtime) for s in waiting]
            if accounts:
                self.vtime = max(self.vtime, min(accounts))
            keep = set(waiting)
            for s in [s for s, v in self.served.items() if s not in keep and v <= self.vtime]:
                del self.served[s]

    # ---- accounting (the worker, after each batch) ---------------------------------------------------------------

    def record(self, pixels: dict[str, int], took: float, backlog: bool) -> dict[str, float]:
        """Charge a batch's ``took`` seconds to its sources by ``pixels``; returns the seconds by source."""
        total = sum(pixels.values()) or 1
        seconds = {s: took * p / total for s, p in pixels.items()}
        now = self.clock()
        with self._lock:
            for s, t in seconds.items():
                self.served[s] = self.served.get(s, self.vtime) + t
            self._recent.append(_Batch(now, took, backlog, seconds))
            self._prune(now)
        return seconds

    def load(self) -> WorkerLoad:
        now = self.clock()
        with self._lock:
            self._prune(now)
            batches = list(self._recent)
        span = max(min(self.window_s, now - self.started), 1e-6)
        busy = min(1.0, sum(b.took for b in batches) / span)
        by_source: dict[str, float] = {}
        for b in batches:
            for s, t in b.seconds.items():
                by_source[s] = by_source.get(s, 0.0) + t
        total = sum(by_source.values())
        shares = {s: round(t / total, 4) for s, t in sorted(by_source.items())} if total > 0 else {}
        backlog = sum(b.backlog for b in batches) / len(batches) if batches else 0.0
        return WorkerLoad(round(busy, 4), busy >= BUSY_OVER and backlog >= BACKLOG_OVER, shares)

    def _prune(self, now: float) -> None:
        while self._recent and now - self._recent[0].end >= self.window_s:
            self._recent.popleft()
