"""The service's engine: holds the shared :class:`vsr.engine.Engine` and adds what only the service needs.

- Settings in (``Engine.load``), metrics out: model info, CUDA memory gauges, readiness; OOM retries are counted
  through the hook the shared engine is given (:class:`vsr.engine.EngineHooks`), which knows nothing of Prometheus.
- Readiness: ``warmup()`` runs every model once, then marks the engine ready (``/v2/health/ready``).
- A fault hook for tests (``fault_hook``, settable at run time): called with (model name, frames) before every
  attempt; raise to simulate a failing batch (e.g. RuntimeError, or ``torch.cuda.OutOfMemoryError`` to exercise the
  OOM fallback).
- The batcher's memory price of a frame (:meth:`Engine.frame_bytes`).

Only the batcher's worker thread calls :meth:`Engine.run` and :meth:`Engine.warmup`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from service.metrics import Metrics
from service.settings import Settings
from vsr.engine import Engine as SharedEngine
from vsr.engine import EngineHooks, EngineOptions, LoadedModel, load_for
from vsr.memory import frame_bytes, widest_layer
from vsr.runner import FrameRunner

__all__ = ["Engine", "FaultHook", "FaultSwitch", "LoadedModel"]

FaultHook = Callable[[str, np.ndarray], None]


class FaultSwitch:
    """The fault hook handed to the shared engine; what it calls can be swapped at run time (tests do)."""

    def __init__(self) -> None:
        self.hook: FaultHook | None = None

    def __call__(self, name: str, frames: np.ndarray) -> None:
        if (hook := self.hook) is not None:
            hook(name, frames)


class Engine:
    """Named models on one device (a shared :class:`vsr.engine.Engine`), with readiness, metrics and a fault hook.

    Build it with :meth:`load`; the constructor takes an engine already given ``faults`` and the metrics' OOM
    counter as its hooks.
    """

    def __init__(self, core: SharedEngine, faults: FaultSwitch, metrics: Metrics | None = None) -> None:
        self.core, self.faults, self.metrics = core, faults, metrics
        self._ready = threading.Event()
        self._widths: dict[str, int] = {}
        if metrics is not None:
            self._publish_info(metrics)

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics | None = None) -> Engine:
        """Load every artifact named in ``settings.models`` onto the configured device and dtype."""
        device = settings.torch_device()
        faults = FaultSwitch()
        hooks = EngineHooks(before_attempt=faults, on_oom=metrics.oom_retries.inc if metrics is not None else None)
        options = EngineOptions(
            tiles=settings.tiles(), compile=settings.compile, runtime=settings.runtime_options(), hooks=hooks
        )
        models = load_for(settings.models, device, settings.dtype)
        core = SharedEngine(models, device=device, dtype=settings.dtype, options=options)
        return cls(core, faults, metrics)

    # ---- what the routes, the batcher and the stream manager read ----------------------------------------------

    @property
    def models(self) -> dict[str, LoadedModel]:
        return self.core.models

    @property
    def names(self) -> list[str]:
        return self.core.names

    @property
    def default_model(self) -> str:
        return self.core.default_model

    @property
    def device(self) -> torch.device:
        return self.core.device

    @property
    def dtype(self) -> torch.dtype:
        return self.core.dtype

    @property
    def dtype_name(self) -> str:
        return self.core.dtype_name

    def scale(self, name: str) -> int:
        return self.core.scale(name)

    def runner(self, name: str) -> FrameRunner:
        """The model's runner (its measured runtime and cost: the stream model's ``auto`` choice reads it)."""
        return self.core.runner(name)

    def describe(self, name: str) -> dict[str, Any]:
        return self.core.describe(name)

    @property
    def fault_hook(self) -> FaultHook | None:
        return self.faults.hook

    @fault_hook.setter
    def fault_hook(self, hook: FaultHook | None) -> None:
        self.faults.hook = hook

    def frame_bytes(self, name: str, shape: tuple[int, ...]) -> int:
        """Upper bound of the memory one uint8 HxWx3 frame of ``shape`` takes through model ``name``
        (the batcher's budget unit; :func:`vsr.memory.frame_bytes`)."""
        lm = self.core.models[name]
        if name not in self._widths:
            self._widths[name] = widest_layer(lm.model)
        work = self.core.runner(name).pixel_budget
        return frame_bytes(shape[0], shape[1], scale=lm.meta.scale, channels=self._widths[name], work_pixels=work)

    def model_bytes(self, name: str) -> int:
        """What model ``name`` holds while loaded: its weights and buffers (what the memory budget charges it)."""
        model = self.core.models[name].model
        return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))

    def new_runner(self, lm: LoadedModel) -> FrameRunner:
        """A runner for ``lm`` as the engine builds its own; not yet published: see :meth:`add_model`."""
        return self.core.new_runner(lm)

    def add_model(self, lm: LoadedModel, runner: FrameRunner) -> None:
        """Publish a loaded (and warmed) model, replacing one of the same name. The dicts are replaced, not
        mutated: the worker and the routes read them without a lock, and a reader never sees one half-updated."""
        self.core.runners = {**self.core.runners, lm.name: runner}
        self.core.models = {**self.core.models, lm.name: lm}
        self._widths.pop(lm.name, None)
        if self.metrics is not None:
            self._publish_info(self.metrics, [lm])

    def remove_model(self, name: str) -> None:
        """Forget model ``name`` (the caller made sure no work for it is left: ``ModelGate.retire``)."""
        labels = self._info_labels(self.core.models[name])
        self.core.models = {k: v for k, v in self.core.models.items() if k != name}
        self.core.runners = {k: v for k, v in self.core.runners.items() if k != name}
        self._widths.pop(name, None)
        if self.metrics is not None:
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(*labels)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    # ---- the inference thread's side ----------------------------------------------------------------------------

    def run(self, name: str, frames: np.ndarray) -> np.ndarray:
        """uint8 NHWC in -> uint8 NHWC out (:meth:`vsr.engine.Engine.run`)."""
        return self.core.run(name, frames)

    def warmup(self) -> None:
        """Run every model once (kernel selection, allocator), then mark the engine ready."""
        self.core.warmup()
        self.mark_ready()

    def mark_ready(self) -> None:
        self._ready.set()
        if self.metrics is not None:
            self.metrics.ready.set(1)

    def _info_labels(self, lm: LoadedModel) -> tuple[str, ...]:
        """``vsr_model_info``'s labels of a loaded model: model, arch, scale, parameters, dtype, runtime, device."""
        info = self.core.runner(lm.name).info
        m = lm.meta
        return lm.name, m.arch, str(m.scale), str(m.parameters), info.dtype, info.runtime, str(self.device)

    def _publish_info(self, metrics: Metrics, models: list[LoadedModel] | None = None) -> None:
        for lm in self.core.models.values() if models is None else models:
            metrics.model_info.labels(*self._info_labels(lm)).set(1)
        if models is None and self.device.type == "cuda":
            dev = self.device
            metrics.enable_gpu_memory(lambda: torch.cuda.memory_allocated(dev), lambda: torch.cuda.memory_reserved(dev))
