"""The service's engine: the shared :class:`vsr.engine.Engine` plus what only the service needs.

- Settings in (``Engine.load``), metrics out: model info, CUDA memory gauges, OOM retries, readiness.
- Readiness: ``warmup()`` runs every model once, then marks the engine ready (``/v2/health/ready``).
- A fault hook for tests: called with (model name, frames) before every attempt; raise to simulate a failing batch
  (e.g. RuntimeError, or ``torch.cuda.OutOfMemoryError`` to exercise the OOM fallback).

Only the batcher's worker thread calls :meth:`Engine.run` and :meth:`Engine.warmup`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import torch

from service.metrics import Metrics
from service.settings import Settings
from vsr.engine import DTYPE_NAMES, LoadedModel, load_for
from vsr.engine import Engine as SharedEngine
from vsr.inference import TileSpec
from vsr.memory import frame_bytes, widest_layer
from vsr.runner import RuntimeOptions

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

    def _publish_info(self, metrics: Metrics) -> None:
        for lm in self.models.values():
            metrics.model_info.labels(
                model=lm.name,
                arch=lm.meta.arch,
                scale=str(lm.meta.scale),
                parameters=str(lm.meta.parameters),
                dtype=self.runners[lm.name].info.dtype,
                runtime=self.runners[lm.name].info.runtime,
                device=str(self.device),
            ).set(1)
        if self.device.type == "cuda":
            dev = self.device
            metrics.enable_gpu_memory(lambda: torch.cuda.memory_allocated(dev), lambda: torch.cuda.memory_reserved(dev))
