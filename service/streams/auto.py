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
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger(__name__)

AUTO = "auto"
BUDGET = 1.1  # share of the worker's second the live streams' measured model time may fill (see above)
UPGRADE_MARGIN = 0.9  # a costlier model must fit in this share of the budget to replace a cheaper one
INTERVAL_S = 2.0
DEFAULT_FPS = 30.0  # a source that reports no rate yet

CostFn = Callable[[str, int, int], float | None]  # (model, height, width) -> ms per frame, None = not measured


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
    ) -> None:
        if not candidates:
            raise ValueError("auto needs at least one candidate model")
        self.candidates, self.cost, self.budget_ms = list(candidates), cost, 1000.0 * budget
        self.on_choice = on_choice
        self.choice: Choice | None = None
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
