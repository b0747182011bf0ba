"""The service's engine: the shared :class:`vsr.engine.Engine` plus what only the service needs.

- Settings in (``Engine.load``), metrics out: model info, CUDA memory gauges, OOM retries, readiness.
- Readiness: ``warmup()`` runs every model once, then marks the engine ready (``/v2/health/ready``).
- A fault hook for tests: called with (model name, frames) before every attempt; raise to simulate a failing batch
  (e.g. RuntimeError, or ``torch.cuda.OutOfMemoryError`` to exercise the OOM fallback).

Only the batcher's worker thread calls :meth:`Engine.run` and :meth:`Engine.warmup`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from service.metrics import Metrics
from service.settings import Settings
from vsr.engine import DTYPE_NAMES, LoadedModel, load_for
from vsr.engine import Engine as SharedEngine
from vsr.inference import TileSpec
from vsr.memory import frame_bytes, widest_layer
from vsr.runner import FrameRunner, RuntimeOptions

__all__ = ["DTYPE_NAMES", "Engine", "FaultHook", "LoadedModel"]

FaultHook = Callable[[str, np.ndarray], None]


class Engine(SharedEngine):
    """Named models on one device, with the service's metrics, readiness and fault hook."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        *,
        device: torch.device,
        dtype: torch.dtype | str = "auto",
        tiles: TileSpec | None = None,
        metrics: Metrics | None = None,
        compile: bool = False,
        runtime: RuntimeOptions | None = None,
    ) -> None:
        super().__init__(models, device=device, dtype=dtype, tiles=tiles, compile=compile, runtime=runtime)
        self._asked = dtype, runtime or RuntimeOptions()  # what a model loaded later is built with (new_runner)
        self.metrics = metrics
        self._ready = threading.Event()
        self.fault_hook: FaultHook | None = None
        self._widths: dict[str, int] = {}

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics | None = None) -> Engine:
        """Load every artifact named in ``settings.models`` onto the configured device and dtype."""
        device = settings.torch_device()
        engine = cls(
            load_for(settings.models, device, settings.dtype),
            device=device,
            dtype=settings.dtype,
            tiles=settings.tiles(),
            metrics=metrics,
            compile=settings.compile,
            runtime=settings.runtime_options(),
        )
        if metrics is not None:
            engine._publish_info(metrics)
        return engine

    def frame_bytes(self, name: str, shape: tuple[int, ...]) -> int:
        """Upper bound of the memory one uint8 HxWx3 frame of ``shape`` takes through model ``name``
        (the batcher's budget unit; :func:`vsr.memory.frame_bytes`)."""
        lm = self.models[name]
        if name not in self._widths:
            self._widths[name] = widest_layer(lm.model)
        work = self.runners[name].pixel_budget
        return frame_bytes(shape[0], shape[1], scale=lm.meta.scale, channels=self._widths[name], work_pixels=work)

    def model_bytes(self, name: str) -> int:
        """What model ``name`` holds while loaded: its weights and buffers (what the memory budget charges it)."""
        model = self.models[name].model
        return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))

    def new_runner(self, lm: LoadedModel) -> FrameRunner:
        """A runner for ``lm`` built as the engine built its own (device, dtype or its measurement, runtime, tiling);
        not yet published: see :meth:`add_model`. Measuring runs here, on the caller's thread."""
        dtype, runtime = self._asked
        return FrameRunner(
            lm.model,
            scale=lm.meta.scale,
            device=self.device,
            dtype=dtype,
            overlap=self.tiles.overlap,
            options=replace(runtime, int8=lm.int8),
        )

    def add_model(self, lm: LoadedModel, runner: FrameRunner) -> None:
        """Publish a loaded (and warmed) model, replacing one of the same name. The dicts are replaced, not
        mutated: the worker and the routes read them without a lock, and a reader never sees one half-updated."""
        self.runners = {**self.runners, lm.name: runner}
        self.models = {**self.models, lm.name: lm}
        self._widths.pop(lm.name, None)
        if self.metrics is not None:
            self._publish_info(self.metrics, [lm])

    def remove_model(self, name: str) -> None:
        """Forget model ``name`` (the caller made sure no work for it is left: ``ModelGate.retire``)."""
        labels = self._info_labels(self.models[name])
        self.models = {k: v for k, v in self.models.items() if k != name}
        self.runners = {k: v for k, v in self.runners.items() if k != name}
        self._widths.pop(name, None)
        if self.metrics is not None:
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(*labels)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def warmup(self) -> None:
        """Run every model once (kernel selection, allocator), then mark the engine ready."""
        super().warmup()
        self.mark_ready()

    def mark_ready(self) -> None:
        self._ready.set()
        if self.metrics is not None:
            self.metrics.ready.set(1)

    def _before_attempt(self, name: str, frames: np.ndarray) -> None:
        if self.fault_hook is not None:
            self.fault_hook(name, frames)

    def _on_oom(self) -> None:
        if self.metrics is not None:
            self.metrics.oom_retries.inc()
        super()._on_oom()

    def _info_labels(self, lm: LoadedModel) -> tuple[str, ...]:
        """``vsr_model_info``'s labels of a loaded model: model, arch, scale, parameters, dtype, runtime, device."""
        info = self.runners[lm.name].info
        m = lm.meta
        return lm.name, m.arch, str(m.scale), str(m.parameters), info.dtype, info.runtime, str(self.device)

    def _publish_info(self, metrics: Metrics, models: list[LoadedModel] | None = None) -> None:
        for lm in self.models.values() if models is None else models:
            metrics.model_info.labels(*self._info_labels(lm)).set(1)
        if models is None and self.device.type == "cuda":
            dev = self.device
            metrics.enable_gpu_memory(lambda: torch.cuda.memory_allocated(dev), lambda: torch.cuda.memory_reserved(dev))
