"""The reader thread of one stream: connect with PyAV, decode, offer frames; reconnect on loss.

Frames are offered as decoded ``av.VideoFrame`` (or uint8 RGB HWC arrays): the conversion to RGB, which costs more
than decoding, happens only for frames that are actually sent to the model (in the stream's pipeline), never for dropped ones.

It never waits on inference: :meth:`CaptureSink.offer` must return at once. Every loop checks the stop event; a
blocked network read returns within ``read_timeout_s`` (PyAV's interrupt callback), so stopping takes at most that.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Protocol

import av

from service.streams.config import StreamOptions
from service.urlpolicy import CheckedUrl, UnresolvableHost, UrlRejected
from vsr.frames import CapExceeded, Frame, FrameCaps, FrameCounter, demux_frames
from vsr.redact import redact_text

log = logging.getLogger(__name__)

STATES = ("connecting", "live", "backoff", "failed", "stopped")


class CaptureSink(Protocol):
    def set_state(self, state: str, error: str | None = None) -> None: ...
    def set_source(self, width: int, height: int, fps: float | None) -> None: ...
    def offer(self, frame: Frame, t_decoded: float) -> None: ...
    def dropped(self, reason: str, n: int = 1) -> None: ...
    def reconnected(self) -> None: ...


class SourceEnded(Exception):
    """The source reached its end (a file, or a server that closed the stream)."""


def backoff_delay(attempt: int, opts: StreamOptions, rng: random.Random) -> float:
    """Exponential backoff with jitter: ``min(max, base * 2**(attempt-1))`` scaled by a factor in [0.5, 1]."""
    cap = min(opts.backoff_max_s, opts.backoff_base_s * (2.0 ** max(attempt - 1, 0)))
    return cap * rng.uniform(0.5, 1.0)


def av_options(src: CheckedUrl, transport: str, opts: StreamOptions) -> dict[str, str]:
    """Demuxer/protocol options for ``av.open``: the policy's whitelist plus timeouts and low-latency flags."""
    o = dict(src.options)
    us = str(int(opts.read_timeout_s * 1_000_000))
    if src.scheme in ("rtsp", "rtsps"):
        o.update(rtsp_transport=transport, timeout=us, fflags="nobuffer", max_delay="500000")
    elif src.scheme in ("http", "https"):
        o.update(rw_timeout=us, fflags="nobuffer")
    return o


class Capture:
    """One reader thread (``capture:{name}``). States: connecting, live, backoff, failed, stopped."""

    def __init__(
        self,
        name: str,
        src: CheckedUrl | None,
        transport: str,
        opts: StreamOptions,
        sink: CaptureSink,
        check: Callable[[], CheckedUrl] | None = None,
    ) -> None:
        """``src`` is the checked URL for the first connect (None: call ``check()`` first, e.g. a configured camera
        whose name does not resolve yet). Every reconnect calls ``check()`` again — resolve and check once per
        connection, then connect to exactly that address — so a camera that moved (DHCP, a restarted container)
        is found again, and an address that became denied is not used."""
        self.name, self.src, self.transport, self.opts, self.sink = name, src, transport, opts, sink
        self.check = check
        self._recheck = src is None
        self.stop_event = threading.Event()
        self._rng = random.Random()
        self.thread = threading.Thread(target=self._run, name=f"capture:{name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> bool:
        if self.thread.ident is None:  # never started
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _run(self) -> None:
        attempt, looping = 0, False
        while not self.stop_event.is_set():
            if not looping:
                self.sink.set_state("connecting")
            looping = False
            try:
                got_frames = self._session()
                error = "source ended"
            except SourceEnded as e:
                got_frames, error = bool(e.args and e.args[0]), "source ended"
            except UrlRejected as e:
                if not isinstance(e, UnresolvableHost):  # denied by the policy: retrying cannot help
                    self.sink.set_state("failed", e.message)
                    return
                got_frames, error = False, e.message
            except CapExceeded as e:  # the camera sends frames over the pixel cap: reconnecting gets the same
                self.sink.set_state("failed", f"frames over the service's cap: {e}")
                log.warning("stream %s failed: %s", self.name, e)
                return
            except Exception as e:  # noqa: BLE001 - any failure of the source means: reconnect
                got_frames, error = getattr(e, "got_frames", False), self._describe(e)
            if self.stop_event.is_set():
                break
            if self.src is not None and self.src.scheme == "file" and error == "source ended" and got_frames:
                looping = True  # a file plays in a loop, like a camera that never stops
                continue
            attempt = 1 if got_frames else attempt + 1
            if self.opts.max_attempts and attempt >= self.opts.max_attempts and not got_frames:
                self.sink.set_state("failed", error)
                log.warning("stream %s failed after %d attempts: %s", self.name, attempt, error)
                return
            delay = backoff_delay(attempt, self.opts, self._rng)
            self.sink.set_state("backoff", error)
            log.info("stream %s lost (%s); retrying in %.2fs", self.name, error, delay)
            if self.stop_event.wait(delay):
                break
            self.sink.reconnected()
        self.sink.set_state("stopped")

    def _describe(self, e: Exception) -> str:
        """The error for the API and logs, without the URL's credentials (FFmpeg's messages quote the URL)."""
        text = f"{type(e).__name__}: {e}"
        if self.src is not None:
            for secret in {self.src.connect_url, self.src.url}:
                text = text.replace(secret, self.src.redacted)
        return redact_text(text)  # any other URL FFmpeg quotes (a redirect target, the address it connected to)

    def _session(self) -> bool:
        """Connect and read until the source ends or fails. Returns whether any frame was decoded."""
        got = False
        if self._recheck and self.check is not None:
            self.src = None
            self.src = self.check()  # raises UrlRejected
        assert self.src is not None
        self._recheck = True  # the next connect re-resolves
        src = self.src
        try:
            container = av.open(
                src.connect_url,
                options=av_options(src, self.transport, self.opts),
                timeout=(self.opts.open_timeout_s, self.opts.read_timeout_s),
            )
        except av.error.FFmpegError as e:
            raise ConnectionError(f"cannot open source: {e}") from None
        try:
            if not container.streams.video:
                raise ValueError("the source has no video stream")
            vs = container.streams.video[0]
            rate = vs.average_rate or vs.guessed_rate
            fps = float(rate) if rate else None
            pace = _Pacer(vs.time_base) if src.scheme == "file" and self.opts.pace_files else None
            counter = FrameCounter(FrameCaps(max_pixels=self.opts.max_pixels), vs.time_base)
            for _, frames in demux_frames(container, vs):
                if self.stop_event.is_set():
                    return got
                if frames is None:
                    self.sink.dropped("decode_error")
                    continue
                for frame in frames:
                    counter.check(frame)  # before the frame is converted, queued or upscaled
                    if pace is not None and pace.wait(frame.pts, self.stop_event):
                        return got
                    if not got:
                        got = True
                        self.sink.set_source(frame.width, frame.height, fps)
                        self.sink.set_state("live")
                    self.sink.offer(frame, time.monotonic())
        except Exception as e:
            e.got_frames = got  # type: ignore[attr-defined]
            raise
        finally:
            container.close()
        raise SourceEnded(got)


class _Pacer:
    """Plays a file at its own speed (like ``ffmpeg -re``)."""

    def __init__(self, time_base: Fraction | None) -> None:
        self.tb = float(time_base) if time_base else 0.0
        self.t0: float | None = None
        self.pts0: int = 0

    def wait(self, pts: int | None, stop: threading.Event) -> bool:
        if pts is None or not self.tb:
            return stop.is_set()
        now = time.monotonic()
        if self.t0 is None:
            self.t0, self.pts0 = now, pts
            return stop.is_set()
        due = self.t0 + (pts - self.pts0) * self.tb
        return stop.wait(max(0.0, due - now))
