"""Evaluation by the field's protocol, for any model and for bicubic, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.data import validation_pairs
from training.metrics import psnr_y, ssim_y
from vsr.imageops import upscale_bicubic
from vsr.inference import upscale_frames
from vsr.luma import LumaAsRGB, input_space
from vsr.progress import track
from vsr.tiling import TileSpec

Upscale = Callable[[np.ndarray], np.ndarray]


def model_upscaler(
    model: nn.Module, scale: int, *, device: str = "cpu", dtype: torch.dtype = torch.float32, tile: int = 0
) -> Upscale:
    """uint8 RGB in, uint8 RGB out through the shared inference path; a luma model runs on Y (chroma bilinear)."""
    if input_space(model) == "y":
        model = LumaAsRGB(model, scale)
    return lambda lr: upscale_frames(model, lr, scale=scale, device=device, dtype=dtype, tiles=TileSpec(tile=tile))


def evaluate_set(
    upscale: Upscale, folder: str | Path, scale: int, *, progress: bool = True, with_bicubic: bool = True
) -> dict[str, float | int]:
    """Mean PSNR-Y/SSIM-Y over one test set (``scale`` border cropped), with bicubic beside it."""
    pairs = validation_pairs([folder], scale)
    return evaluate_pairs(upscale, pairs, scale, desc=Path(folder).name, progress=progress, with_bicubic=with_bicubic)


def evaluate_pairs(
    upscale: Upscale,
    pairs: Sequence[tuple[str, np.ndarray, np.ndarray]],
    scale: int,
    *,
    desc: str = "",
    progress: bool = False,
    with_bicubic: bool = True,
) -> dict[str, float | int]:
    """Mean PSNR-Y/SSIM-Y over (name, LR, HR) pairs, with bicubic beside it."""
    ps, ss, bp, bs = [], [], [], []
    for _name, lr, hr in track(pairs, desc=desc, disable=not progress, leave=False):
        sr = upscale(lr)
        ps.append(psnr_y(sr, hr, border=scale))
        ss.append(ssim_y(sr, hr, border=scale))
        if with_bicubic:
            bic = upscale_bicubic(lr, scale)
            bp.append(psnr_y(bic, hr, border=scale))
            bs.append(ssim_y(bic, hr, border=scale))
    out: dict[str, float | int] = {"psnr_y": float(np.mean(ps)), "ssim_y": float(np.mean(ss)), "images": len(pairs)}
    if with_bicubic:
        out |= {"bicubic_psnr_y": float(np.mean(bp)), "bicubic_ssim_y": float(np.mean(bs))}
    return out


def evaluate_sets(
    upscale: Upscale, folders: Sequence[str | Path], scale: int, *, progress: bool = True
) -> dict[str, dict[str, float | int]]:
    return {Path(f).name: evaluate_set(upscale, f, scale, progress=progress) for f in folders}


def format_table(result: dict[str, Any]) -> str:
    """A markdown table of an ``evaluate_sets`` result."""
    lines = [
        "| set | images | bicubic PSNR-Y | model PSNR-Y | gain | bicubic SSIM-Y | model SSIM-Y |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in result["sets"].items():
        lines.append(
            f"| {name} | {r['images']} | {r['bicubic_psnr_y']:.3f} | {r['psnr_y']:.3f} | "
            f"{r['psnr_y'] - r['bicubic_psnr_y']:+.3f} | {r['bicubic_ssim_y']:.4f} | {r['ssim_y']:.4f} |"
        )
    return "\n".join(lines)
