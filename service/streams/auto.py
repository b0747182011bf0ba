"""The stream model ``auto``: the best camera model whose measured cost fits the frame budget of all live streams.

One worker runs every stream's frames, so the budget is shared: a stream of ``fps`` frames per second at ``h x w``
costs ``fps x ms_per_frame(model, h, w)`` ms of worker time per second; all streams together must stay within the
worker's second times the budget share (:data:`BUDGET`, ``VSR_STREAM_BUDGET``). Streams that
name a model keep it and their cost is counted first; the streams on ``auto`` all get the best candidate that fits
(candidates are the loaded camera models, best first), or the cheapest one when none does.

The cost is the runner's measured ms per megapixel (``vsr.runner.Cost``: the load-time probe, then a moving average
of the frames it ran). Re-decided when a stream starts or stops and every :data:`INTERVAL_S` (sources report their
size and rate once connected; costs move with load); switching is one attribute of the stream, so viewers and the
source connection never notice. A more expensive model is only taken back when it fits with
:data:`UPGRADE_MARGIN` to spare, so a budget near the edge does not flip models on every decision.

A candidate that ``auto`` stopped running is measured no more, and the figure it left may have been taken under a
load that is gone (or on another frame size). So while the streams run a cheaper model, the candidate one better is
re-timed on one frame of the streams' size every :data:`PROBE_AFTER_S` (:meth:`AutoModel.probe`; the runner's cost
restarts its average after a gap): one frame in 10 s, under 1 % of the worker's time for 640x360 cameras
(~45 ms a frame for x2-camera-fast here), and the way back up.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

AUTO = "auto"
BUDGET = 1.1  # share of the worker's second the live streams' measured model time may fill (see above)
UPGRADE_MARGIN = 0.9  # a costlier model must fit in this share of the budget to replace a cheaper one
INTERVAL_S = 2.0
PROBE_AFTER_S = 10.0  # re-time an idle better candidate whose cost is older than this
DEFAULT_FPS = 30.0  # a source that reports no rate yet

CostFn = Callable[[str, int, int], float | None]  # (model, height, width) -> ms per frame, None = not measured
AgeFn = Callable[[str], float]  # model -> seconds since its cost was last measured


@dataclass(frozen=True)
class Load:
    """What one stream asks of the worker: its model (None: auto), frame size and rate (None: not known yet)."""

    model: str | None
    height: int | None
    width: int | None
    fps: float | None

    def ms_per_s(self, model: str, cost: CostFn) -> float:
        if self.height is None or self.width is None:
            return 0.0  # not connected yet: counted once it reports its size
        ms = cost(model, self.height, self.width)
        return 0.0 if ms is None else (self.fps or DEFAULT_FPS) * ms


@dataclass(frozen=True)
class Choice:
    model: str
    reason: str
    load: float  # share of the budget the live streams fill with this choice (1.0 = exactly full)


def choose(
    candidates: Sequence[str], loads: Sequence[Load], cost: CostFn, *, budget_ms: float, current: str | None = None
) -> Choice:
    """The first of ``candidates`` (best first) with which every stream fits ``budget_ms`` per second."""
    fixed = sum(ld.ms_per_s(ld.model, cost) for ld in loads if ld.model is not None)
    auto = [ld for ld in loads if ld.model is None]
    rank = {m: i for i, m in enumerate(candidates)}
    for m in candidates:
        total = fixed + sum(ld.ms_per_s(m, cost) for ld in auto)
        upgrade = current is not None and current in rank and rank[m] < rank[current]
        limit = budget_ms * (UPGRADE_MARGIN if upgrade else 1.0)
        if total <= limit:
            why = f"best camera model that fits: {total:.0f} of {budget_ms:.0f} ms of worker time per second"
            return Choice(m, why, round(total / budget_ms, 3))
    m = candidates[-1]
    total = fixed + sum(ld.ms_per_s(m, cost) for ld in auto)
    why = f"no camera model fits ({total:.0f} of {budget_ms:.0f} ms per second with the cheapest): cheapest"
    return Choice(m, why, round(total / budget_ms, 3))


class AutoStream(Protocol):
    """What the chooser reads and sets on a stream (``service.streams.pipeline.Stream``)."""

    name: str
    auto: bool
    model: str

    def load(self) -> Load: ...

    def switch_model(self, model: str, reason: str) -> None: ...


class AutoModel:
    """Decides the model of the ``auto`` streams; :meth:`decide` is called by the manager (add, remove, timer)."""

    def __init__(
        self,
        candidates: Sequence[str],
        cost: CostFn,
        *,
        budget: float = BUDGET,
        on_choice: Callable[[Choice], None] | None = None,
        age: AgeFn | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``age``: how old each model's cost figure is (without it, idle candidates are never re-timed)."""
        if not candidates:
            raise ValueError("auto needs at least one candidate model")
        self.candidates, self.cost, self.budget_ms = list(candidates), cost, 1000.0 * budget
        self.on_choice, self.age, self._clock = on_choice, age, clock
        self.choice: Choice | None = None
        self._probed: dict[str, float] = {}  # model -> when a probe frame was last asked for
        self._lock = threading.Lock()

    def decide(self, streams: Sequence[AutoStream]) -> Choice:
        with self._lock:  # the timer thread and add/remove on request threads
            loads = [s.load() for s in streams]
            current = self.choice.model if self.choice else None
            choice = choose(self.candidates, loads, self.cost, budget_ms=self.budget_ms, current=current)
            if current != choice.model:
                log.info("stream model auto: %s (%s)", choice.model, choice.reason)
            self.choice = choice
            for s in streams:
                if s.auto:
                    s.switch_model(choice.model, choice.reason)
        if self.on_choice is not None:
            self.on_choice(choice)
        return choice

    def probe(self, streams: Sequence[AutoStream]) -> tuple[str, int, int] | None:
        """The idle candidate to re-time now and the frame size to time it on (the largest live ``auto`` stream's):
        the one just better than the current choice, when its cost and its last probe are older than
        :data:`PROBE_AFTER_S`; None when there is nothing to re-time."""
        with self._lock:
            if self.age is None or self.choice is None or self.choice.model not in self.candidates:
                return None
            rank = self.candidates.index(self.choice.model)
            if rank == 0:
                return None  # the best candidate runs: its figure is fresh
            better, now = self.candidates[rank - 1], self._clock()
            if self.age(better) < PROBE_AFTER_S or now - self._probed.get(better, -math.inf) < PROBE_AFTER_S:
                return None
            sizes = [(ld.height, ld.width) for ld in (s.load() for s in streams if s.auto) if ld.height and ld.width]
            if not sizes:
                return None
            self._probed[better] = now
            h, w = max(sizes, key=lambda hw: hw[0] * hw[1])
            return better, h, w
