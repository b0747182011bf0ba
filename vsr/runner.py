"""One model's frame path, the same for every caller (CLI, service, streams, video): runtime + precision + tiling.

- Kernel: on CPU, OpenVINO (:class:`vsr.ov.OvKernel`: f32, bf16, or the artifact's int8 IR) or torch's
  :class:`vsr.kernel.StudentKernel` for anchored plain-conv students (on CUDA wrapped in :class:`vsr.gpu.GraphKernel`:
  fp16, channels-last, pinned buffers, CUDA graphs), else torch's reference path.
- Runtime and precision: fp16 torch on CUDA; on CPU **measured** at build time (:func:`choose_runtime`): torch
  fp32/bf16 and OpenVINO f32/bf16/int8 on a probe frame, the fastest kept (never from CPU flags: bf16 is ~3x faster
  than fp32 on a Zen 5 with AVX512-BF16, and oneDNN refuses it, or runs a ~10x slower reference conv, on an AVX2-only
  Zen 3). Without ``openvino`` installed, torch alone is measured.
- Tiling by pixels (:mod:`vsr.tiling`): whole frames up to ~1 MP on CPU / 1080p on CUDA; batches larger than the
  budget run in chunks of frames, and only a frame larger than the budget is tiled.
- Luma models (artifact ``input_space: "y"``, loaded wrapped in ``vsr.luma.LumaAsRGB``): the wrapper is opened
  and the bare Y model is built into each kernel. On OpenVINO the colour work runs inside the graph
  (:func:`vsr.ov.rgb_around_luma`: RGB frames in and out, fused with the net); a torch kernel takes Y, and RGB frames
  go through :mod:`vsr.yuv` around it (colour matrices and chroma bilinear as full-frame float passes in torch, which
  cost about as much as a small luma net). Candidates are timed on RGB frames either way (:func:`rgb_fn`).
- A luma model also takes Y alone: uint8 N x H x W x 1 in, Y ``scale`` x out (a stream's frame as decoder planes,
  :mod:`vsr.planes`). On OpenVINO that runs the bare Y graph (built on first use, same precision: no colour work);
  a torch Y kernel runs as it is. Its cost is kept apart (``costs[1]``): a Y frame costs about 2/3 of an RGB one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vsr.kernel import Kernel, ReferenceKernel, StudentKernel, student_layers, time_call
from vsr.tiling import DEFAULT_OVERLAP, max_pixels, model_alignment, plan_grid, run_tiled

log = logging.getLogger(__name__)

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}
PROBE_SIZE = (96, 160)  # LR frame the dtype measurement runs on: small, since a slow bf16 path may be ~10x fp32
REFINE_SIZE = (180, 320)  # LR frame the candidates close on the probe are timed on again (a quarter camera frame)
CLOSE = 1.35  # "close": within this factor of the fastest on the probe


@dataclass
class RunnerInfo:
    """What was chosen and why (for logs, ``/v2/models``, benchmarks)."""

    kernel: str
    dtype: str
    compiled: bool = False
    dtype_ms: dict[str, float | None] = field(default_factory=dict)  # probe ms per candidate ("openvino/int8")
    runtime: str = "torch"  # torch | openvino
    precision: str = "fp32"  # fp32 | bf16 | fp16 | int8
    probe: tuple[int, int] = PROBE_SIZE  # the LR frame the candidates were timed on
    ms: float | None = None  # the chosen candidate's probe time
    refine_ms: dict[str, float] = field(default_factory=dict)  # candidates close on the probe, at REFINE_SIZE


@dataclass(frozen=True)
class RuntimeOptions:
    """Which runtimes may run a model. ``runtime``: auto (measured), torch or openvino; ``int8``: the artifact's
    int8 IR when it carries one that passed its check at export; ``cache_dir``: OpenVINO's compiled-model cache."""

    runtime: str = "auto"
    int8: Path | None = None
    cache_dir: Path | None = None


def make_kernel(model: nn.Module, *, scale: int, device: torch.device, dtype: torch.dtype) -> Kernel:
    if student_layers(model) is not None:
        kernel = StudentKernel(model, scale=scale, device=device, dtype=dtype)
        if device.type == "cuda":
            from vsr.gpu import GraphKernel  # pinned staging + copy stream + a CUDA graph per shape bucket

            return GraphKernel(kernel)
        return kernel
    return ReferenceKernel(model, scale=scale, device=device, dtype=dtype)


def candidates(device: torch.device, dtype: str, opts: RuntimeOptions) -> list[tuple[str, str]]:
    """(runtime, precision) pairs to measure, the fallback first. CUDA: torch only (fp16 unless named).

    ``dtype`` auto: every precision; named: only it. Runtime auto with a named precision keeps torch (what naming a
    dtype meant before OpenVINO), except int8, which only OpenVINO runs (and only from the artifact's IR)."""
    if device.type != "cpu":
        return [("torch", "fp16" if dtype == "auto" else dtype)]
    ov_ok = _ov_available()
    if opts.runtime == "openvino" and not ov_ok:
        log.warning("runtime openvino asked for, but openvino is not installed: using torch")
    runtimes = {"auto": ["torch", "openvino"], "torch": ["torch"], "openvino": ["openvino"]}[opts.runtime]
    if dtype != "auto" and opts.runtime == "auto":
        runtimes = ["openvino"] if dtype == "int8" else ["torch"]
    precisions = ["fp32", "bf16", "int8"] if dtype == "auto" else [dtype]
    out = [
        (rt, p)
        for rt in runtimes
        for p in precisions
        if (rt == "torch" and p != "int8")
        or (rt == "openvino" and ov_ok and p != "fp16" and (p != "int8" or opts.int8 is not None))
    ]
    return out or [("torch", "fp32" if dtype in ("auto", "int8") else dtype)]


def needs_yuv(kernel: Kernel, luma: bool) -> bool:
    """True when ``kernel`` of a luma model takes Y (torch), False when it takes RGB (OpenVINO's, or an RGB model's)."""
    return luma and int(getattr(kernel, "channels", 1)) == 1


def rgb_fn(kernel: Kernel, *, luma: bool, scale: int) -> Callable[[np.ndarray], np.ndarray]:
    """RGB uint8 NHWC in -> out through ``kernel`` (with :mod:`vsr.yuv` around a Y kernel), untiled."""
    if needs_yuv(kernel, luma):
        from vsr import yuv

        return partial(yuv.upscale_rgb_with_luma, kernel, scale=scale)
    return kernel


def _ov_available() -> bool:
    from vsr import ov

    return ov.available()


class _Builder:
    """Builds the kernel of one candidate; converts the torch model to an OpenVINO graph once for all of them."""

    def __init__(self, model: nn.Module, *, scale: int, device: torch.device, opts: RuntimeOptions) -> None:
        self.model, self.scale, self.device, self.opts = model, scale, device, opts
        self.luma = int(getattr(model, "colors", 3)) == 1
        self._graph: object | None = None  # the float graph, converted once for every candidate
        self._int8: object | None = None  # the int8 IR, read once (a luma model's Y kernel reuses it)

    def __call__(self, runtime: str, precision: str, *, rgb: bool = True) -> Kernel:
        """The kernel; ``rgb`` False: a luma model's bare Y graph (uint8 Y in and out, no colour work)."""
        if runtime == "torch":
            return make_kernel(self.model, scale=self.scale, device=self.device, dtype=DTYPES[precision])
        from vsr import ov

        cache = self.opts.cache_dir or ov.default_cache_dir()
        if precision == "int8":
            assert self.opts.int8 is not None
            if self._int8 is None:
                self._int8 = ov.read_int8(self.opts.int8)
            graph = self._int8
        else:
            if self._graph is None:
                self._graph = ov.levels_model(self.model, int(getattr(self.model, "colors", 3)))
            graph = self._graph
        if self.luma and rgb:  # RGB in and out: the colour work in the graph, not in torch around it
            graph = ov.rgb_around_luma(graph, self.scale)
        return ov.OvKernel(graph, scale=self.scale, precision=precision, cache_dir=cache)


def choose_runtime(
    model: nn.Module,
    *,
    scale: int,
    device: torch.device,
    dtype: str = "auto",
    opts: RuntimeOptions | None = None,
    build: _Builder | None = None,
) -> tuple[Kernel, RunnerInfo]:
    """The kernel of the fastest candidate (:func:`candidates`) on a probe frame, and what was measured.

    A candidate that fails to build or run (e.g. oneDNN refusing bf16 on an AVX2 CPU, a broken IR) is recorded as
    None and skipped; a single candidate's error is raised. The probe is an RGB frame for every model: a luma model's
    torch candidates are timed with :mod:`vsr.yuv`'s colour work around them, as they run (:func:`rgb_fn`)."""
    opts = opts or RuntimeOptions()
    build = build or _Builder(model, scale=scale, device=device, opts=opts)
    cands = candidates(device, dtype, opts)
    probe = np.random.default_rng(0).integers(0, 256, (1, *PROBE_SIZE, 3), dtype=np.uint8)
    times: dict[str, float | None] = {}
    ran: list[tuple[float, str, str, Kernel]] = []
    error: Exception | None = None
    for rt, p in cands:
        try:
            kernel = build(rt, p)
            fn = rgb_fn(kernel, luma=build.luma, scale=scale)
            ms = round(1000 * time_call(partial(fn, probe)), 2)  # one candidate too: its cost is reported
        except (RuntimeError, ValueError, OSError) as e:  # oneDNN/OpenVINO: unsupported here; an unreadable IR
            if len(cands) == 1:
                raise
            log.info("%s %s unusable here: %s", rt, p, str(e).splitlines()[0] if str(e) else type(e).__name__)
            times[f"{rt}/{p}"], error = None, e
            continue
        times[f"{rt}/{p}"] = ms
        ran.append((ms, rt, p, kernel))
    if not ran:
        raise error or RuntimeError("no runtime could run the model")
    refined = _refine(ran, build.luma, scale)
    ms, rt, p, kernel = min(ran, key=lambda c: (refined.get(f"{c[1]}/{c[2]}", float("inf")), c[0]))
    log.info("runtime measured on %s: %s (refined %s) -> %s %s", device, times, refined, rt, p)
    return kernel, RunnerInfo("", p, dtype_ms=times, runtime=rt, precision=p, ms=ms, refine_ms=refined)


def _refine(ran: list[tuple[float, str, str, Kernel]], luma: bool, scale: int) -> dict[str, float]:
    """Candidates within :data:`CLOSE` of the fastest on the probe, timed again on a :data:`REFINE_SIZE` frame (ms).

    The probe's small frame is mostly fixed per-call work: on an Intel Xeon (AMX) x2-camera-lite measured OpenVINO
    bf16 and int8 both 1.07 ms there, and bf16 took the tie, at 15.1 ms on a 640x360 frame against int8's ~11."""
    best = min(c[0] for c in ran)
    close = [c for c in ran if c[0] <= CLOSE * best]
    if len(close) < 2:
        return {}
    frame = np.random.default_rng(1).integers(0, 256, (1, *REFINE_SIZE, 3), dtype=np.uint8)
    return {
        f"{rt}/{p}": round(1000 * time_call(partial(rgb_fn(kernel, luma=luma, scale=scale), frame)), 2)
        for _, rt, p, kernel in close
    }


def choose_dtype(model: nn.Module, *, scale: int, device: torch.device) -> tuple[torch.dtype, dict[str, float | None]]:
    """torch only: fp16 on CUDA; on CPU the faster of fp32 and bf16 on a probe frame (None = failed to run)."""
    if device.type == "cuda":
        return torch.float16, {}
    kernel, info = choose_runtime(model, scale=scale, device=device, opts=RuntimeOptions(runtime="torch"))
    return kernel.dtype, {k.split("/")[1]: v for k, v in info.dtype_ms.items()}


def _ms_per_megapixel(pixels: int, seconds: float) -> float:
    return seconds * 1e3 * 1e6 / pixels


class Cost:
    """What a megapixel of input costs this runner, in ms: the probe's figure until frames have run, then a moving
    average of the frames it ran (what the stream model choice budgets with; written by the one inference thread).

    An average older than :data:`STALE_S` says little of now (load moves: streams came, another process took a core),
    so the first call after such a gap restarts it: a plain mean of the calls since, until it has :data:`WEIGHT`'s
    memory again. That is what lets a few probe frames re-time a model that ``auto`` stopped running."""

    WEIGHT = 0.1  # of each new call in the average: ~10 calls to follow a change (another process took a core)
    STALE_S = 30.0

    def __init__(self, probe_ms: float | None, probe_pixels: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.ms_per_megapixel: float | None = None if probe_ms is None else round(probe_ms * 1e6 / probe_pixels, 2)
        self.calls = 0
        self._clock = clock
        self._last: float | None = None  # when a call or a calibration last set the figure
        self._fresh = 0  # calls averaged since the figure was last restarted

    def set(self, pixels: int, seconds: float) -> None:
        """Replace the average by one measurement (a calibration)."""
        self.ms_per_megapixel = round(_ms_per_megapixel(pixels, seconds), 2)
        self._last, self._fresh = self._clock(), 1

    def observe(self, pixels: int, seconds: float) -> None:
        if pixels <= 0:
            return
        ms = _ms_per_megapixel(pixels, seconds)
        now, old = self._clock(), self.ms_per_megapixel
        if old is None or self._last is None or now - self._last > self.STALE_S:
            old, self._fresh = ms, 0
        # a mean of the fresh calls, then a moving average: never the last call alone once there are several
        # (a frame's first call may include compiling its shape)
        weight = max(self.WEIGHT, 1.0 / (self._fresh + 1))
        self.ms_per_megapixel = round(old + weight * (ms - old), 2)
        self._last, self._fresh = now, self._fresh + 1
        self.calls += 1

    def age_s(self) -> float:
        """Seconds since a call or a calibration last set the figure (infinite: never)."""
        return float("inf") if self._last is None else self._clock() - self._last

    def frame_ms(self, height: int, width: int) -> float | None:
        """The cost of one ``height`` x ``width`` frame, or None when nothing was measured."""
        m = self.ms_per_megapixel
        return None if m is None else m * height * width / 1e6


class FrameRunner:
    """uint8 RGB NHWC (or HWC) in -> uint8 RGB ``scale`` x out, through the kernel chosen for this machine (a luma
    model: also Y N x H x W x 1 in -> Y out)."""

    def __init__(
        self,
        model: nn.Module,
        *,
        scale: int,
        device: torch.device,
        dtype: torch.dtype | str = "auto",
        overlap: int = DEFAULT_OVERLAP,
        pixel_budget: int | None = None,
        options: RuntimeOptions | None = None,
    ) -> None:
        """``dtype``: auto (measured with the runtime, :func:`choose_runtime`), a name or a torch dtype."""
        self.scale, self.device, self.overlap = scale, device, overlap
        inner = getattr(model, "luma", None)  # vsr.luma.LumaAsRGB: run its bare Y model on the kernel
        if isinstance(inner, nn.Module):
            model = inner
        self.luma = getattr(model, "colors", 3) == 1
        name = dtype if isinstance(dtype, str) else DTYPE_NAMES.get(dtype, "fp32")
        if device.type == "cuda":
            cuda_dtype = DTYPES["fp16" if name == "auto" else name]
            model = model.to(device, cuda_dtype).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        # one builder for the runtime choice and a luma model's Y kernel: the graph is converted (or read) once
        self._build = _Builder(model, scale=scale, device=device, opts=options or RuntimeOptions())
        self.kernel, self.info = choose_runtime(
            model, scale=scale, device=device, dtype=name, opts=options, build=self._build
        )
        self.info.kernel = type(self.kernel).__name__
        self.yuv = needs_yuv(self.kernel, self.luma)  # a torch Y kernel: the colour work in torch around it
        self.dtype = self.kernel.dtype
        # what a megapixel costs, by input channels: RGB frames (the probe's figure) and a luma model's Y frames
        self.costs = {3: Cost(self.info.ms, PROBE_SIZE[0] * PROBE_SIZE[1]), 1: Cost(None, 1)}
        self._y_kernel: Kernel | None = self.kernel if self.yuv else None
        self.align = model_alignment(model)
        self.pixel_budget = pixel_budget or max_pixels(device, bytes_per_pixel=self._bytes_per_pixel(model))

    @staticmethod
    def _bytes_per_pixel(model: nn.Module) -> int:
        widest = max((m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)), default=64)
        return 2 * widest * 4 + 64  # two live activation maps (fp32 worst case) + in/out frames

    def compile(self, sample_hw: tuple[int, int]) -> bool:
        """Try torch.compile on this frame size; kept only if faster (see ``StudentKernel.try_compile``)."""
        if not isinstance(self.kernel, StudentKernel):
            return False  # the reference path, or OpenVINO (compiled already)
        c = self.kernel.channels
        sample = np.random.default_rng(0).integers(0, 256, (1, *sample_hw, c), dtype=np.uint8)
        self.info.compiled = self.kernel.try_compile(sample)
        return self.info.compiled

    def __call__(
        self, frames: np.ndarray, *, pixel_budget: int | None = None, overlap: int | None = None
    ) -> np.ndarray:
        """``pixel_budget``/``overlap`` override the runner's (e.g. the engine's OOM retry asks for smaller tiles)."""
        """Frames with 3 channels are RGB; with 1, a luma model's Y (:mod:`vsr.planes`): Y ``scale`` x comes back."""
        single = frames.ndim == 3
        if single:
            frames = frames[None]
        channels = frames.shape[-1]
        if channels not in (1, 3) or (channels == 1 and not self.luma):
            raise ValueError(f"expected RGB frames{' or Y' if self.luma else ''}, got frames of shape {frames.shape}")
        kernel = self.kernel if channels == 3 else self.y_kernel
        compiles, t0 = getattr(kernel, "compiles", 0), time.perf_counter()
        out = self._run(frames, pixel_budget or self.pixel_budget, self.overlap if overlap is None else overlap)
        if getattr(kernel, "compiles", 0) == compiles:  # a call that compiled a new shape says nothing of cost
            self.costs[channels].observe(frames.shape[0] * frames.shape[1] * frames.shape[2], time.perf_counter() - t0)
        return out[0] if single else out

    @property
    def cost(self) -> Cost:
        """The cost of RGB frames (what ``/v2/models`` reports); :attr:`costs` has the Y frames' too."""
        return self.costs[3]

    @property
    def y_kernel(self) -> Kernel:
        """A luma model's kernel on Y frames: the torch kernel itself, or OpenVINO's bare Y graph (built now)."""
        if self._y_kernel is None:
            if not self.luma:
                raise ValueError("this model takes RGB frames, not Y")
            self._y_kernel = self._build(self.info.runtime, self.info.precision, rgb=False)
        return self._y_kernel

    def calibrate_cost(self, size: tuple[int, int], channels: int = 3) -> float:
        """Time one ``size`` frame (best of 3 after an untimed call) and make it the cost: the probe's tiny frame
        overstates a camera frame's cost per megapixel (fixed per-call work), and a model that ``auto`` does not
        run is measured only by its occasional probe frames. ``channels`` 1: a luma model's Y frames. Returns the
        ms per frame."""
        frame = np.random.default_rng(0).integers(0, 256, (1, *size, channels), dtype=np.uint8)
        seconds = time_call(partial(self._run, frame, self.pixel_budget, self.overlap))
        self.costs[channels].set(size[0] * size[1], seconds)
        return round(seconds * 1e3, 2)

    def _run(self, frames: np.ndarray, budget: int, overlap: int) -> np.ndarray:
        n, h, w = frames.shape[:3]
        per_call = max(budget // (h * w), 1)  # frames per call within the pixel budget
        if n > per_call:
            return np.concatenate([self._run(frames[i : i + per_call], budget, overlap) for i in range(0, n, per_call)])
        grid = plan_grid(h, w, budget=budget, overlap=overlap, batch=n)
        if frames.shape[-1] == 1:  # a luma model's Y: the bare Y kernel, no colour work
            return run_tiled(self.y_kernel, frames, grid, self.scale, self.align)
        if self.yuv:
            from vsr import yuv

            def tiled(y: np.ndarray) -> np.ndarray:
                return run_tiled(self.kernel, y, grid, self.scale, self.align)

            return yuv.upscale_rgb_with_luma(tiled, frames, self.scale)
        return run_tiled(self.kernel, frames, grid, self.scale, self.align)
