"""The fast frame kernel: uint8 NHWC in, uint8 NHWC out, for the anchored plain-conv student (``rep_student``).

What it does differently from the reference path (:func:`vsr.inference.upscale_frames`), and why:

- ``/255`` is folded into the head conv's weights and ``x255`` (plus the ``+0.5`` of rounding) into the tail's, so the
  network works in pixel levels and no full-frame scaling pass runs (each pass over a 720p fp32 frame costs ms here).
- conv + ReLU run as one oneDNN primitive (``mkldnn._convolution_pointwise``, what inductor emits), channels-last.
- The tail's output channels are reordered from the pixel shuffle's ``(c, i, j)`` to ``(i, j, c)``: the tail's NHWC
  output then *is* the shuffled frame up to a (H, i, W, j, c) transpose, so anchor (nearest upsampling of the input)
  + pixel shuffle + clamp + round + cast become one strided add into a kept fp32 workspace, a clamp and a cast.
- Compiled (``torch.compile``) when asked and when it measures faster at warm-up: inductor fuses that epilogue into
  one loop. Compilation failing never fails start-up: the eager kernel is kept.

The anchor is added in fp32 (input levels are exact integers), so a bf16 tail only rounds the small residual.
Models of other architectures fall back to the reference path (:class:`ReferenceKernel`), same interface.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from vsr.inference import upscale_frames

log = logging.getLogger(__name__)


class Kernel(Protocol):
    """uint8 NHWC frames in, uint8 NHWC ``scale`` times larger out."""

    scale: int
    dtype: torch.dtype

    def __call__(self, frames: np.ndarray) -> np.ndarray: ...


def student_layers(model: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(weight, bias) of head, body..., tail of an anchored plain-conv student, or None for another architecture."""
    from vsr.archs.student import RepConv, RepStudent

    if not isinstance(model, RepStudent) or model.unshuffle > 1:
        return None  # a space-to-depth student runs the reference path on torch (OpenVINO takes its graph as is)
    layers = []
    for blk in [model.head, *model.body, model.tail]:
        if isinstance(blk, RepConv):
            w, b = blk.fused_kernel() if blk.fused is None else (blk.fused.weight, blk.fused.bias)
        elif isinstance(blk, nn.Conv2d) and blk.bias is not None:
            w, b = blk.weight, blk.bias
        else:
            return None
        if b is None:
            return None
        layers.append((w.detach().float().cpu(), b.detach().float().cpu()))
    return layers


def fold_levels(layers: list[tuple[torch.Tensor, torch.Tensor]], scale: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Rewrite the layers to take and give pixel levels (0..255); tail channels (c, i, j) -> (i, j, c), +0.5 bias.

    Only the head's weights (x/255 enters it) and the tail (its output leaves in levels) change: every hidden
    activation equals the reference's, so the fold is exact up to float rounding.
    """
    out = [(w.clone(), b.clone()) for w, b in layers]
    hw, hb = out[0]
    out[0] = (hw / 255.0, hb)
    tw, tb = out[-1]
    tw, tb = tw * 255.0, tb * 255.0 + 0.5
    cout = tw.shape[0]
    c = cout // (scale * scale)
    # new index (i*scale + j)*c + ch  <-  old index ch*scale*scale + i*scale + j
    order = torch.arange(cout).view(c, scale, scale).permute(1, 2, 0).reshape(-1)
    out[-1] = (tw[order].contiguous(), tb[order].contiguous())
    return out


def _conv_relu_op() -> Callable[..., torch.Tensor] | None:
    op = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)
    return op if op is not None and torch.backends.mkldnn.is_available() else None


class StudentKernel:
    """The fused uint8 kernel for one student on one device and dtype (see the module docstring)."""

    def __init__(self, model: nn.Module, *, scale: int, device: torch.device, dtype: torch.dtype) -> None:
        layers = student_layers(model)
        if layers is None:
            raise TypeError(f"{type(model).__name__} is not an anchored plain-conv student")
        self.scale, self.device, self.dtype = scale, device, dtype
        self.channels = layers[0][0].shape[1]  # 3 (RGB) or 1 (luma)
        folded = fold_levels(layers, scale)
        self.layers = [
            (w.to(device, dtype).contiguous(memory_format=torch.channels_last), b.to(device, dtype)) for w, b in folded
        ]
        self._pointwise = _conv_relu_op() if device.type == "cpu" else None
        self._work: dict[tuple[int, ...], torch.Tensor] = {}  # fp32 epilogue workspace per shape, kept
        self._forward: Callable[[torch.Tensor], torch.Tensor] = self.levels
        self.compiled = False

    # ---- the network in pixel levels ---------------------------------------------------------------------

    def levels(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC tensor -> the tail's output in levels (NCHW view of channels-last memory, dtype ``dtype``)."""
        h = x.permute(0, 3, 1, 2).to(self.dtype)  # NCHW view of NHWC memory = channels-last, no copy
        last = len(self.layers) - 1
        for k, (w, b) in enumerate(self.layers):
            relu = k < last
            if self._pointwise is not None:
                h = self._pointwise(h, w, b, [1, 1], [1, 1], [1, 1], 1, "relu" if relu else "none", [], "")
            else:
                h = F.conv2d(h, w, b, padding=1)
                if relu:
                    h = F.relu_(h)
        return h

    def epilogue(self, y: torch.Tensor, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """out (uint8, N x H x r x W x r x C) = clamp(tail + nearest(x)) truncated; +0.5 rounding is in the bias."""
        n, hgt, wid, c = x.shape
        r = self.scale
        shuffled = y.permute(0, 2, 3, 1).reshape(n, hgt, wid, r, r, c).permute(0, 1, 3, 2, 4, 5)
        key = tuple(out.shape)
        work = self._work.get(key)
        if work is None:
            self._work.clear()  # keep one shape: a stream has one size; a new size replaces it
            work = self._work[key] = torch.empty(key, dtype=torch.float32, device=x.device)
        torch.add(shuffled, x.view(n, hgt, 1, wid, 1, c).float(), out=work)
        work.clamp_(0.0, 255.0)
        return out.copy_(work)

    def _eager(self, x: torch.Tensor) -> torch.Tensor:
        n, hgt, wid, c = x.shape
        r = self.scale
        out = torch.empty((n, hgt, r, wid, r, c), dtype=torch.uint8, device=x.device)
        return self.epilogue(self.levels(x), x, out)

    def _fused_for_compile(self, x: torch.Tensor) -> torch.Tensor:
        n, hgt, wid, c = x.shape
        r = self.scale
        h = x.permute(0, 3, 1, 2).to(self.dtype)
        last = len(self.layers) - 1
        for k, (w, b) in enumerate(self.layers):
            h = F.conv2d(h, w, b, padding=1)
            if k < last:
                h = F.relu(h)
        s = h.permute(0, 2, 3, 1).reshape(n, hgt, wid, r, r, c).permute(0, 1, 3, 2, 4, 5)
        return (s.float() + x.view(n, hgt, 1, wid, 1, c).float()).clamp(0.0, 255.0).to(torch.uint8)

    # ---- public -------------------------------------------------------------------------------------------

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        single = frames.ndim == 3
        if single:
            frames = frames[None]
        if frames.shape[-1] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got frames of shape {frames.shape}")
        frames = np.ascontiguousarray(frames)
        if not frames.flags.writeable:
            frames = frames.copy()  # torch refuses read-only buffers (e.g. PIL-backed arrays)
        n, hgt, wid, c = frames.shape
        with torch.inference_mode():
            x = torch.from_numpy(frames)
            if self.device.type != "cpu":
                x = x.pin_memory().to(self.device, non_blocking=True)
            out = self._forward(x) if self.compiled else self._eager(x)
            res = out.reshape(n, hgt * self.scale, wid * self.scale, c).cpu().numpy()
        return res[0] if single else res

    def try_compile(self, sample: np.ndarray) -> bool:
        """Compile the whole kernel (inductor fuses the epilogue); keep it only if it is faster on ``sample``.

        Costs ~26 s the first time on 2 cores (~5 s cached). Any failure leaves the eager kernel in place.
        """
        eager_s = time_call(lambda: self(sample))
        try:
            fn = torch.compile(self._fused_for_compile, dynamic=False)
            with torch.inference_mode():
                fn(torch.from_numpy(np.ascontiguousarray(sample[None] if sample.ndim == 3 else sample)))
        except Exception as e:  # noqa: BLE001 - any compiler failure means "stay eager"
            log.warning("torch.compile failed (%s: %s); keeping the eager kernel", type(e).__name__, e)
            return False
        self._forward, self.compiled = fn, True
        compiled_s = time_call(lambda: self(sample))
        if compiled_s >= eager_s:
            self._forward, self.compiled = self.levels, False
        log.info(
            "kernel eager %.1f ms, compiled %.1f ms: using %s",
            eager_s * 1e3,
            compiled_s * 1e3,
            "compiled" if self.compiled else "eager",
        )
        return self.compiled


class ReferenceKernel:
    """Any other architecture: the reference path behind the same interface."""

    def __init__(self, model: nn.Module, *, scale: int, device: torch.device, dtype: torch.dtype) -> None:
        self.model, self.scale, self.device, self.dtype = model, scale, device, dtype
        self.compiled = False

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return upscale_frames(self.model, frames, scale=self.scale, device=self.device, dtype=self.dtype)


def time_call(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best-of-``repeat`` seconds of ``fn`` after one untimed call (best-of: other processes only add time)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best
