"""One stream: reader -> a one-frame pending slot -> the shared batcher -> (JPEG, only while watched) -> viewers.

Staying live: at most ``max_pending`` frames of this stream are in the batcher; a newer decoded frame waits in a
one-frame slot and replaces an older one there (the replaced frame counts as dropped ``queue_full``). Frames older
than ``max_frame_age_s`` are not upscaled (``stale``); the batcher gets the same age as its deadline. Only the
pump thread (``stream:{name}``) talks to the batcher; the batcher's completion callbacks only record the result and
wake the pump, so neither the reader nor the model's worker thread ever waits on this stream.

Drop reasons: ``queue_full`` (replaced while pending), ``overloaded`` (the batcher's queue was full), ``stale``,
``decode_error``, ``late`` (an older result arrived after a newer one was shown), ``error`` (inference failed).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import cast

import numpy as np

from service.batcher import DeadlineExceeded, QueueFull, SubmitFn
from service.metrics import Metrics
from service.streams.auto import Load
from service.streams.capture import STATES, Capture
from service.streams.config import StreamOptions, StreamSpec
from service.streams.info import (
    DROP_REASONS,
    Latency,
    ModelChoice,
    OutputInfo,
    PublishInfo,
    SourceInfo,
    StreamInfo,
    StreamState,
)
from service.streams.output import EncodedFrame, FrameBroadcast, encode_jpeg
from service.streams.publish import Publisher
from service.urlpolicy import CheckedUrl, redact
from vsr.frames import Frame

log = logging.getLogger(__name__)


def to_rgb(frame: Frame) -> np.ndarray:
    """The one frame format of every boundary: uint8 RGB HWC (converted here, only for frames sent to the model)."""
    return frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")


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


@dataclass
class _Pending:
    frame: Frame | None  # converted to RGB only when sent; None once sent (its buffers go back to the decoder)
    t_decoded: float
    seq: int


class Stream:
    """A running stream. ``submit`` is the batcher's ``submit``; ``metrics`` the service's :class:`Metrics`."""

    def __init__(
        self,
        spec: StreamSpec,
        src: CheckedUrl | None,
        *,
        name: str,
        model: str,
        scale: int,
        submit: SubmitFn,
        metrics: Metrics,
        opts: StreamOptions,
        check: Callable[[], CheckedUrl] | None = None,
        publish: CheckedUrl | None = None,
    ) -> None:
        """``src`` None: the URL is checked (and its host resolved) by ``check`` when the reader first connects.
        ``publish``: the (checked) media server the upscaled frames are pushed to, in their own thread."""
        self.id = uuid.uuid4().hex[:12]
        self.spec, self.src, self.name, self.model, self.scale = spec, src, name, model, scale
        self.auto, self.model_reason = False, "named by the stream"  # service.streams.auto switches auto streams
        self.source = f"stream:{name}"  # its frames' label in the batcher and vsr_frames_total
        self.opts, self._submit, self.metrics = opts, submit, metrics
        self.state = "connecting"
        self.created = time.time()
        self.stats = StreamStats()
        self.output = FrameBroadcast()
        self._cond = threading.Condition()
        self._drop_lock = threading.Lock()
        self._slot: _Pending | None = None
        self._inflight = 0
        self._done: list[tuple[Future[np.ndarray], _Pending]] = []
        self._seq = 0
        self._last_shown = 0
        self._stop = threading.Event()
        self.capture = Capture(name, src, spec.transport, opts, self, check)
        self._pump = threading.Thread(target=self._pump_loop, name=f"stream:{name}", daemon=True)
        self.publisher = None if publish is None else self._publisher(publish)
        self.last_source: np.ndarray | None = None
        self._set_state_metric("connecting")

    # -- lifecycle --

    def _publisher(self, target: CheckedUrl) -> Publisher:
        def sent(n: int) -> None:
            if (m := self._live_metrics()) is not None:
                m.stream_frames.labels(stream=self.name, direction="published").inc(n)

        opts = self.opts.publish.merged(self.spec.publish_options)
        return Publisher(
            self.name,
            target,
            self.output,
            opts,
            cuda=self.opts.cuda,
            on_sent=sent,
            on_dropped=partial(self.dropped, "publish"),
        )

    def start(self) -> None:
        self._pump.start()
        self.capture.start()
        if self.publisher is not None:
            self.publisher.start()

    def stop(self) -> None:
        """Signal both threads; returns at once (see :meth:`join`)."""
        self.capture.stop()
        if self.publisher is not None:
            self.publisher.stop()
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self.output.close()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if self._pump.ident is not None:
            self._pump.join(max(0.0, deadline - time.monotonic()))
        joined = self.capture.join(max(0.0, deadline - time.monotonic())) and not self._pump.is_alive()
        if self.publisher is not None:
            joined = self.publisher.join(max(0.0, deadline - time.monotonic())) and joined
        return joined

    def switch_model(self, model: str, reason: str) -> None:
        """The next frame sent goes to ``model`` (frames in flight finish on the old one); no reconnect."""
        old, self.model, self.model_reason = self.model, model, reason
        if old != model:
            with contextlib.suppress(KeyError):
                self.metrics.stream_model.remove(self.name, old)
        if (m := self._live_metrics()) is not None:
            m.stream_model.labels(stream=self.name, model=model).set(1)

    def load(self) -> Load:
        s = self.stats
        return Load(None if self.auto else self.model, s.source_height, s.source_width, s.source_fps)

    # -- CaptureSink (called on the reader thread) --

    def set_state(self, state: str, error: str | None = None) -> None:
        if self._stop.is_set() and state != "stopped":
            return
        self.state = state
        if error is not None:
            self.stats.last_error = error
        self._set_state_metric(state)

    def set_source(self, width: int, height: int, fps: float | None) -> None:
        s = self.stats
        s.source_width, s.source_height, s.source_fps = width, height, fps

    def offer(self, frame: Frame, t_decoded: float) -> None:
        self.stats.frames_in += 1
        self.stats.in_rate.tick(t_decoded)
        if (m := self._live_metrics()) is not None:
            m.stream_frames.labels(stream=self.name, direction="in").inc()
        with self._cond:
            self._seq += 1
            if self._slot is not None:
                self.dropped("queue_full")
            self._slot = _Pending(frame, t_decoded, self._seq)
            self._cond.notify()

    def dropped(self, reason: str, n: int = 1) -> None:
        with self._drop_lock:  # called from the reader and the pump thread
            self.stats.dropped[reason] = self.stats.dropped.get(reason, 0) + n
        if (m := self._live_metrics()) is not None:
            m.stream_dropped.labels(stream=self.name, reason=reason).inc(n)

    def reconnected(self) -> None:
        self.stats.reconnects += 1
        if (m := self._live_metrics()) is not None:
            m.stream_reconnects.labels(stream=self.name).inc()

    # -- the pump thread --

    def _pump_loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                self._cond.wait_for(self._has_work, timeout=0.5)
                todo = None
                if self._slot is not None and self._inflight < self.opts.max_pending:
                    todo, self._slot = self._slot, None
                    self._inflight += 1
                done, self._done = self._done, []
            if todo is not None:
                self._send(todo)
            for fut, item in done:
                self._finish(fut, item)

    def _has_work(self) -> bool:
        return (
            self._stop.is_set()
            or bool(self._done)
            or (self._slot is not None and self._inflight < self.opts.max_pending)
        )

    def _send(self, item: _Pending) -> None:
        deadline = item.t_decoded + self.opts.max_frame_age_s
        if time.monotonic() >= deadline:
            self._release()
            self.dropped("stale")
            return
        assert item.frame is not None  # sent once
        try:
            rgb = to_rgb(item.frame)
            item.frame = None  # the decoded frame's buffers go back to the decoder now
            self.last_source = rgb  # for GET /stream/{id}/source.jpg (a reference: no copy, no encode)
            fut = self._submit(rgb, model=self.model, source=self.source, deadline=deadline)
        except QueueFull:
            self._release()
            self.dropped("overloaded")
            return
        except Exception as e:  # noqa: BLE001 - e.g. shutting down: count it, keep the stream alive
            self._release()
            self.dropped("error")
            self.stats.last_error = f"inference: {type(e).__name__}: {e}"
            return
        fut.add_done_callback(partial(self._on_done, item=item))

    def _release(self) -> None:
        with self._cond:
            self._inflight -= 1

    def _on_done(self, fut: Future[np.ndarray], *, item: _Pending) -> None:
        # Runs on the batcher's worker thread: record and wake the pump, nothing else.
        with self._cond:
            self._inflight -= 1
            self._done.append((fut, item))
            self._cond.notify()

    def _finish(self, fut: Future[np.ndarray], item: _Pending) -> None:
        try:
            out = fut.result()
        except DeadlineExceeded:
            self.dropped("stale")
            return
        except Exception as e:  # noqa: BLE001
            self.dropped("error")
            self.stats.last_error = f"inference: {type(e).__name__}: {e}"
            return
        if item.seq <= self._last_shown:
            self.dropped("late")
            return
        self._last_shown = item.seq
        now = time.monotonic()
        frame = EncodedFrame.lazy(item.seq, out, partial(encode_jpeg, quality=self.opts.jpeg_quality), now)
        if self.output.viewers:
            frame.jpeg  # noqa: B018 - encode here, once for every viewer, off the event loop
        self.output.publish(frame)
        latency = now - item.t_decoded
        s = self.stats
        s.frames_out += 1
        s.out_rate.tick(now)
        s.latencies.append(latency)
        if (m := self._live_metrics()) is not None:
            m.stream_frames.labels(stream=self.name, direction="out").inc()
            m.stream_latency.labels(stream=self.name).observe(latency)

    # -- reporting --

    def _live_metrics(self) -> Metrics | None:
        """The metrics while the stream runs; None once it is stopping (its label sets are being removed)."""
        return None if self._stop.is_set() else self.metrics

    def _set_state_metric(self, state: str) -> None:
        if self._stop.is_set():
            return
        for st in STATES:
            self.metrics.stream_state.labels(stream=self.name, state=st).set(1 if st == state else 0)

    def reap(self, timeout: float) -> None:
        """Wait for the threads to end and for this stream's frames still in the batcher (each one still counts
        ``vsr_frames_total{source=...}`` when it completes), then drop its metric label sets (after :meth:`stop`)."""
        deadline = time.monotonic() + timeout
        if not self.join(timeout):
            log.warning("stream %s: threads still running after %.1f s", self.name, timeout)
        with self._cond:
            if not self._cond.wait_for(lambda: self._inflight <= 0, max(0.0, deadline - time.monotonic())):
                log.warning("stream %s: frames still in the batcher after %.1f s", self.name, timeout)
        self.forget_metrics()

    def forget_metrics(self) -> None:
        """Remove this stream's label sets (keeps the ``stream`` label bounded by the live streams)."""
        for metric, labelsets in (
            (self.metrics.stream_frames, [(self.name, d) for d in ("in", "out", "published")]),
            (self.metrics.stream_dropped, [(self.name, r) for r in self.stats.dropped]),
            (self.metrics.stream_state, [(self.name, st) for st in STATES]),
            (self.metrics.stream_reconnects, [(self.name,)]),
            (self.metrics.stream_latency, [(self.name,)]),
            (self.metrics.stream_model, [(self.name, self.model)]),
            (self.metrics.frames, [(self.source,)]),
            (self.metrics.worker_seconds, [(self.source,)]),
        ):
            for labels in labelsets:
                with contextlib.suppress(KeyError):
                    metric.remove(*labels)

    def info(self) -> StreamInfo:
        s, now = self.stats, time.monotonic()
        lat = sorted(s.latencies)

        def pct(q: float) -> float | None:
            return round(lat[min(len(lat) - 1, int(q * len(lat)))], 4) if lat else None

        latest = self.output.latest
        return StreamInfo(
            id=self.id,
            name=self.name,
            url=redact(self.spec.url),
            model=self.model,
            model_choice=ModelChoice(mode="auto" if self.auto else "named", reason=self.model_reason),
            scale=self.scale,
            transport=self.spec.transport,
            state=cast(StreamState, self.state),  # one of capture.STATES, set by the reader
            source=SourceInfo(width=s.source_width, height=s.source_height, fps=s.source_fps),
            output=OutputInfo(
                width=latest.width if latest else None,
                height=latest.height if latest else None,
                fps=round(s.out_rate.rate(now), 2),
            ),
            input_fps=round(s.in_rate.rate(now), 2),
            frames_in=s.frames_in,
            frames_out=s.frames_out,
            dropped=dict(s.dropped),
            reconnects=s.reconnects,
            last_error=s.last_error,
            latency_seconds=Latency(p50=pct(0.5), p90=pct(0.9), p99=pct(0.99)),
            publish=PublishInfo(**self.publisher.info()) if self.publisher is not None else None,
            mjpeg_url=f"/stream/{self.id}/mjpeg",
            frame_url=f"/stream/{self.id}/frame.jpg",
        )
