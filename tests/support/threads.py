"""Helper threads whose failures reach the test: an ``assert`` (or any exception) in a plain ``threading.Thread``
only prints a warning under pytest, and the test passes. :class:`Checked` keeps the exception and ``join()``
raises it in the test's own thread. (pyproject's pytest config also turns pytest's unhandled-thread-exception warning
into an error, as a net for threads started elsewhere.)"""

from __future__ import annotations

import threading
from collections.abc import Callable


class Checked(threading.Thread):
    """A daemon thread running ``target``; ``join(timeout)`` re-raises its exception, and fails if it is still
    running after ``timeout`` seconds (a helper that never ends is a failure too)."""

    def __init__(self, target: Callable[[], object], *, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test's thread by join()
            self.error = e

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.is_alive():
            raise AssertionError(f"helper thread {self.name} still running after {timeout} s")
        if self.error is not None:
            raise self.error
