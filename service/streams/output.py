"""The newest output frame of a stream, encoded once and shared by every viewer.

A viewer remembers the sequence number it sent last and waits for a newer one; a slow viewer simply skips the
frames it missed. Publishing never waits on viewers. Async viewers (MJPEG responses) are woken through their event
loop (``call_soon_threadsafe``); threads can use :meth:`FrameBroadcast.wait_newer_sync`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass


@dataclass(frozen=True)
class EncodedFrame:
    seq: int
    jpeg: bytes
    width: int
    height: int
    t_emitted: float  # time.monotonic()


class FrameBroadcast:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._latest: EncodedFrame | None = None
        self._closed = False
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = set()

    @property
    def latest(self) -> EncodedFrame | None:
        return self._latest

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, frame: EncodedFrame) -> None:
        with self._cond:
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
