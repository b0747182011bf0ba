"""The CUDA side of the frame path: staged copies, CUDA graphs per shape, GPU JPEG and NVDEC/NVENC when present.

Written for a CUDA host and exercised there by ``scripts/gpu_check.sh`` (tests marked ``gpu``); on CPU only the
pure-Python parts (bucket bookkeeping, codec choice) run. Everything here is optional: a missing piece (no
torchvision, no NVENC in this FFmpeg build, a graph capture that fails) falls back to the plain path.

- :class:`GraphKernel`: per (batch, height, width) bucket, a preallocated **pinned** host input/output pair, device
  buffers, a **copy stream** that uploads the next frames while the compute stream runs, and the fused kernel
  captured as a **CUDA graph** (one launch instead of ~10 kernels + allocator calls per frame). Buckets are
  least-recently-used and capped (``max_buckets``), since each holds a graph and ~2 frames of buffers.
- :func:`encode_jpeg_cuda`: nvJPEG through ``torchvision.io.encode_jpeg`` on a CUDA tensor, so only compressed
  bytes cross PCIe; None when torchvision is not importable (it is not beside the pinned CPU torch here).
- :func:`pick_codec`: ``h264_cuvid`` / ``h264_nvenc`` (and HEVC) when this PyAV's FFmpeg has them, else software.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

HW_DECODERS = {"h264": "h264_cuvid", "hevc": "hevc_cuvid"}
HW_ENCODERS = {"libx264": "h264_nvenc", "h264": "h264_nvenc", "libx265": "hevc_nvenc", "hevc": "hevc_nvenc"}


def available_codecs() -> set[str]:
    try:
        import av

        return set(av.codecs_available)
    except ImportError:
        return set()


def pick_codec(name: str, *, device: torch.device, encode: bool, available: set[str] | None = None) -> str:
    """The NVENC/NVDEC variant of ``name`` when running on CUDA and this FFmpeg has it, else ``name``."""
    if device.type != "cuda":
        return name
    table = HW_ENCODERS if encode else HW_DECODERS
    hw = table.get(name)
    codecs = available if available is not None else available_codecs()
    return hw if hw is not None and hw in codecs else name


def encode_jpeg_cuda(frame: torch.Tensor, quality: int = 80) -> bytes | None:
    """uint8 HWC RGB on a CUDA device -> JPEG bytes via nvJPEG, or None when torchvision is unavailable."""
    try:
        from torchvision.io import encode_jpeg
    except Exception:  # noqa: BLE001 - torchvision missing or broken beside this torch: use the CPU encoder
        return None
    data = encode_jpeg(frame.permute(2, 0, 1).contiguous(), quality=quality)
    return bytes(data.cpu().numpy().tobytes()) if isinstance(data, torch.Tensor) else None


@dataclass
class _Bucket:
    host_in: torch.Tensor  # pinned uint8 NHWC
    host_out: torch.Tensor  # pinned uint8 N x H x r x W x r x C
    dev_in: torch.Tensor
    dev_out: torch.Tensor
    graph: Any | None  # torch.cuda.CUDAGraph, or None when capture failed (eager replay)
    uploaded: Any  # torch.cuda.Event


class GraphKernel:
    """Wrap a :class:`vsr.kernel.StudentKernel` on CUDA with pinned staging, a copy stream and CUDA graphs."""

    def __init__(self, kernel: Any, *, max_buckets: int = 8, graphs: bool = True) -> None:
        if kernel.device.type != "cuda":
            raise ValueError("GraphKernel needs a CUDA kernel")
        self.kernel = kernel
        self.scale, self.dtype, self.device = kernel.scale, kernel.dtype, kernel.device
        self.max_buckets = max_buckets
        self.use_graphs = graphs
        self.copy_stream = torch.cuda.Stream(device=self.device)
        self._buckets: OrderedDict[tuple[int, ...], _Bucket] = OrderedDict()

    def _forward(self, b: _Bucket) -> None:
        self.kernel.epilogue(self.kernel.levels(b.dev_in), b.dev_in, b.dev_out)

    def _bucket(self, shape: tuple[int, ...]) -> _Bucket:
        b = self._buckets.get(shape)
        if b is not None:
            self._buckets.move_to_end(shape)
            return b
        n, h, w, c = shape
        r = self.scale
        out_shape = (n, h, r, w, r, c)
        b = _Bucket(
            host_in=torch.empty(shape, dtype=torch.uint8).pin_memory(),
            host_out=torch.empty(out_shape, dtype=torch.uint8).pin_memory(),
            dev_in=torch.zeros(shape, dtype=torch.uint8, device=self.device),
            dev_out=torch.empty(out_shape, dtype=torch.uint8, device=self.device),
            graph=None,
            uploaded=torch.cuda.Event(),
        )
        if self.use_graphs:
            b.graph = self._capture(b)
        self._buckets[shape] = b
        while len(self._buckets) > self.max_buckets:
            self._buckets.popitem(last=False)
        return b

    def _capture(self, b: _Bucket) -> Any | None:
        try:
            side = torch.cuda.Stream(device=self.device)
            side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(side):
                for _ in range(2):  # warm-up outside the graph: cuDNN picks algorithms, workspace is allocated
                    self._forward(b)
            torch.cuda.current_stream(self.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self._forward(b)
            return graph
        except RuntimeError as e:  # capture is best effort: replaying eagerly is correct, only slower
            log.warning("CUDA graph capture failed for %s (%s); running eagerly", tuple(b.dev_in.shape), e)
            return None

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        single = frames.ndim == 3
        if single:
            frames = frames[None]
        n, h, w, c = frames.shape
        with torch.inference_mode():
            b = self._bucket((n, h, w, c))
            b.host_in.numpy()[...] = frames
            with torch.cuda.stream(self.copy_stream):
                b.dev_in.copy_(b.host_in, non_blocking=True)
                b.uploaded.record(self.copy_stream)
            compute = torch.cuda.current_stream(self.device)
            compute.wait_event(b.uploaded)
            if b.graph is not None:
                b.graph.replay()
            else:
                self._forward(b)
            b.host_out.copy_(b.dev_out, non_blocking=True)
            compute.synchronize()
            out = b.host_out.numpy().reshape(n, h * self.scale, w * self.scale, c).copy()
        return out[0] if single else out
