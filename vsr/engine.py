"""The engine: named models loaded onto one device, run through the one inference contract (``vsr.inference``).

Every caller runs frames through this class: the service (``service.engine.Engine`` holds one and adds readiness;
its metrics and fault hook come in as :class:`EngineHooks`: this module knows nothing of Prometheus), ``vsr
upscale`` (``vsr_cli.upscale``) and the benchmarks. So the choices below are made once, here:

- Device: ``auto`` = CUDA when available, else CPU (:func:`pick_device`).
- Runtime and precision: ``auto`` = torch fp16 on CUDA; on CPU **measured** per model at load, torch fp32/bf16
  against OpenVINO f32/bf16/int8 (int8 only from the artifact's own IR) by :func:`vsr.runner.choose_runtime` (CPU
  flags do not tell: bf16 is ~3x fp32 on a Zen 5 with AVX512-BF16 and unusable on an AVX2-only Zen 3). The choice
  and its timings are in :meth:`Engine.describe` (``GET /v2/models/{name}``).
- Each model runs through its :class:`vsr.runner.FrameRunner`: OpenVINO (``vsr.ov``), or torch's fused uint8
  kernel (``vsr.kernel``) for our students and the reference path (``vsr.inference``) for other architectures; on
  CUDA fp16 channels-last with pinned staging and CUDA graphs (``vsr.gpu``).
- Tiles by pixel count (``vsr.tiling``): whole frames up to ~1 MP on CPU / 1080p on CUDA; ``TileSpec.tile`` > 0
  caps a call at ``tile**2`` input pixels instead.
- CUDA out of memory: the batch is split in halves, then a single frame is tiled ever smaller, and retried.

Frames in and out are uint8 RGB NHWC numpy arrays (a luma model also takes Y alone: N x H x W x 1, see
:mod:`vsr.planes`). The models and the device belong to the thread that calls
:meth:`Engine.run` (in the service: the batcher's worker thread).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vsr.artifact import ArtifactError, ArtifactMeta, int8_ir, load_artifact, resolve
from vsr.runner import DTYPE_NAMES, DTYPES, FrameRunner, RuntimeOptions, choose_dtype
from vsr.tiling import TileSpec

log = logging.getLogger(__name__)

MIN_OOM_TILE = 64  # LR pixels: below this, tiling costs more than it saves and OOM is re-raised
WARMUP_SIZE = (64, 64)  # LR frame the warm-up runs per model (first-call kernel selection / allocation)
# LR frame whose time seeds each model's cost at warm-up: measured per megapixel on OpenVINO int8 (2 Zen 3 cores),
# x2-camera-fast costs 156 ms/MP at the runtime probe's 96x160, 124 here and 126 at 640x360 (fixed per-call work)
COST_SIZE = (180, 320)
COMPILE_SIZE = (360, 640)  # LR frame torch.compile specialises on when asked (static shapes; a camera's size)


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


def resolve_dtype(
    name: str, device: torch.device, model: nn.Module | None = None
) -> tuple[torch.dtype, dict[str, float | None]]:
    """``auto`` -> fp16 on CUDA; on CPU the faster of fp32 and bf16 measured on ``model`` (fp32 without a model).

    Returns the dtype and the measured probe times in ms (empty when nothing was measured).
    """
    if name != "auto":
        return DTYPES[name], {}
    if device.type == "cuda" or model is None:
        return (torch.float16 if device.type == "cuda" else torch.float32), {}
    dtype, times = choose_dtype(model, scale=int(getattr(model, "scale", 2)), device=device)
    log.info("dtype measured on %s: %s -> %s", device, times, DTYPE_NAMES[dtype])
    return dtype, times


def pick_dtype(name: str, device: torch.device, model: nn.Module | None = None) -> torch.dtype:
    """:func:`resolve_dtype` without the timings."""
    return resolve_dtype(name, device, model)[0]


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: nn.Module
    meta: ArtifactMeta
    source: str  # what the caller named: "x2" or a path
    int8: Path | None = None  # the artifact's int8 IR, when it carries one that passed its check at export


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
        int8 = int8_ir(resolve(entry), meta)
        models[meta.name] = LoadedModel(meta.name, prepare(model, device, dtype), meta, entry, int8)
        log.info("loaded %s (%s x%d, %d params) on %s", meta.name, meta.arch, meta.scale, meta.parameters, device)
    return models


def load_for(entries: Sequence[str], device: torch.device, dtype: str) -> dict[str, LoadedModel]:
    """Load ``entries`` for ``device`` and a dtype name (``auto``: chosen per model when its runner is built)."""
    provisional = DTYPES.get(dtype, torch.float16 if device.type == "cuda" else torch.float32)
    return load_models(entries, device, provisional)


@dataclass(frozen=True)
class EngineHooks:
    """What a host injects (the service: its metrics and a test fault hook); both run on the inference thread."""

    before_attempt: Callable[[str, np.ndarray], None] | None = None  # (model, frames); may raise to fail the try
    on_oom: Callable[[], None] | None = None  # after each CUDA out-of-memory, before the retry


@dataclass(frozen=True)
class EngineOptions:
    """How every call runs: tiling, torch.compile at warm-up, the runtime choice, and the host's hooks."""

    tiles: TileSpec = field(default_factory=TileSpec)
    compile: bool = False
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)
    hooks: EngineHooks = field(default_factory=EngineHooks)


class Engine:
    """Named models on one device. ``run(name, frames)`` is the only inference entry point."""

    def __init__(
        self,
        models: dict[str, LoadedModel],
        *,
        device: torch.device,
        dtype: torch.dtype | str = "auto",
        options: EngineOptions | None = None,
    ) -> None:
        """``dtype`` auto (or ``options.runtime.runtime`` auto with no named dtype): each model's runner measures its
        candidates (:func:`vsr.runner.choose_runtime`); ``runtime.int8`` is filled in per model from its artifact."""
        if not models:
            raise ValueError("the engine needs at least one model")
        options = options or EngineOptions()
        self.models = models
        self.device = device
        self.tiles, self.compile, self.hooks = options.tiles, options.compile, options.hooks
        self.default_model = next(iter(models))
        self._asked = dtype, options.runtime  # what a model loaded later is built with (new_runner)
        self.runners = {name: self.new_runner(lm) for name, lm in models.items()}
        self.dtype: torch.dtype = next(iter(self.runners.values())).dtype  # the first model's (logs, metrics)

    @classmethod
    def open(
        cls,
        entries: Sequence[str],
        *,
        device: str = "auto",
        dtype: str = "auto",
        tiles: TileSpec | None = None,
        compile: bool = False,
        runtime: RuntimeOptions | None = None,
    ) -> Engine:
        """Pick the device from its name, load ``entries`` onto it; ``dtype``/``runtime`` auto: measured per model."""
        dev = pick_device(device)
        models = load_for(entries, dev, dtype)
        options = EngineOptions(tiles=tiles or TileSpec(), compile=compile, runtime=runtime or RuntimeOptions())
        return cls(models, device=dev, dtype=dtype, options=options)

    def new_runner(self, lm: LoadedModel) -> FrameRunner:
        """A runner for ``lm`` built as the engine built its own (device, dtype or its measurement, runtime,
        tiling). Measuring runs here, on the caller's thread."""
        dtype, runtime = self._asked
        return FrameRunner(
            lm.model,
            scale=lm.meta.scale,
            device=self.device,
            dtype=dtype,
            overlap=self.tiles.overlap,
            options=replace(runtime, int8=lm.int8),
        )

    # ---- properties ------------------------------------------------------------------------------------------

    @property
    def names(self) -> list[str]:
        return list(self.models)

    @property
    def dtype_name(self) -> str:
        return DTYPE_NAMES.get(self.dtype, str(self.dtype))

    def scale(self, name: str) -> int:
        return self.models[name].meta.scale

    def runner(self, name: str) -> FrameRunner:
        return self.runners[name]

    def describe(self, name: str) -> dict[str, Any]:
        """Metadata of one model (for ``GET /v2/models/{name}``): the artifact's card and the measured runtime."""
        m = self.models[name].meta
        info = self.runners[name].info
        return {
            "name": name,
            "arch": m.arch,
            "scale": m.scale,
            "parameters": m.parameters,
            "config": m.config,
            "dtype": info.dtype,
            "runtime": info.runtime,
            "precision": info.precision,
            "ms_per_frame": info.ms,
            "probe": list(info.probe),
            "ms_per_megapixel": self.runners[name].cost.ms_per_megapixel,
            "ms_per_megapixel_y": self.runners[name].costs[1].ms_per_megapixel if self.runners[name].luma else None,
            "candidates_ms": dict(info.dtype_ms),
            "refined_ms": dict(info.refine_ms),  # the close candidates again, on a larger frame
            "device": str(self.device),
            "scores": m.scores,
            "created": m.created,
            "git_commit": m.git_commit,
            "license": m.license,
            "notes": m.notes,
        }

    # ---- the inference thread's side -------------------------------------------------------------------------

    def warmup(self) -> None:
        """Run every model once (kernel selection, allocator); with ``compile``, try torch.compile on each model
        at :data:`COMPILE_SIZE` and keep it where it measures faster (failure keeps the eager kernel)."""
        frame = np.zeros((1, *WARMUP_SIZE, 3), np.uint8)
        for lm in self.models.values():
            self._infer(lm, frame, self.tiles)
            if self.device.type == "cpu":  # the stream model choice budgets with it (service/streams/auto.py)
                runner = self.runners[lm.name]
                runner.calibrate_cost(COST_SIZE)
                if runner.luma:  # and with this one for streams whose frames come as planes (vsr/planes.py)
                    runner.calibrate_cost(COST_SIZE, channels=1)
            if self.compile:
                self.runners[lm.name].compile(COMPILE_SIZE)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def run(self, name: str, frames: np.ndarray) -> np.ndarray:
        """uint8 NHWC in -> uint8 NHWC (``scale`` times larger) out. Retries CUDA OOM by splitting / tiling."""
        return self._run(self.models[name], frames, self.tiles)

    def _on_oom(self) -> None:
        """After each CUDA out-of-memory, before the retry: tell the host, free the allocator's cached blocks."""
        if self.hooks.on_oom is not None:
            self.hooks.on_oom()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _run(self, lm: LoadedModel, frames: np.ndarray, tiles: TileSpec) -> np.ndarray:
        try:
            if self.hooks.before_attempt is not None:
                self.hooks.before_attempt(lm.name, frames)
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
        return self.runners[lm.name](frames, pixel_budget=tiles.budget, overlap=tiles.overlap)


def _smaller_tiles(hw: tuple[int, ...], tiles: TileSpec) -> TileSpec | None:
    """Half the current tile (or of the frame when untiled), or None when that would be too small."""
    current = tiles.tile if tiles.tile > 0 else max(hw)
    new = current // 2
    if new < MIN_OOM_TILE or new <= 2 * tiles.overlap:
        return None
    return TileSpec(new, tiles.overlap)
