"""The inference contract, written once.

- Frames at every boundary are ``uint8`` RGB, HWC (or NHWC for a batch) numpy arrays.
- Models see ``float`` NCHW in [0, 1] on their device, in the engine's dtype (fp32, fp16 on CUDA, bf16 on CPU with
  AMX), channels-last memory format; outputs are clamped to [0, 1], rounded, returned as uint8 NHWC.
- No padding is needed by our architectures (all convs are "same"); large frames are split into tiles with an
  ``overlap`` margin in LR pixels on every side and only each tile's centre is kept, so the tiled result equals the
  untiled one wherever the receptive field fits inside the margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


def to_tensor(frames: np.ndarray, *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """uint8 NHWC (or HWC) -> float NCHW in [0, 1], channels-last, on ``device``."""
    if frames.ndim == 3:
        frames = frames[None]
    frames = np.ascontiguousarray(frames)
    if not frames.flags.writeable:
        frames = frames.copy()  # torch refuses read-only buffers (e.g. PIL-backed arrays)
    t = torch.from_numpy(frames)
    # on CUDA: pinned host memory -> async H2D copy
    t = t.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else t.to(device)
    t = t.permute(0, 3, 1, 2).to(dtype).div_(255.0)
    return t.contiguous(memory_format=torch.channels_last)


def to_frames(t: torch.Tensor) -> np.ndarray:
    """float NCHW in ~[0, 1] -> uint8 NHWC on the host (note: a device sync point)."""
    t = t.float().clamp_(0.0, 1.0).mul_(255.0).round_().to(torch.uint8)
    return t.permute(0, 2, 3, 1).contiguous().cpu().numpy()


@dataclass(frozen=True)
class TileSpec:
    """Tiling in LR pixels: ``tile`` is the core size (0 = never tile), ``overlap`` the margin on each side."""

    tile: int = 0
    overlap: int = 16


def _spans(n: int, tile: int) -> list[tuple[int, int]]:
    return [(s, min(s + tile, n)) for s in range(0, n, tile)]


def run_model(model: nn.Module, x: torch.Tensor, *, scale: int, tiles: TileSpec = TileSpec()) -> torch.Tensor:
    """Run ``model`` on NCHW ``x``, tiling with overlap when the frame is larger than ``tiles.tile``."""
    _, _, h, w = x.shape
    if tiles.tile <= 0 or (h <= tiles.tile and w <= tiles.tile):
        return model(x)
    out = x.new_empty((x.shape[0], 3, h * scale, w * scale))
    m = tiles.overlap
    for y0, y1 in _spans(h, tiles.tile):
        for x0, x1 in _spans(w, tiles.tile):
            py0, py1 = max(y0 - m, 0), min(y1 + m, h)
            px0, px1 = max(x0 - m, 0), min(x1 + m, w)
            sr = model(x[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * scale, (x0 - px0) * scale
            out[:, :, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = sr[
                :, :, oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale
            ]
    return out


def autocast_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The autocast dtype for reduced precision, or None for fp32."""
    return dtype if dtype in (torch.float16, torch.bfloat16) else None


def cpu_has_amx_bf16() -> bool:
    """True when this CPU runs bf16 convs fast (AVX512-BF16 / AMX); else bf16 is slower than fp32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def upscale_frames(
    model: nn.Module,
    frames: np.ndarray,
    *,
    scale: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    tiles: TileSpec = TileSpec(),
) -> np.ndarray:
    """uint8 NHWC/HWC in -> uint8 NHWC out (HWC in gives HWC out). The one function every caller uses."""
    device = torch.device(device)
    single = frames.ndim == 3
    with torch.inference_mode():
        # Weights stay fp32 on CPU; autocast runs convs in bf16 (AMX). On CUDA the engine casts the model to fp16.
        x = to_tensor(frames, device=device, dtype=torch.float32 if device.type == "cpu" else dtype)
        ac = autocast_dtype(device, dtype)
        with torch.autocast(device.type, dtype=ac or torch.float32, enabled=ac is not None and device.type == "cpu"):
            y = run_model(model, x, scale=scale, tiles=tiles)
        out = to_frames(y)
    return out[0] if single else out
