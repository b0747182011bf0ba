"""The newest output frame of a stream, encoded once and shared by every viewer — and only if someone watches.

JPEG encoding a 1280x720 frame costs ~3.5 ms of CPU here (Pillow q80; simplejpeg measured slower on this CPU, cv2
faster but a 60 MB dependency for 0.6 ms): with nobody watching, a stream publishes the raw frame and encodes
nothing. The pump thread encodes each new frame once when at least one MJPEG viewer is connected
(:meth:`FrameBroadcast.watching`); a frame asked for otherwise (``frame.jpg``) is encoded on first access and cached.

A viewer remembers the sequence number it sent last and waits for a newer one; a slow viewer simply skips the
frames it missed. Publishing never waits on viewers. Async viewers (MJPEG responses) are woken through their event
loop (``call_soon_threadsafe``); threads can use :meth:`FrameBroadcast.wait_newer_sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import threading
from collections.abc import Callable, Iterator

import numpy as np
from PIL import Image

from vsr.planes import Planes

# A frame as a stream carries it: uint8 RGB HWC, or a luma model's frame as planes (vsr.planes: no RGB round trip)
Picture = np.ndarray | Planes


def encode_jpeg(picture: Picture, quality: int = 80) -> bytes:
    """JPEG of an RGB frame (Pillow) or of planes (libjpeg-turbo's raw-planes encoder: no colour conversion)."""
    if isinstance(picture, Planes):
        return picture.jpeg(quality)
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def picture_size(picture: Picture) -> tuple[int, int]:
    """(width, height)."""
    if isinstance(picture, Planes):
        return picture.width, picture.height
    return int(picture.shape[1]), int(picture.shape[0])


class EncodedFrame:
    """One output frame: its JPEG, or the frame (RGB or planes) and how to encode it on first access (then cached)."""

    def __init__(
        self,
        seq: int,
        jpeg: bytes | None,
        width: int,
        height: int,
        t_emitted: float,  # time.monotonic()
        *,
        picture: Picture | None = None,
        encode: Callable[[Picture], bytes] | None = None,
    ) -> None:
        if jpeg is None and (picture is None or encode is None):
            raise ValueError("an EncodedFrame needs its JPEG or a frame and an encoder")
        self.seq, self.width, self.height, self.t_emitted = seq, width, height, t_emitted
        self.index = 0  # position among the frames published (set by FrameBroadcast.publish): gaps = skipped
        self._jpeg, self._picture, self._encode = jpeg, picture, encode
        self._lock = threading.Lock()

    @classmethod
    def lazy(cls, seq: int, picture: Picture, encode: Callable[[Picture], bytes], t_emitted: float) -> EncodedFrame:
        w, h = picture_size(picture)
        return cls(seq, None, w, h, t_emitted, picture=picture, encode=encode)

    @property
    def encoded(self) -> bool:
        return self._jpeg is not None

    @property
    def jpeg(self) -> bytes:
        """The JPEG bytes, encoding them now if nobody has (once per frame, whoever asks first)."""
        if self._jpeg is None:
            with self._lock:
                if self._jpeg is None:
                    assert self._picture is not None and self._encode is not None
                    self._jpeg = self._encode(self._picture)
        return self._jpeg

    @property
    def picture(self) -> Picture:
        """The raw upscaled frame (kept: a publisher encodes it as H.264). Frames built from JPEG have none."""
        if self._picture is None:
            raise ValueError("this frame carries only its JPEG")
        return self._picture

    @property
    def rgb(self) -> np.ndarray:
        """The raw upscaled frame as RGB (planes are converted: a copy)."""
        p = self.picture
        return p.rgb() if isinstance(p, Planes) else p


class FrameBroadcast:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: EncodedFrame | None = None
        self._closed = False
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()
        self._viewers = 0
        self._published = 0

    @property
    def viewers(self) -> int:
        """Connected MJPEG viewers (the publisher encodes each frame only while this is > 0)."""
        return self._viewers

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        with self._cond:
            self._viewers += 1
        try:
            yield
        finally:
            with self._cond:
                self._viewers -= 1

    @property
    def latest(self) -> EncodedFrame | None:
        return self._latest

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, frame: EncodedFrame) -> None:
        with self._cond:
            self._published += 1
            frame.index = self._published
            self._latest = frame
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, set()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # the loop is closed: that viewer is gone
                loop.call_soon_threadsafe(_wake, fut)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            waiters, self._waiters = self._waiters, set()
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, fut)

    async def wait_newer(self, seq: int, timeout: float) -> EncodedFrame | None:
        """The newest frame if its ``seq`` is above ``seq``, waiting up to ``timeout``; None on timeout or close."""
        loop = asyncio.get_running_loop()
        with self._cond:
            f = self._latest
            if f is not None and f.seq > seq:
                return f
            if self._closed:
                return None
            fut: asyncio.Future[None] = loop.create_future()
            entry = (loop, fut)
            self._waiters.add(entry)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            with self._cond:
                self._waiters.discard(entry)
        f = self._latest
        return f if f is not None and f.seq > seq else None

    def wait_newer_sync(self, seq: int, timeout: float) -> EncodedFrame | None:
        with self._cond:
            self._cond.wait_for(
                lambda: self._closed or (self._latest is not None and self._latest.seq > seq), timeout=timeout
            )
            f = self._latest
            return f if f is not None and f.seq > seq else None


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
