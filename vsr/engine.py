"""The engine: named models loaded onto one device, run through the one inference contract (``vsr.inference``).

Every caller runs frames through this class: the service (``service.engine.Engine`` adds metrics, readiness and
fault injection on top), ``vsr upscale`` (``vsr_cli.upscale``) and the benchmarks. So the choices below are made
once, here:

- Device: ``auto`` = CUDA when available, else CPU (:func:`pick_device`).
- Dtype: ``auto`` = fp16 on CUDA; on CPU bf16 when it has AVX512-BF16/AMX (3-5x fp32), else fp32 (:func:`pick_dtype`).
- CUDA: weights cast to the dtype, channels-last, pinned host memory and async copies (``vsr.inference.to_tensor``).
  CPU: fp32 weights, channels-last, convs under bf16 autocast when the dtype is bf16.
- Frames larger than the tile size run in overlapping tiles (``vsr.inference.run_model``).
- CUDA out of memory: the batch is split in halves, then a single frame is tiled ever smaller, and retried.

Frames in and out are uint8 RGB NHWC numpy arrays. The models and the device belong to the thread that calls
:meth:`Engine.run` (in the service: the batcher's worker thread).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from vsr.artifact import ArtifactError, ArtifactMeta, load_artifact
from vsr.inference import TileSpec, cpu_has_amx_bf16, upscale_frames

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
MIN_OOM_TILE = 64  # LR pixels: below this, tiling costs more than it saves and OOM is re-raised
WARMUP_SIZE = (64, 64)  # LR frame the warm-up runs per model (first-call kernel selection / allocation)


class DeviceError(ValueError):
    """A device that cannot be used here (unknown name, or CUDA asked for without CUDA)."""


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; otherwise the named device (which must exist)."""
    name = name.strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {name!r} asked for, but CUDA is not available")
    return device


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> fp16 on CUDA; on CPU bf16 when it runs bf16 convs fast (AVX512-BF16/AMX), else fp32."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.float16
    return torch.bfloat16 if cpu_has_amx_bf16() else torch.float32


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: nn.Module
    meta: ArtifactMeta
    source: str  # what the caller named: "x2" or a path


def prepare(model: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """Eval mode, channels-last on ``device``; reduced-precision weights on CUDA (CPU keeps fp32 + autocast)."""
    model = model.eval().to(device, memory_format=torch.channels_last)  # type: ignore[call-overload]
    if device.type == "cuda" and dtype != torch.float32:
        model = model.to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def load_models(entries: Sequence[str], device: torch.device, dtype: torch.dtype) -> dict[str, LoadedModel]:
    """Load each artifact (a bundled name such as ``x2``, or a folder) and prepare it for ``device``/``dtype``.

    Raises :class:`vsr.artifact.ArtifactError` for a missing/invalid artifact or two models with one name.
    """
    models: dict[str, LoadedModel] = {}
    for entry in entries:
        model, meta = load_artifact(entry, device="cpu")
        if meta.name in models:
            raise ArtifactError(f"two models are named {meta.name!r} ({models[meta.name].source}, {entry})")
        models[meta.name] = LoadedModel(meta.name, prepare(model, device, dtype), meta, entry)
        log.info("loaded %s (%s x%d, %d params) on %s", meta.name, meta.arch, meta.scale, meta.parameters, device)
    return models


class Engine:
    """Named models on one device. ``run(name, frames)`` is the only inference entry point."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        *,
        device: torch.device,
        dtype: torch.dtype,
        tiles: TileSpec | None = None,
    ) -> None:
        if not models:
            raise ValueError("the engine needs at least one model")
        self.models = models
        self.device = device
        self.dtype = dtype
        self.tiles = tiles or TileSpec()
        self.default_model = next(iter(models))

    @classmethod
    def open(
        cls, entries: Sequence[str], *, device: str = "auto", dtype: str = "auto", tiles: TileSpec | None = None
    ) -> Engine:
        """Pick the device and dtype from their names (``auto`` or explicit) and load ``entries`` onto them."""
        dev = pick_device(device)
        dt = pick_dtype(dtype, dev)
        return cls(load_models(entries, dev, dt), device=dev, dtype=dt, tiles=tiles)

    # ---- properties ------------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype))

    def scale(self, name: str) -> int:
        return self.models[name].meta.scale

    def describe(self, name: str) -> dict[str, Any]:
        """Metadata of one model (for ``GET /v2/models/{name}``)."""
        m = self.models[name].meta
        return {
            "name": name,
            "arch": m.arch,
            "scale": m.scale,
            "parameters": m.parameters,
            "config": m.config,
            "dtype": self.dtype_name,
            "device": str(self.device),
            "scores": m.scores,
            "created": m.created,
            "git_commit": m.git_commit,
            "license": m.license,
            "notes": m.notes,
        }

    # ---- the inference thread's side -------------------------------------------------------------------------

    def warmup(self) -> None:
        """Run every model once (kernel selection, allocator)."""
        frame = np.zeros((1, *WARMUP_SIZE, 3), np.uint8)
        for lm in self.models.values():
            self._infer(lm, frame, self.tiles)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, name: str, frames: np.ndarray) -> np.ndarray:
        """uint8 NHWC in -> uint8 NHWC (``scale`` times larger) out. Retries CUDA OOM by splitting / tiling."""
        return self._run(self.models[name], frames, self.tiles)

    def _before_attempt(self, name: str, frames: np.ndarray) -> None:
        """Called before every attempt (a subclass may raise here to inject faults)."""

    def _on_oom(self) -> None:
        """Called after each CUDA out-of-memory, before the retry: frees the allocator's cached blocks."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _run(self, lm: LoadedModel, frames: np.ndarray, tiles: TileSpec) -> np.ndarray:
        try:
            self._before_attempt(lm.name, frames)
            return self._infer(lm, frames, tiles)
        except torch.cuda.OutOfMemoryError:
            pass  # retry outside the handler: its traceback pins the failed attempt's tensors
        self._on_oom()
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


def _smaller_tiles(hw: tuple[int, ...], tiles: TileSpec) -> TileSpec | None:
    """Half the current tile (or of the frame when untiled), or None when that would be too small."""
    current = tiles.tile if tiles.tile > 0 else max(hw)
    new = current // 2
    if new < MIN_OOM_TILE or new <= 2 * tiles.overlap:
        return None
    return TileSpec(new, tiles.overlap)
