"""One stream: reader -> pump (pending slot -> the shared batcher -> newest output) -> viewers and publisher.

A :class:`Stream` composes collaborators, one job each:

- :class:`service.streams.capture.Capture`: the reader thread (connect, decode, reconnect), which reports to a
  :class:`ReaderSink`;
- :class:`service.streams.pump.Pump`: the pump thread, the pending slot and the in-flight cap (staying live);
- :class:`service.streams.stats.StreamObserver`: the counters, for the API and Prometheus at once;
- :func:`service.streams.info.build_info`: the API's view of those counters;
- :class:`service.streams.publish.Publisher` (optional): the upscaled frames pushed to a media server.

Neither the reader nor the model's worker thread ever waits on this stream (see :mod:`.pump`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Literal

import numpy as np

from service.batcher import SubmitFn
from service.metrics import Metrics
from service.streams.auto import Load
from service.streams.capture import Capture
from service.streams.config import StreamOptions, StreamSpec
from service.streams.info import FramePath, ModelChoice, StreamHead, StreamInfo, build_info
from service.streams.output import FrameBroadcast, Picture
from service.streams.publish import Publisher
from service.streams.pump import Pump, Sent, to_rgb
from service.streams.record import Recorder
from service.streams.stats import StreamObserver, StreamStats
from service.urlpolicy import CheckedUrl, redact
from vsr.frames import Frame
from vsr.planes import Planes, from_video_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamSetup:
    """One stream, as the manager checked it.

    ``src`` None: the URL is checked (and its host resolved) by ``check`` when the reader first connects; ``check``
    also runs before every reconnect. ``publish``: the (checked) media server the upscaled frames are pushed to.
    """

    spec: StreamSpec
    name: str
    model: str
    scale: int
    src: CheckedUrl | None = None
    check: Callable[[], CheckedUrl] | None = None
    publish: CheckedUrl | None = None


def never(model: str) -> bool:
    return False


@dataclass(frozen=True)
class StreamDeps:
    """What every stream of the service shares: the batcher's ``submit``, the metrics, the stream options, and
    which models take a frame's Y from the decoder's planes (luma models, unless turned off: ``VSR_STREAM_PLANES``)."""

    submit: SubmitFn
    metrics: Metrics
    opts: StreamOptions
    takes_y: Callable[[str], bool] = never


class ReaderSink:
    """What the reader thread reports to (:class:`service.streams.capture.CaptureSink`): events go to the
    observer, decoded frames to the pump. Returns at once: the reader never waits on inference."""

    def __init__(self, observer: StreamObserver, pump: Pump) -> None:
        self.observer, self.pump = observer, pump
        self.recorder: Recorder | None = None  # POST /stream/{id}/record: gets every source frame while active

    def set_state(self, state: str, error: str | None = None) -> None:
        self.observer.set_state(state, error)

    def set_source(self, width: int, height: int, fps: float | None) -> None:
        self.observer.set_source(width, height, fps)

    def offer(self, frame: Frame, t_decoded: float) -> None:
        self.observer.frame_in(t_decoded)
        if (rec := self.recorder) is not None:
            rec.offer(frame)  # never blocks
        self.pump.offer(frame, t_decoded)

    def dropped(self, reason: str, n: int = 1) -> None:
        self.observer.dropped(reason, n)

    def reconnected(self) -> None:
        self.observer.reconnected()


class Stream:
    """A running stream: its reader, pump, counters and (optionally) publisher, started and stopped together."""

    def __init__(self, setup: StreamSetup, deps: StreamDeps) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.spec, self.name, self.model, self.scale = setup.spec, setup.name, setup.model, setup.scale
        self.auto, self.model_reason = False, "named by the stream"  # service.streams.auto switches auto streams
        self._switching = threading.Lock()
        self.opts, self._submit, self._takes_y = deps.opts, deps.submit, deps.takes_y
        self.frame_path = FramePath(kind="rgb", reason="no frame sent yet")  # how the last frame went to the model
        self.source = f"stream:{setup.name}"  # its frames' label in the batcher and vsr_frames_total
        self.created = time.time()
        self.head = StreamHead(self.id, self.name, redact(self.spec.url), self.scale, self.spec.transport)
        self.observer = StreamObserver(self.name, self.source, deps.metrics)
        self.output = FrameBroadcast()
        self.pump = Pump(self.name, self._send, self.opts, self.output, self.observer)
        self.sink = ReaderSink(self.observer, self.pump)
        self.capture = Capture(self.name, setup.src, self.spec.transport, self.opts, self.sink, setup.check)
        self.publisher = None if setup.publish is None else self._publisher(setup.publish)

    def _publisher(self, target: CheckedUrl) -> Publisher:
        return Publisher(
            self.name,
            target,
            self.output,
            self.opts.publish.merged(self.spec.publish_options),
            cuda=self.opts.cuda,
            on_sent=self.observer.published,
            on_dropped=partial(self.observer.dropped, "publish"),
        )

    def _send(self, frame: Frame, *, deadline: float) -> Sent:
        """The pump's way to the batcher: the model this stream runs now (``auto`` may switch it between frames),
        given Y from the decoder's planes when it is a luma model and the frame allows (:mod:`vsr.planes`), else
        RGB."""
        model = self.model
        reason = "the model takes RGB"
        if self._takes_y(model):
            planes = "not a decoded video frame" if isinstance(frame, np.ndarray) else from_video_frame(frame)
            if isinstance(planes, Planes):
                self._path("planes", "a luma model: Y straight from the decoder's yuv420p planes")
                return Sent(
                    self._submit(planes.y[..., None], model=model, source=self.source, deadline=deadline), planes
                )
            reason = planes
        self._path("rgb", reason)
        rgb = to_rgb(frame)
        return Sent(self._submit(rgb, model=model, source=self.source, deadline=deadline), rgb)

    def _path(self, kind: Literal["planes", "rgb"], reason: str) -> None:
        if (self.frame_path.kind, self.frame_path.reason) != (kind, reason):  # a new object only when it changes
            self.frame_path = FramePath(kind=kind, reason=reason)

    # -- the model (service.streams.auto.AutoStream) --

    def switch_model(self, model: str, reason: str, *, scale: int | None = None) -> None:
        """The next frame sent goes to ``model`` (frames in flight finish on the old one); no reconnect: the reader,
        its connection, the counters and the viewers stay. ``scale``: the new model's, when it differs."""
        with self._switching:  # one switch at a time (PATCH and the auto chooser); the pump reads self.model per frame
            self.model, self.model_reason = model, reason
            if scale is not None:
                self.scale = self.head.scale = scale
            self.observer.switched_model(model)

    @property
    def recorder(self) -> Recorder | None:
        return self.sink.recorder

    @recorder.setter
    def recorder(self, recorder: Recorder | None) -> None:
        self.sink.recorder = recorder

    def load(self) -> Load:
        s = self.stats
        return Load(None if self.auto else self.model, s.source_height, s.source_width, s.source_fps)

    # -- what the manager and the routes read --

    @property
    def state(self) -> str:
        return self.observer.state

    @property
    def stats(self) -> StreamStats:
        return self.observer.stats

    @property
    def last_source(self) -> Picture | None:
        """The newest frame sent to the model (for ``GET /stream/{id}/source.jpg``; a reference, no copy)."""
        return self.pump.last_source

    def info(self) -> StreamInfo:
        publish = self.publisher.info() if self.publisher is not None else None
        choice = ModelChoice(mode="auto" if self.auto else "named", reason=self.model_reason)
        return build_info(self.head, self.model, choice, self.observer, self.output.latest, publish, self.frame_path)

    # -- lifecycle --

    def start(self) -> None:
        self.pump.start()
        self.capture.start()
        if self.publisher is not None:
            self.publisher.start()

    def stop(self) -> None:
        """Signal every thread; returns at once (see :meth:`join`)."""
        self.capture.stop()
        if self.publisher is not None:
            self.publisher.stop()
        if self.recorder is not None:
            self.recorder.stop()
        self.observer.stop()
        self.pump.stop()
        self.output.close()

    def join(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        joined = self.pump.join(timeout)
        joined = self.capture.join(max(0.0, deadline - time.monotonic())) and joined
        if self.publisher is not None:
            joined = self.publisher.join(max(0.0, deadline - time.monotonic())) and joined
        return joined

    def reap(self, timeout: float) -> None:
        """Wait for the threads to end and for this stream's frames still in the batcher (each one still counts
        ``vsr_frames_total{source=...}`` when it completes), then drop its metric label sets (after :meth:`stop`)."""
        deadline = time.monotonic() + timeout
        if not self.join(timeout):
            log.warning("stream %s: threads still running after %.1f s", self.name, timeout)
        if not self.pump.wait_drained(max(0.0, deadline - time.monotonic())):
            log.warning("stream %s: frames still in the batcher after %.1f s", self.name, timeout)
        self.observer.forget_metrics()
