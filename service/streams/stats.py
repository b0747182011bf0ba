"""One stream's counters: what the API reports (:class:`StreamStats`) and what Prometheus scrapes, written together
by one observer so that the two never disagree.

Every event of a stream (a frame decoded, upscaled, dropped; a state change; a reconnect) goes through
:class:`StreamObserver`, from the reader, the pump and the publisher threads. Once the stream is stopping the
observer stops writing Prometheus (its label sets are about to be removed; a late write would bring them back).

Drop reasons: ``queue_full`` (replaced while pending), ``overloaded`` (the batcher's queue was full), ``stale``,
``decode_error``, ``late`` (an older result arrived after a newer one was shown), ``error`` (inference failed),
``publish`` (the publisher was busy).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from dataclasses import dataclass, field

from service.metrics import Metrics
from service.streams.capture import STATES
from vsr.redact import redact_text

DROP_REASONS = ("queue_full", "overloaded", "stale", "decode_error", "late", "error", "publish")


class RateMeter:
    """Events per second over the last ``window`` seconds (for the API; Prometheus computes its own rates)."""

    def __init__(self, window: float = 2.0) -> None:
        self.window = window
        self.times: deque[float] = deque(maxlen=1024)

    def tick(self, t: float) -> None:
        self.times.append(t)

    def rate(self, now: float) -> float:
        while self.times and now - self.times[0] > self.window:
            self.times.popleft()
        n = len(self.times)
        if n < 2:
            return 0.0
        return (n - 1) / max(self.times[-1] - self.times[0], 1e-6)


@dataclass
class StreamStats:
    frames_in: int = 0
    frames_out: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(DROP_REASONS, 0))
    reconnects: int = 0
    last_error: str | None = None
    source_width: int | None = None
    source_height: int | None = None
    source_fps: float | None = None
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=512))
    in_rate: RateMeter = field(default_factory=RateMeter)
    out_rate: RateMeter = field(default_factory=RateMeter)


class StreamObserver:
    """Records one stream's events into its :class:`StreamStats` and the service's :class:`Metrics`.

    ``source`` is the stream's label in the batcher (``vsr_frames_total{source=...}``), removed with the rest.
    """

    def __init__(self, name: str, source: str, metrics: Metrics) -> None:
        self.name, self.source, self.metrics = name, source, metrics
        self.stats = StreamStats()
        self.state = "connecting"
        self.model: str | None = None  # the model label set in vsr_stream_model (see :meth:`switched_model`)
        self._stopping = threading.Event()
        self._drop_lock = threading.Lock()  # drops come from the reader, the pump and the publisher thread
        self._set_state_metric("connecting")

    def _live(self) -> Metrics | None:
        """The metrics while the stream runs; None once it is stopping (its label sets are being removed)."""
        return None if self._stopping.is_set() else self.metrics

    def stop(self) -> None:
        self._stopping.set()

    # -- events --

    def set_state(self, state: str, error: str | None = None) -> None:
        if self._stopping.is_set() and state != "stopped":
            return
        self.state = state
        if error is not None:
            self.stats.last_error = redact_text(error)  # shown by GET /stream: no URL credentials
        self._set_state_metric(state)

    def set_source(self, width: int, height: int, fps: float | None) -> None:
        s = self.stats
        s.source_width, s.source_height, s.source_fps = width, height, fps

    def frame_in(self, t_decoded: float) -> None:
        self.stats.frames_in += 1
        self.stats.in_rate.tick(t_decoded)
        if (m := self._live()) is not None:
            m.stream_frames.labels(stream=self.name, direction="in").inc()

    def frame_out(self, now: float, latency: float) -> None:
        s = self.stats
        s.frames_out += 1
        s.out_rate.tick(now)
        s.latencies.append(latency)
        if (m := self._live()) is not None:
            m.stream_frames.labels(stream=self.name, direction="out").inc()
            m.stream_latency.labels(stream=self.name).observe(latency)

    def published(self, n: int) -> None:
        if (m := self._live()) is not None:
            m.stream_frames.labels(stream=self.name, direction="published").inc(n)

    def dropped(self, reason: str, n: int = 1) -> None:
        with self._drop_lock:
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + n
        if (m := self._live()) is not None:
            m.stream_dropped.labels(stream=self.name, reason=reason).inc(n)

    def failed(self, reason: str, error: str) -> None:
        """A frame that could not be upscaled: dropped for ``reason``, and the error kept for the API."""
        self.dropped(reason)
        self.stats.last_error = error

    def switched_model(self, model: str) -> None:
        """The stream runs ``model`` now: ``vsr_stream_model{stream, model}`` = 1, the old model's label set gone."""
        old, self.model = self.model, model
        if old is not None and old != model:
            with contextlib.suppress(KeyError):
                self.metrics.stream_model.remove(self.name, old)
        if (m := self._live()) is not None:
            m.stream_model.labels(stream=self.name, model=model).set(1)

    def reconnected(self) -> None:
        self.stats.reconnects += 1
        if (m := self._live()) is not None:
            m.stream_reconnects.labels(stream=self.name).inc()

    # -- Prometheus label sets --

    def _set_state_metric(self, state: str) -> None:
        if self._stopping.is_set():
            return
        for st in STATES:
            self.metrics.stream_state.labels(stream=self.name, state=st).set(1 if st == state else 0)

    def forget_metrics(self) -> None:
        """Remove this stream's label sets (keeps the ``stream`` label bounded by the live streams)."""
        m = self.metrics
        for metric, labelsets in (
            (m.stream_frames, [(self.name, d) for d in ("in", "out", "published")]),
            (m.stream_dropped, [(self.name, r) for r in self.stats.dropped]),
            (m.stream_state, [(self.name, st) for st in STATES]),
            (m.stream_reconnects, [(self.name,)]),
            (m.stream_latency, [(self.name,)]),
            (m.stream_model, [(self.name, self.model)] if self.model is not None else []),
            (m.frames, [(self.source,)]),
            (m.worker_seconds, [(self.source,)]),
        ):
            for labels in labelsets:
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)
