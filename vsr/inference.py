"""The inference contract, written once.

- Frames at every boundary are ``uint8`` RGB, HWC (or NHWC for a batch) numpy arrays.
- Models see ``float`` NCHW in [0, 1] on their device, in the engine's dtype (fp32, fp16 on CUDA, bf16 on CPU with
  AMX), channels-last memory format; outputs are clamped to [0, 1], rounded, returned as uint8 NHWC.
- No padding is needed by our architectures (all convs are "same"); with a :class:`vsr.tiling.TileSpec`, frames
  over its budget are split by the one tiler (:mod:`vsr.tiling`): an ``overlap`` margin in LR pixels on every side,
  only each tile's centre kept, so the tiled result equals the untiled one wherever the receptive field fits inside
  the margin.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from vsr.tiling import TileGrid, TileSpec, model_alignment, plan_grid, run_tiled


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


def autocast_dtype(device: torch.device, dtype: torch.dtype) -> torch.dtype | None:
    """The autocast dtype for reduced precision, or None for fp32."""
    return dtype if dtype in (torch.float16, torch.bfloat16) else None


def upscale_frames(
    model: nn.Module,
    frames: np.ndarray,
    *,
    scale: int,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    tiles: TileSpec | None = None,
) -> np.ndarray:
    """uint8 NHWC/HWC in -> uint8 NHWC out (HWC in gives HWC out): the reference path, for any architecture.

    ``tiles`` None or ``tile`` 0: each frame runs whole; N > 0: at most N*N LR pixels per model call (per frame of
    the batch)."""
    device = torch.device(device)
    budget, overlap = (tiles.budget, tiles.overlap) if tiles is not None else (None, 0)
    single = frames.ndim == 3
    with torch.inference_mode():
        # Weights stay fp32 on CPU; autocast runs convs in bf16 (AMX). On CUDA the engine casts the model to fp16.
        x = to_tensor(frames, device=device, dtype=torch.float32 if device.type == "cpu" else dtype)
        ac = autocast_dtype(device, dtype)
        with torch.autocast(device.type, dtype=ac or torch.float32, enabled=ac is not None and device.type == "cpu"):
            h, w = x.shape[2:]
            grid = plan_grid(h, w, budget=budget, overlap=overlap) if budget else TileGrid(1, 1)
            y = run_tiled(model, x, grid, scale, model_alignment(model))
        out = to_frames(y)
    return out[0] if single else out
