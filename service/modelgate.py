"""Which models take new frames, and how many frames of each are in flight: what the model repository's unload
waits on (``service.repository``). The batcher checks every ``submit`` here and tracks its future."""

from __future__ import annotations

import threading
from collections.abc import Collection
from concurrent.futures import Future
from functools import partial
from typing import Any, Protocol


class HasModels(Protocol):
    @property
    def names(self) -> Collection[str]: ...


class ModelGate:
    """Thread-safe, with its own lock (never held while the batcher's is waited on)."""

    def __init__(self, engine: HasModels) -> None:
        """``engine.names``: the loaded models, read at every check (they change while the service runs)."""
        self._engine = engine
        self._retired: set[str] = set()  # being unloaded: no new work
        self._inflight: dict[str, int] = {}  # submitted, not done yet
        self._cond = threading.Condition()

    def check(self, model: str) -> None:
        """Raise ``KeyError`` for a model that is not loaded or is being unloaded."""
        names = self._engine.names
        if model not in names or model in self._retired:
            raise KeyError(f"unknown model {model!r}; loaded: {sorted(set(names) - self._retired)}")

    def track(self, model: str, future: Future[Any]) -> None:
        """Count ``future`` as in flight on ``model`` until it is done (result, error or cancel)."""
        with self._cond:
            self._inflight[model] = self._inflight.get(model, 0) + 1
        future.add_done_callback(partial(self._done, model))

    def _done(self, model: str, _future: Future[Any]) -> None:
        with self._cond:
            self._inflight[model] -= 1
            if not self._inflight[model]:
                del self._inflight[model]
                self._cond.notify_all()

    def retire(self, model: str, timeout: float) -> bool:
        """Take no new work for ``model``, then wait up to ``timeout`` s for its frames in flight to finish; True
        when none is left. Undo with :meth:`reinstate` (once the model is gone from the engine, or to abort)."""
        with self._cond:
            self._retired.add(model)
            return self._cond.wait_for(lambda: model not in self._inflight, timeout)

    def reinstate(self, model: str) -> None:
        with self._cond:
            self._retired.discard(model)
