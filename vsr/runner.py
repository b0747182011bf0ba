"""One model's frame path, the same for every caller (CLI, service, streams, video): kernel + dtype + tiling.

- Kernel: :class:`vsr.kernel.StudentKernel` for anchored plain-conv students (on CUDA wrapped in
  :class:`vsr.gpu.GraphKernel`: fp16, channels-last, pinned buffers, CUDA graphs), else the reference path.
- dtype: fp16 on CUDA; on CPU **measured** at build time, fp32 against bf16 on a small frame, the faster kept
  (never from CPU flags: bf16 is ~3x faster than fp32 on a Zen 5 with AVX512-BF16, and oneDNN refuses it, or runs a
  ~10x slower reference conv, on an AVX2-only Zen 3).
- Tiling by pixels (:mod:`vsr.tiling`): whole frames up to ~1 MP on CPU / 1080p on CUDA; batches larger than the
  budget run in chunks of frames, and only a frame larger than the budget is tiled.
- Luma models (artifact ``input_space: "y"``, loaded wrapped in ``vsr.luma.LumaAsRGB``): the wrapper is opened
  and the bare Y model runs on the kernel; RGB frames go through :mod:`vsr.yuv` (colour matrices, chroma bilinear).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn

from vsr.kernel import Kernel, ReferenceKernel, StudentKernel, student_layers, time_call
from vsr.tiling import DEFAULT_OVERLAP, max_pixels, plan_grid, run_tiled

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
PROBE_SIZE = (96, 160)  # LR frame the dtype measurement runs on: small, since a slow bf16 path may be ~10x fp32


@dataclass
class RunnerInfo:
    """What was chosen and why (for logs, ``/v2/models``, benchmarks)."""

    kernel: str
    dtype: str
    compiled: bool = False
    dtype_ms: dict[str, float | None] = field(default_factory=dict)  # measured probe time per candidate


def make_kernel(model: nn.Module, *, scale: int, device: torch.device, dtype: torch.dtype) -> Kernel:
    if student_layers(model) is not None:
        kernel = StudentKernel(model, scale=scale, device=device, dtype=dtype)
        if device.type == "cuda":
            from vsr.gpu import GraphKernel  # pinned staging + copy stream + a CUDA graph per shape bucket

            return GraphKernel(kernel)
        return kernel
    return ReferenceKernel(model, scale=scale, device=device, dtype=dtype)


def choose_dtype(
    model: nn.Module, *, scale: int, device: torch.device, channels: int = 3
) -> tuple[torch.dtype, dict[str, float | None]]:
    """fp16 on CUDA; on CPU the faster of fp32 and bf16 on a probe frame (None = that dtype failed to run)."""
    if device.type == "cuda":
        return torch.float16, {}
    probe = np.random.default_rng(0).integers(0, 256, (1, *PROBE_SIZE, channels), dtype=np.uint8)
    times: dict[str, float | None] = {}
    for name in ("fp32", "bf16"):
        try:
            kernel = make_kernel(model, scale=scale, device=device, dtype=DTYPES[name])
            times[name] = round(1000 * time_call(partial(kernel, probe)), 2)
        except RuntimeError as e:  # e.g. oneDNN: "bf16 path needs the cpu support avx_ne_convert or avx512bw..."
            log.info("dtype %s unusable here: %s", name, str(e).splitlines()[0])
            times[name] = None
    ok = {k: v for k, v in times.items() if v is not None}
    best = min(ok, key=lambda k: ok[k]) if ok else "fp32"
    return DTYPES[best], times


class FrameRunner:
    """uint8 RGB NHWC (or HWC) in -> uint8 RGB ``scale`` x out, through the kernel chosen for this machine."""

    def __init__(
        self,
        model: nn.Module,
        *,
        scale: int,
        device: torch.device,
        dtype: torch.dtype | str = "auto",
        overlap: int = DEFAULT_OVERLAP,
        pixel_budget: int | None = None,
    ) -> None:
        self.scale, self.device, self.overlap = scale, device, overlap
        inner = getattr(model, "luma", None)  # vsr.luma.LumaAsRGB: run its bare Y model on the kernel
        if isinstance(inner, nn.Module):
            model = inner
        self.luma = getattr(model, "colors", 3) == 1
        channels = 1 if self.luma else 3
        dtype_ms: dict[str, float | None] = {}
        if dtype == "auto":
            dtype, dtype_ms = choose_dtype(model, scale=scale, device=device, channels=channels)
        elif isinstance(dtype, str):
            dtype = DTYPES[dtype]
        if device.type == "cuda":
            model = model.to(device, dtype).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.dtype = dtype
        self.kernel = make_kernel(model, scale=scale, device=device, dtype=dtype)
        self.pixel_budget = pixel_budget or max_pixels(device, bytes_per_pixel=self._bytes_per_pixel(model))
        self.info = RunnerInfo(type(self.kernel).__name__, DTYPE_NAMES.get(dtype, str(dtype)), False, dtype_ms)

    @staticmethod
    def _bytes_per_pixel(model: nn.Module) -> int:
        widest = max((m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)), default=64)
        return 2 * widest * 4 + 64  # two live activation maps (fp32 worst case) + in/out frames

    def compile(self, sample_hw: tuple[int, int]) -> bool:
        """Try torch.compile on this frame size; kept only if faster (see ``StudentKernel.try_compile``)."""
        if not isinstance(self.kernel, StudentKernel):
            return False
        c = self.kernel.channels
        sample = np.random.default_rng(0).integers(0, 256, (1, *sample_hw, c), dtype=np.uint8)
        self.info.compiled = self.kernel.try_compile(sample)
        return self.info.compiled

    def __call__(
        self, frames: np.ndarray, *, pixel_budget: int | None = None, overlap: int | None = None
    ) -> np.ndarray:
        """``pixel_budget``/``overlap`` override the runner's (e.g. the engine's OOM retry asks for smaller tiles)."""
        single = frames.ndim == 3
        if single:
            frames = frames[None]
        out = self._run(frames, pixel_budget or self.pixel_budget, self.overlap if overlap is None else overlap)
        return out[0] if single else out

    def _run(self, frames: np.ndarray, budget: int, overlap: int) -> np.ndarray:
        n, h, w = frames.shape[:3]
        per_call = max(budget // (h * w), 1)  # frames per call within the pixel budget
        if n > per_call:
            return np.concatenate([self._run(frames[i : i + per_call], budget, overlap) for i in range(0, n, per_call)])
        grid = plan_grid(h, w, budget=budget, overlap=overlap, batch=n)
        if self.luma:
            from vsr import yuv

            return yuv.upscale_rgb_with_luma(lambda y: run_tiled(self.kernel, y, grid, self.scale), frames, self.scale)
        return run_tiled(self.kernel, frames, grid, self.scale)
