"""Progress of long work: a tqdm bar on a terminal, log records off one.

The project's rule is "long work shows progress; logs are one JSON object per line off a terminal". A tqdm bar
redraws itself with carriage returns: under ``nohup`` (or any redirect) each redraw lands in the log file as
another half-line of ``x4-luma:  4%|▍  |``. So every bar is made here: when the stream it would draw on (stderr) is
a terminal it is tqdm's, else a :class:`LogProgress` that logs one record at most every ``every_s`` seconds and one
at the end, with ``step``, ``steps``, ``rate`` (per second), ``eta_s`` and ``unit`` as fields — one JSON object per
line through ``vsr.logs``' JSON handler, like every other log line.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import IO, Any, Protocol, TypeVar

log = logging.getLogger("vsr.progress")

T = TypeVar("T")
EVERY_S = 30.0  # a line every 30 s: a day-long run logs ~3000 lines, and a stalled one is seen within a minute


class Bar(Protocol):
    """The part of tqdm's interface the callers use."""

    n: float

    def update(self, n: float = 1) -> Any: ...

    def set_postfix(self, **fields: Any) -> Any: ...

    def close(self) -> Any: ...


class LogProgress:
    """A :class:`Bar` that logs: a record when ``every_s`` has passed since the last one, and one when closed."""

    def __init__(
        self,
        *,
        total: float | None,
        desc: str,
        initial: float = 0,
        unit: str = "it",
        every_s: float = EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.desc, self.unit, self.every_s = total, desc, unit, every_s
        self.n = self._start = initial
        self.postfix: dict[str, str] = {}
        self._clock = clock
        self._t0 = self._last = clock()
        self._closed = False

    def update(self, n: float = 1) -> None:
        self.n += n
        if self._clock() - self._last >= self.every_s:
            self._emit()

    def set_postfix(self, **fields: Any) -> None:
        self.postfix = {k: str(v) for k, v in fields.items()}

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._emit()

    def _emit(self) -> None:
        now = self._clock()
        self._last = now
        elapsed = now - self._t0
        rate = (self.n - self._start) / elapsed if elapsed > 0 else None
        left = None if self.total is None else max(self.total - self.n, 0)
        eta = None if rate is None or left is None else (left / rate if rate > 0 else None)
        done = f"{self.n:g}" + ("" if self.total is None else f"/{self.total:g}")
        extra = [f"{rate:.3g} {self.unit}/s" if rate is not None else "", f"eta {eta:.0f} s" if eta is not None else ""]
        extra += [f"{k}={v}" for k, v in self.postfix.items()]
        log.info(
            "%s: %s %s",
            self.desc,
            done,
            ", ".join(e for e in extra if e),
            extra={
                "progress": self.desc,
                "step": self.n,
                "steps": self.total,
                "unit": self.unit,
                "rate": None if rate is None else round(rate, 4),
                "eta_s": None if eta is None else round(eta, 1),
                **({"postfix": self.postfix} if self.postfix else {}),
            },
        )


def is_terminal(stream: IO[str] | None) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


def bar(
    *,
    total: float | None,
    desc: str,
    initial: float = 0,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    stream: IO[str] | None = None,
    every_s: float = EVERY_S,
) -> Bar:
    """tqdm on ``stream`` (stderr) when it is a terminal, else a :class:`LogProgress`; ``disable``: neither."""
    from tqdm import tqdm

    stream = stream if stream is not None else sys.stderr
    if disable or is_terminal(stream):
        b: Bar = tqdm(
            total=total, desc=desc, initial=initial, unit=unit, disable=disable, leave=leave, file=stream,
            dynamic_ncols=True,
        )  # fmt: skip
        return b
    return LogProgress(total=total, desc=desc, initial=initial, unit=unit, every_s=every_s)


def track(
    items: Iterable[T],
    *,
    desc: str,
    total: float | None = None,
    unit: str = "it",
    disable: bool = False,
    leave: bool = True,
    stream: IO[str] | None = None,
    every_s: float = EVERY_S,
) -> Iterator[T]:
    """``items`` with a :func:`bar` counting them (``total``: ``len(items)`` where it has one)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    b = bar(total=total, desc=desc, unit=unit, disable=disable, leave=leave, stream=stream, every_s=every_s)
    try:
        for item in items:
            yield item
            b.update(1)
    finally:
        b.close()
