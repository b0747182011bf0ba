"""Dynamic batching on one worker thread that owns the engine (and so the model and its device).

Callers (HTTP handlers, stream readers) ``submit`` uint8 RGB HWC frames of a loaded model (``service.modelgate``)
and get a ``concurrent.futures.Future``; async code awaits it with ``asyncio.wrap_future``. The worker loop:

1. waits for the first queued frame — the wait clock of a batch starts at that frame's arrival;
2. gathers frames of the same model *and* shape across ``source`` values, least-served source first and one frame
   each per round (``service.workload``: every source gets an equal share of the worker's time, so one busy source
   cannot starve the others), until ``max_batch_size`` or the clock reaches ``max_batch_delay``;
3. fails frames whose deadline passed (``DeadlineExceeded``) and drops cancelled ones — neither is run;
4. runs the batch; an exception fails only that batch's futures, and the loop goes on.

The queue is bounded: ``submit`` raises ``QueueFull`` at once (HTTP: 503 + Retry-After). A source with nothing queued
always gets one frame in (the limit may be passed by one frame per source): a flood from one source (a large OIP
batch, a video job) cannot fill the queue and keep a camera out, and the fair order then serves that frame soon.

**Memory budget** (``memory_budget_bytes``; the engine's ``frame_bytes(model, shape)`` prices a frame: input,
activations, output): a batch holds as many same-shape frames as fit the budget (at least one), the rest wait for
the next batch; a frame that alone needs more than the budget is refused at ``submit`` (``OverBudget``, HTTP 413);
frames waiting in the queue hold at most a quarter of the budget (else ``QueueFull``). After a batch of more than
``RELEASE_ABOVE_BYTES`` the freed memory is handed back to the OS (``vsr.memory.release_memory``), so a spike does
not stay resident. ``close(drain=True)`` finishes the queued work before the thread exits; ``close(drain=False)``
fails it with ``BatcherClosed``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Collection
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from service.metrics import Metrics
from service.modelgate import ModelGate
from service.workload import WorkerLoad, WorkerShare
from vsr.memory import release_memory

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """The queue is at its limit; try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"inference queue is full; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class OverBudget(ValueError):
    """One frame needs more memory than the whole budget: it can never run here."""


RELEASE_ABOVE_BYTES = 256 * 1024 * 1024  # a batch this large is a spike (a 720p x2 frame is ~80 MB)
QUEUE_SHARE = 4  # queued inputs may hold 1/QUEUE_SHARE of the budget
IDLE_RELEASE_S = 0.5  # after a spike, memory is handed back again once the worker was idle this long


class DeadlineExceeded(Exception):
    """The frame's deadline passed before it could run."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down and takes no more work."""


class SubmitFn(Protocol):
    """The seam callers depend on (``Batcher.submit``): one frame in, a future of its upscaled frame out."""

    def __call__(
        self, frame: np.ndarray, *, model: str, source: str, deadline: float | None = None
    ) -> Future[np.ndarray]: ...


class BatchEngine(Protocol):
    """All the batcher uses of the engine (``frame_bytes``: a frame's bytes in, working, out; asked under a budget)."""

    @property
    def names(self) -> Collection[str]: ...
    def frame_bytes(self, model: str, shape: tuple[int, ...]) -> int: ...
    def run(self, model: str, frames: np.ndarray) -> np.ndarray: ...


@dataclass(eq=False)
class _Item:
    frame: np.ndarray
    model: str
    source: str
    deadline: float | None
    cost: int = 0  # bytes while it runs (the engine's estimate), 0 without a budget
    enqueued: float = field(default_factory=time.monotonic)
    future: Future[np.ndarray] = field(default_factory=Future)

    @property
    def key(self) -> tuple[str, tuple[int, ...]]:
        return self.model, self.frame.shape

    def expired(self, now: float) -> bool:
        return self.deadline is not None and now >= self.deadline


class Batcher:
    """One bounded queue, one worker thread. Thread-safe; ``submit`` never blocks."""

    def __init__(
        self,
        engine: BatchEngine,
        *,
        max_batch_size: int = 8,
        max_batch_delay_s: float = 0.005,
        queue_limit: int = 64,
        metrics: Metrics | None = None,
        on_start: Callable[[], None] | None = None,
        memory_budget_bytes: int | None = None,
    ) -> None:
        """``on_start`` runs first on the worker thread (the engine's warm-up); ``memory_budget_bytes`` None: no budget."""
        self.engine = engine
        self.max_batch_size, self.max_batch_delay_s, self.queue_limit = max_batch_size, max_batch_delay_s, queue_limit
        self.metrics = metrics
        if metrics is not None:
            metrics.queue_limit.set(queue_limit)
        self._on_start = on_start
        self.gate = ModelGate(engine)  # the loaded models, read at every submit (the repository changes them)
        self.budget = memory_budget_bytes
        self._queued_bytes = 0
        self._spiked = self._release_now = False
        self._cond = threading.Condition()
        self._sources: OrderedDict[str, deque[_Item]] = OrderedDict()  # in arrival order (ties of the fair share)
        self.share = WorkerShare()
        self._backlog = False  # work was left waiting when the last batch was taken
        if metrics is not None:
            metrics.overloaded.set_function(lambda: float(self.share.load().overloaded))
        self._size = 0
        self._closing = False
        self._drain = True
        self._batch_s = 0.0  # moving average of batch time, for Retry-After
        self._thread = threading.Thread(target=self._loop, name="vsr-worker", daemon=True)

    # ---- caller side -------------------------------------------------------------------------------------------

    def start(self) -> Batcher:
        self._thread.start()
        return self

    def submit(
        self, frame: np.ndarray, *, model: str, source: str, deadline: float | None = None
    ) -> Future[np.ndarray]:
        """Queue one uint8 HWC frame (RGB; HxWx1: a luma model's Y); ``deadline``: ``time.monotonic()``."""
        if frame.ndim != 3 or frame.shape[2] not in (1, 3) or frame.dtype != np.uint8:
            raise ValueError(f"expected a uint8 HxWx3 (or HxWx1) frame, got {frame.dtype} {frame.shape}")
        self.gate.check(model)
        cost = self.engine.frame_bytes(model, frame.shape) if self.budget else 0
        if self.budget and cost > self.budget:
            self._count_rejected("too_large")
            raise OverBudget(
                f"a {frame.shape[1]}x{frame.shape[0]} frame needs ~{cost >> 20} MiB on {model}, over the memory "
                f"budget of {self.budget >> 20} MiB"
            )
        item = _Item(frame, model, source, deadline, cost)
        with self._cond:
            if self._closing:
                self._count_rejected("shutting_down")
                raise BatcherClosed("the inference worker is shutting down")
            if self.refuses(source, frame.nbytes):
                self._count_rejected("queue_full")
                raise QueueFull(self._retry_after())
            if source not in self._sources:
                self.share.arrive(source)
            self._sources.setdefault(source, deque()).append(item)
            self._size += 1
            self._queued_bytes += frame.nbytes
            self._set_depth()
            self._cond.notify()
        self.gate.track(model, item.future)
        return item.future

    def refuses(self, source: str, nbytes: int = 0) -> bool:
        """Full for this source? One with nothing queued always gets a frame in (past the limit if need be)."""
        if source not in self._sources:
            return self._queue_bytes_full(nbytes)
        return self._queue_bytes_full(nbytes) or self._size >= self.queue_limit

    def load(self) -> WorkerLoad:  # busy fraction, overload state and each source's share, last few seconds
        return self.share.load()

    def qsize(self) -> int:
        with self._cond:
            return self._size

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking work; with ``drain`` finish what is queued, else fail it. Joins the worker."""
        with self._cond:
            self._closing = True
            self._drain = drain
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._fail_all(BatcherClosed("the inference worker stopped"))

    # ---- worker side -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        if self._on_start is not None:
            try:
                self._on_start()
            except Exception:
                log.exception("worker start hook failed")
        while True:
            try:
                batch = self._next_batch()
                if batch is None:
                    break
                if batch:
                    self._run(batch)
            except Exception:  # a bug here must not kill the only worker; callers' deadlines bound the damage
                log.exception("inference worker error; continuing")
        log.info("inference worker stopped")

    def _next_batch(self) -> list[_Item] | None:
        """Wait for and take the next batch ([] when only expired work was found); None when closing."""
        with self._cond:
            batch, expired = self._wait_and_take()
        if self._release_now:
            self._release_now = False
            release_memory()
        self._fail(expired, DeadlineExceeded("deadline passed while queued"), "deadline")
        return batch

    def _wait_and_take(self) -> tuple[list[_Item] | None, list[_Item]]:
        while True:
            expired = self._take_expired(time.monotonic())
            if expired:
                return [], expired
            if self._size == 0:
                if self._closing:
                    return None, []
                if self._spiked and not self._cond.wait(IDLE_RELEASE_S):
                    self._spiked, self._release_now = False, True
                    return [], []
                if not self._spiked:
                    self._cond.wait()
                continue
            if self._closing and not self._drain:
                return None, []
            head = self._sources[self.share.order(self._sources)[0]][0]
            limit = self._batch_limit(head)
            close_at = head.enqueued + self.max_batch_delay_s  # the clock started at the first item
            while not self._closing and self._count(head.key) < limit:
                left = close_at - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return self._take(head.key, limit)

    def _batch_limit(self, head: _Item) -> int:
        """Frames of ``head``'s model and shape in one batch: ``max_batch_size``, fewer when the budget says so
        (frames of one key cost the same)."""
        if not self.budget or head.cost <= 0:
            return self.max_batch_size
        return max(1, min(self.max_batch_size, self.budget // head.cost))

    def _queue_bytes_full(self, nbytes: int) -> bool:
        if not self.budget or self._size == 0:  # an empty queue always takes one frame
            return False
        return self._queued_bytes + nbytes > self.budget // QUEUE_SHARE

    def _count(self, key: tuple[str, tuple[int, ...]]) -> int:
        return sum(1 for q in self._sources.values() for it in q if it.key == key)

    def _take(self, key: tuple[str, tuple[int, ...]], limit: int) -> tuple[list[_Item], list[_Item]]:
        """Up to ``limit`` items of ``key``, least-served source first, one per source per round; returns (batch,
        expired). Locked."""
        now = time.monotonic()
        batch: list[_Item] = []
        expired: list[_Item] = []
        order = self.share.order(self._sources)
        self.share.settle(order)  # before the head leaves: vtime is the account of the source served now
        turns = [self._sources[s] for s in order]
        progress = True
        while progress and len(batch) < limit:
            progress = False
            for q in turns:
                it = next((x for x in q if x.key == key), None)
                if it is None:
                    continue
                q.remove(it)
                progress = True
                if not it.future.set_running_or_notify_cancel():
                    continue  # the caller gave up (cancelled); nothing to run or report
                (expired if it.expired(now) else batch).append(it)
                if len(batch) >= limit:
                    break
        self._prune()
        self._backlog = self._size > 0
        return batch, expired

    def _take_expired(self, now: float) -> list[_Item]:
        """Remove expired or cancelled items anywhere in the queue; returns the expired ones. Locked."""
        expired: list[_Item] = []
        for q in self._sources.values():
            dead = [it for it in q if it.future.cancelled() or it.expired(now)]
            for it in dead:
                q.remove(it)
                if it.future.set_running_or_notify_cancel():
                    expired.append(it)
        if expired or any(not q for q in self._sources.values()):
            self._prune()
        return expired

    def _prune(self) -> None:
        for src in [s for s, q in self._sources.items() if not q]:
            del self._sources[src]
        self._size = sum(len(q) for q in self._sources.values())
        self._queued_bytes = sum(it.frame.nbytes for q in self._sources.values() for it in q)
        self._set_depth()

    def _run(self, batch: list[_Item]) -> None:
        model = batch[0].model
        start = time.monotonic()
        if self.metrics is not None:
            for it in batch:
                self.metrics.queue_wait.observe(start - it.enqueued)
        try:
            frames = np.stack([it.frame for it in batch])
            out = self.engine.run(model, frames)
            if len(out) != len(batch):
                raise RuntimeError(f"engine returned {len(out)} outputs for {len(batch)} inputs")
        except Exception as e:  # one bad batch fails only its own futures; the worker keeps serving
            self._charge(batch, time.monotonic() - start)
            log.exception("batch of %d frames on %s failed", len(batch), model)
            if self.metrics is not None:
                self.metrics.batch_errors.labels(model=model).inc()
            for it in batch:
                it.future.set_exception(e)
            return
        took = time.monotonic() - start
        self._charge(batch, took)
        self._batch_s = took if self._batch_s == 0 else 0.8 * self._batch_s + 0.2 * took
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_compute.observe(took)
            for it in batch:
                self.metrics.frames.labels(source=it.source).inc()
        for it, frame in zip(batch, out, strict=True):
            it.future.set_result(frame)
        del frames, out
        if sum(it.cost for it in batch) > RELEASE_ABOVE_BYTES:
            # A spike: hand its freed pages back (the steady state keeps its buffers) now, and again once the worker
            # is idle — the outputs are still held by their callers (encoding) at this point.
            release_memory()
            self._spiked = True

    # ---- helpers -----------------------------------------------------------------------------------------------

    def _charge(self, batch: list[_Item], took: float) -> None:
        """The batch's worker time goes to its sources' fair-share accounts (by pixels) and to the metrics."""
        pixels: dict[str, int] = {}
        for it in batch:
            pixels[it.source] = pixels.get(it.source, 0) + it.frame.shape[0] * it.frame.shape[1]
        seconds = self.share.record(pixels, took, self._backlog)
        if self.metrics is not None:
            self.metrics.worker_busy.inc(took)
            for source, t in seconds.items():
                self.metrics.worker_seconds.labels(source=source).inc(t)

    def _fail(self, items: list[_Item], exc: Exception, reason: str) -> None:
        """Fail running-state futures outside the lock (their callbacks may call ``submit``)."""
        for it in items:
            self._count_rejected(reason)
            it.future.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        with self._cond:
            items = [it for q in self._sources.values() for it in q]
            self._sources.clear()
            self._prune()
        self._fail([it for it in items if it.future.set_running_or_notify_cancel()], exc, "shutting_down")

    def _retry_after(self) -> int:
        batches = math.ceil(self._size / self.max_batch_size)
        return max(1, math.ceil(batches * self._batch_s))

    def _set_depth(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(self._size)

    def _count_rejected(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.rejected.labels(reason=reason).inc()
