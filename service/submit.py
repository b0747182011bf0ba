"""The request logic that ``/upscale``, OIP and the web page share, below the routes: decoding counted against the
caps, and one frame (or several) through the batcher, awaited up to the request's deadline.

Failures are domain errors (the batcher's own, :class:`InferenceFailed`, :mod:`vsr.images`' caps); the table in
``service.errors`` answers them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import ParamSpec, TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from service.batcher import Batcher, BatcherClosed, DeadlineExceeded
from service.metrics import Metrics
from vsr.images import ImageOverLimit

P = ParamSpec("P")
T = TypeVar("T")


class InferenceFailed(RuntimeError):
    """The model failed on this request's batch (the worker logged why)."""


async def decode_counted(metrics: Metrics, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn`` (a decoder) in the thread pool; a cap it hits is counted as ``rejected{reason="too_large"}``."""
    return await count_too_large(metrics, run_in_threadpool(fn, *args, **kwargs))


async def count_too_large(metrics: Metrics, decoding: Awaitable[T]) -> T:
    """Await a decoder; an :class:`ImageOverLimit` it raises is counted as ``rejected{reason="too_large"}``."""
    try:
        return await decoding
    except ImageOverLimit:
        metrics.rejected.labels(reason="too_large").inc()
        raise


async def infer(
    batcher: Batcher, frame: np.ndarray, *, model: str, deadline: float, metrics: Metrics, source: str
) -> np.ndarray:
    """Submit one frame and await it. Raises the batcher's ``QueueFull``, ``OverBudget``, ``BatcherClosed``,
    :class:`DeadlineExceeded` (also when the wait outlives ``deadline``), or :class:`InferenceFailed`."""
    future = batcher.submit(frame, model=model, source=source, deadline=deadline)
    try:
        # The worker fails queued work at its deadline; this timeout also covers a worker stuck in a long batch.
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(deadline - time.monotonic(), 0.0))
    except (TimeoutError, DeadlineExceeded):
        if not _failed_by_worker(future):  # the worker counts what it expires; count the rest here
            metrics.rejected.labels(reason="deadline").inc()
        raise DeadlineExceeded("the request did not finish before its deadline") from None
    except BatcherClosed:
        raise
    except Exception:
        raise InferenceFailed("inference failed for this request") from None


async def infer_all(
    batcher: Batcher, frames: np.ndarray, *, model: str, deadline: float, metrics: Metrics, source: str
) -> list[np.ndarray]:
    """Every frame through the batcher at once (same model and shape: they batch together); on the first failure
    the rest are cancelled, so the worker drops them instead of running them for nobody."""
    tasks = [
        asyncio.ensure_future(infer(batcher, f, model=model, deadline=deadline, metrics=metrics, source=source))
        for f in frames
    ]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        raise


def _failed_by_worker(future: Future[np.ndarray]) -> bool:
    return future.done() and not future.cancelled() and isinstance(future.exception(), DeadlineExceeded)
