"""The pump of one stream: a one-frame pending slot -> the shared batcher -> the newest output for viewers.

Staying live: at most ``max_pending`` frames of this stream are in the batcher; a newer decoded frame waits in a
one-frame slot and replaces an older one there (the replaced frame counts as dropped ``queue_full``). Frames older
than ``max_frame_age_s`` are not upscaled (``stale``); the batcher gets the same age as its deadline. Only the
pump thread (``stream:{name}``) talks to the batcher; the batcher's completion callbacks only record the result and
wake the pump, so neither the reader nor the model's worker thread ever waits on this stream.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple, Protocol

import numpy as np

from service.batcher import DeadlineExceeded, QueueFull
from service.streams.config import StreamOptions
from service.streams.output import EncodedFrame, FrameBroadcast, Picture, encode_jpeg
from service.streams.stats import StreamObserver
from vsr.frames import Frame
from vsr.planes import Planes


class Sent(NamedTuple):
    """A frame handed to the batcher: its future, and the frame as sent (RGB, or planes whose Y was sent)."""

    future: Future[np.ndarray]
    source: Picture


class SendFn(Protocol):
    """The batcher's ``submit`` with this stream's model and source bound: one decoded frame in (converted to what
    the model takes: RGB, or a luma model's Y from the decoder's planes), its future out."""

    def __call__(self, frame: Frame, *, deadline: float) -> Sent: ...


def to_rgb(frame: Frame) -> np.ndarray:
    """The one frame format of every boundary: uint8 RGB HWC (converted here, only for frames sent to the model)."""
    return frame if isinstance(frame, np.ndarray) else frame.to_ndarray(format="rgb24")


def finished(source: Picture, out: np.ndarray) -> Picture:
    """The model's output as a frame: RGB as it came, or the new Y with the source planes' chroma upscaled."""
    return source.upscaled(out) if isinstance(source, Planes) else out


@dataclass
class Pending:
    frame: Frame | None  # converted only when sent; None once sent (its buffers go back to the decoder)
    t_decoded: float
    seq: int
    source: Picture | None = None  # the frame as sent (what the output is built on for planes)


class Pump:
    """The thread between a stream's reader and the batcher. ``send(frame, deadline=...)`` submits one frame."""

    def __init__(
        self, name: str, send: SendFn, opts: StreamOptions, output: FrameBroadcast, observer: StreamObserver
    ) -> None:
        self.send, self.opts, self.output, self.observer = send, opts, output, observer
        self.last_source: Picture | None = None  # the newest frame sent (GET /stream/{id}/source.jpg)
        self._cond = threading.Condition()
        self._slot: Pending | None = None
        self._inflight = 0
        self._done: list[tuple[Future[np.ndarray], Pending]] = []
        self._seq = 0
        self._last_shown = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=f"stream:{name}", daemon=True)

    # -- lifecycle --

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def join(self, timeout: float) -> bool:
        if self.thread.ident is not None:
            self.thread.join(timeout)
        return not self.thread.is_alive()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until none of this stream's frames is in the batcher (each still counts when it completes)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._inflight <= 0, timeout)

    # -- the reader's side: never waits --

    def offer(self, frame: Frame, t_decoded: float) -> None:
        with self._cond:
            self._seq += 1
            if self._slot is not None:
                self.observer.dropped("queue_full")
            self._slot = Pending(frame, t_decoded, self._seq)
            self._cond.notify()

    # -- the pump thread --

    def _loop(self) -> None:
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

    def _send(self, item: Pending) -> None:
        deadline = item.t_decoded + self.opts.max_frame_age_s
        if time.monotonic() >= deadline:
            self._release()
            self.observer.dropped("stale")
            return
        assert item.frame is not None  # sent once
        try:
            fut, item.source = self.send(item.frame, deadline=deadline)
            item.frame = None  # the decoded frame's buffers go back to the decoder now
            self.last_source = item.source  # a reference: no copy, no encode
        except QueueFull:
            self._release()
            self.observer.dropped("overloaded")
            return
        except Exception as e:  # noqa: BLE001 - e.g. shutting down: count it, keep the stream alive
            self._release()
            self.observer.failed("error", f"inference: {type(e).__name__}: {e}")
            return
        fut.add_done_callback(partial(self._on_done, item=item))

    def _release(self) -> None:
        with self._cond:
            self._inflight -= 1
            self._cond.notify_all()

    def _on_done(self, fut: Future[np.ndarray], *, item: Pending) -> None:
        # Runs on the batcher's worker thread: record and wake the pump, nothing else.
        with self._cond:
            self._inflight -= 1
            self._done.append((fut, item))
            self._cond.notify_all()

    def _finish(self, fut: Future[np.ndarray], item: Pending) -> None:
        try:
            out = fut.result()
        except DeadlineExceeded:
            self.observer.dropped("stale")
            return
        except Exception as e:  # noqa: BLE001
            self.observer.failed("error", f"inference: {type(e).__name__}: {e}")
            return
        if item.seq <= self._last_shown:
            self.observer.dropped("late")
            return
        self._last_shown = item.seq
        assert item.source is not None  # set when sent
        try:
            picture = finished(item.source, out)
        except ValueError as e:  # an output that does not fit its source (a model switched mid-flight): skip it
            self.observer.failed("error", f"output: {e}")
            return
        now = time.monotonic()
        frame = EncodedFrame.lazy(item.seq, picture, partial(encode_jpeg, quality=self.opts.jpeg_quality), now)
        if self.output.viewers:
            frame.jpeg  # noqa: B018 - encode here, once for every viewer, off the event loop
        self.output.publish(frame)
        self.observer.frame_out(now, now - item.t_decoded)
