"""The engine: loaded models on their device, run through the one inference contract (``vsr.inference``).

Only the batcher's worker thread calls :meth:`Engine.run` and :meth:`Engine.warmup` — the models and the device
belong to that thread. Frames in and out are uint8 RGB NHWC numpy arrays.

- CUDA: weights cast to fp16 (``model.half()``), channels-last, pinned host memory and async copies (in
  ``vsr.inference.to_tensor``).
- CPU: fp32 weights, channels-last, convs under bf16 autocast when the CPU has AVX512-BF16/AMX (3-5x fp32).
- Frames larger than the tile size run in overlapping tiles (``vsr.inference.run_model``).
- CUDA out of memory: the batch is split in halves, then a single frame is tiled ever smaller, and retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from service.metrics import Metrics
from service.settings import Settings
from vsr.artifact import ArtifactError, ArtifactMeta, load_artifact
from vsr.inference import TileSpec, upscale_frames

log = logging.getLogger(__name__)

DTYPE_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}
MIN_OOM_TILE = 64  # LR pixels: below this, tiling costs more than it saves and OOM is re-raised
WARMUP_SIZE = (64, 64)  # LR frame the warm-up runs per model (first-call kernel selection / allocation)

FaultHook = Callable[[str, np.ndarray], None]


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: nn.Module
    meta: ArtifactMeta
    source: str  # what the settings named: "x2" or a path


class Engine:
    """Named models on one device. ``run(name, frames)`` is the only inference entry point."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        *,
        device: torch.device,
        dtype: torch.dtype,
        tiles: TileSpec | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if not models:
            raise ValueError("the engine needs at least one model")
        self.models = models
        self.device = device
        self.dtype = dtype
        self.tiles = tiles or TileSpec()
        self.metrics = metrics
        self.default_model = next(iter(models))
        self._ready = threading.Event()
        # Test hook: called with (model name, frames) before every attempt; raise to simulate a failing batch
        # (e.g. RuntimeError, or torch.cuda.OutOfMemoryError to exercise the OOM fallback).
        self.fault_hook: FaultHook | None = None

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics | None = None) -> Engine:
        """Load every artifact named in ``settings.models`` onto the configured device and dtype."""
        device, dtype = settings.torch_device(), settings.torch_dtype()
        models: dict[str, LoadedModel] = {}
        for entry in settings.models:
            model, meta = load_artifact(entry, device="cpu")
            if meta.name in models:
                raise ArtifactError(f"two models are named {meta.name!r} ({models[meta.name].source}, {entry})")
            models[meta.name] = LoadedModel(meta.name, prepare(model, device, dtype), meta, entry)
            log.info("loaded %s (%s x%d, %d params) on %s", meta.name, meta.arch, meta.scale, meta.parameters, device)
        engine = cls(models, device=device, dtype=dtype, tiles=settings.tiles(), metrics=metrics)
        if metrics is not None:
            engine._publish_info(metrics)
        return engine

    # ---- properties ------------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def scale(self, name: str) -> int:
        return self.models[name].meta.scale

    def describe(self, name: str) -> dict[str, Any]:
        """Metadata of one model (for ``GET /v2/models/{name}``)."""
        lm = self.models[name]
        m = lm.meta
        return {
            "name": name,
            "arch": m.arch,
            "scale": m.scale,
            "parameters": m.parameters,
            "config": m.config,
            "dtype": DTYPE_NAMES.get(self.dtype, str(self.dtype)),
            "device": str(self.device),
            "scores": m.scores,
            "created": m.created,
            "git_commit": m.git_commit,
            "license": m.license,
            "notes": m.notes,
        }

    # ---- worker-thread side ----------------------------------------------------------------------------------

    def warmup(self) -> None:
        """Run every model once (kernel selection, allocator), then mark the engine ready."""
        frame = np.zeros((1, *WARMUP_SIZE, 3), np.uint8)
        for lm in self.models.values():
            self._infer(lm, frame, self.tiles)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.mark_ready()

    def mark_ready(self) -> None:
        self._ready.set()
        if self.metrics is not None:
            self.metrics.ready.set(1)

    def run(self, name: str, frames: np.ndarray) -> np.ndarray:
        """uint8 NHWC in -> uint8 NHWC (``scale`` times larger) out. Retries CUDA OOM by splitting / tiling."""
        return self._run(self.models[name], frames, self.tiles)

    def _run(self, lm: LoadedModel, frames: np.ndarray, tiles: TileSpec) -> np.ndarray:
        try:
            if self.fault_hook is not None:
                self.fault_hook(lm.name, frames)
            return self._infer(lm, frames, tiles)
        except torch.cuda.OutOfMemoryError:
            pass  # retry outside the handler: its traceback pins the failed attempt's tensors
        self._count_oom()
        if len(frames) > 1:
            half = len(frames) // 2
            return np.concatenate([self._run(lm, frames[:half], tiles), self._run(lm, frames[half:], tiles)])
        smaller = _smaller_tiles(frames.shape[1:3], tiles)
        if smaller is None:
            raise torch.cuda.OutOfMemoryError(f"out of memory on one {frames.shape[1:3]} frame even at tile {tiles}")
        log.warning("CUDA OOM on a %s frame: retrying with %d px tiles", frames.shape[1:3], smaller.tile)
        return self._run(lm, frames, smaller)

    def _infer(self, lm: LoadedModel, frames: np.ndarray, tiles: TileSpec) -> np.ndarray:
        return upscale_frames(lm.model, frames, scale=lm.meta.scale, device=self.device, dtype=self.dtype, tiles=tiles)

    def _count_oom(self) -> None:
        if self.metrics is not None:
            self.metrics.oom_retries.inc()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _publish_info(self, metrics: Metrics) -> None:
        for lm in self.models.values():
            metrics.model_info.labels(
                model=lm.name,
                arch=lm.meta.arch,
                scale=str(lm.meta.scale),
                parameters=str(lm.meta.parameters),
                dtype=DTYPE_NAMES.get(self.dtype, str(self.dtype)),
                device=str(self.device),
            ).set(1)
        if self.device.type == "cuda":
            dev = self.device
            metrics.enable_gpu_memory(lambda: torch.cuda.memory_allocated(dev), lambda: torch.cuda.memory_reserved(dev))


def prepare(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Eval mode, channels-last on ``device``; reduced-precision weights on CUDA (CPU keeps fp32 + autocast)."""
    model = model.eval().to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    if device.type == "cuda" and dtype != torch.float32:
        model = model.to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _smaller_tiles(hw: tuple[int, ...], tiles: TileSpec) -> TileSpec | None:
    """Half the current tile (or of the frame when untiled), or None when that would be too small."""
    current = tiles.tile if tiles.tile > 0 else max(hw)
    new = current // 2
    if new < MIN_OOM_TILE or new <= 2 * tiles.overlap:
        return None
    return TileSpec(new, tiles.overlap)
