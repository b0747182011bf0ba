"""Evaluation on compressed video: test images made into short pan clips, LR by bicubic /2, then encoded.

Per clip: mean PSNR-Y / SSIM-Y over frames (``scale`` border cropped) of each upscaler, and a temporal-consistency
figure, tPSNR: the PSNR-Y of the output's frame-to-frame differences against the truth's. A model that flickers
(amplifies the codec's changing artefacts) moves where the truth does not, and scores worse than a steady one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.camera import codec_roundtrip
from training.data import list_images, load_cached
from training.metrics import psnr_y, ssim_y
from vsr.imageops import crop_to_multiple, downscale, rgb_to_y
from vsr.progress import track

Upscale = Callable[[np.ndarray], np.ndarray]
FRAMES = 6
PAN = (2, 2)  # HR pixels per frame (x, y): whole LR pixels, so the clean LR frames are exact shifts of each other


def pan_clip(img: np.ndarray, scale: int, *, frames: int = FRAMES, pan: tuple[int, int] = PAN) -> np.ndarray:
    """A deterministic diagonal pan over ``img`` (THWC): each frame is the image less the path, cropped to ``scale``."""
    h, w = img.shape[:2]
    dx, dy = pan
    fh, fw = h - dy * (frames - 1), w - dx * (frames - 1)
    fh, fw = fh - fh % (2 * scale), fw - fw % (2 * scale)  # even LR sizes for 4:2:0
    return np.stack([img[t * dy : t * dy + fh, t * dx : t * dx + fw] for t in range(frames)])


def lr_clip(hr: np.ndarray, scale: int, *, codec: str | None, crf: int, preset: str = "veryfast") -> np.ndarray:
    """Bicubic /scale of every frame, then (with ``codec``) a yuv420p round trip at ``crf``."""
    lr = np.stack([downscale(f, scale) for f in hr])
    return codec_roundtrip(lr, codec=codec, crf=crf, preset=preset) if codec else lr


def temporal_psnr(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    """PSNR-Y (peak 255) of the frame differences of ``sr`` against those of ``hr`` (THWC uint8 clips)."""
    b = slice(border, -border) if border else slice(None)
    ys, yh = rgb_to_y(sr)[:, b, b], rgb_to_y(hr)[:, b, b]
    mse = float(np.mean((np.diff(ys, axis=0) - np.diff(yh, axis=0)) ** 2))
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def clip_scores(sr: np.ndarray, hr: np.ndarray, border: int, *, ssim: bool = True) -> dict[str, float]:
    """Mean PSNR-Y (and SSIM-Y: ~1 s per 480x320 frame on one thread, so optional) over frames, and tPSNR-Y."""
    out = {
        "psnr_y": float(np.mean([psnr_y(s, h, border=border) for s, h in zip(sr, hr, strict=True)])),
        "tpsnr_y": temporal_psnr(sr, hr, border),
    }
    if ssim:
        out["ssim_y"] = float(np.mean([ssim_y(s, h, border=border) for s, h in zip(sr, hr, strict=True)]))
    return out


def evaluate_clips(
    upscalers: Mapping[str, Upscale],
    images: Sequence[np.ndarray],
    scale: int,
    *,
    codec: str | None = None,
    crf: int = 28,
    progress: bool = False,
    desc: str = "clips",
    ssim: bool = True,
) -> dict[str, dict[str, float]]:
    """Mean scores per upscaler over clips made from ``images`` (an upscaler maps one LR frame to one SR frame)."""
    sums: dict[str, dict[str, float]] = {name: {} for name in upscalers}
    for img in track(images, desc=desc, disable=not progress, leave=False):
        hr = pan_clip(crop_to_multiple(img, scale), scale)
        lr = lr_clip(hr, scale, codec=codec, crf=crf)
        for name, up in upscalers.items():
            sr = np.stack([up(f) for f in lr])
            for k, v in clip_scores(sr, hr, scale, ssim=ssim).items():
                sums[name][k] = sums[name].get(k, 0.0) + v / len(images)
    return sums


def evaluate_video_sets(
    upscalers: Mapping[str, Upscale],
    folders: Sequence[str | Path],
    scale: int,
    *,
    codec: str | None,
    crf: int,
    progress: bool = True,
) -> dict[str, dict[str, dict[str, float]]]:
    """``{set: {upscaler: scores}}`` for every test-set folder, each image a pan clip."""
    out = {}
    for folder in folders:
        images = [load_cached(p) for p in list_images([folder])]
        out[Path(folder).name] = evaluate_clips(
            upscalers, images, scale, codec=codec, crf=crf, progress=progress, desc=Path(folder).name
        )
    return out


def format_video_table(result: dict[str, Any], baseline: str = "bicubic") -> str:
    """Markdown table of an ``evaluate_video_sets`` result, with each upscaler's gain over ``baseline``."""
    cond = f"{result['codec']} CRF {result['crf']}" if result.get("codec") else "clean"
    lines = [
        f"Input: {cond}, LR by bicubic /{result['scale']}, {FRAMES}-frame pan clips.",
        "",
        "| set | upscaler | PSNR-Y | gain | SSIM-Y | tPSNR-Y | tPSNR gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for set_name, per in result["sets"].items():
        base = per.get(baseline)
        for name, s in per.items():
            gain = f"{s['psnr_y'] - base['psnr_y']:+.2f}" if base else "-"
            tgain = f"{s['tpsnr_y'] - base['tpsnr_y']:+.2f}" if base else "-"
            lines.append(
                f"| {set_name} | {name} | {s['psnr_y']:.2f} | {gain} | {s['ssim_y']:.4f} | {s['tpsnr_y']:.2f} | {tgain} |"
            )
    return "\n".join(lines)
