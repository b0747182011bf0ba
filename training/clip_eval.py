"""Evaluation on real camera footage: consecutive frames of held-out clips, LR by bicubic /2, then libx264.

Pan clips cut from photos (:mod:`training.video_eval`) move by whole pixels over a still scene; real cameras show
motion, noise, their own compression and overlays. Here every clip is a run of ``frames`` consecutive frames of a
video that no model under test trained on (the held-out slice of ``train/video``: whole clips, by
:func:`training.camera_pool.holdout_by_content` or :func:`training.data.split_holdout`), shrunk like the training
frames (:mod:`training.video_frames`) and centre-cropped to ``crop`` HR pixels to keep the run short.

    python -m training.clip_eval --models x2-camera x2 RUN/artifact --crf 0 23 28 [--json OUT]

prints PSNR-Y / tPSNR-Y (and the gain over bicubic) per condition, mean over the clips.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.video_eval import Upscale, clip_scores, lr_clip
from training.video_frames import decode_all, folder_clips, shrink

DEFAULT_CLIPS = ("openh264-street-1080p", "ozlu-street")  # held out of x2-camera-fast's training (content order)


def load_clip(path: Path, frames: int, crop: tuple[int, int], scale: int) -> np.ndarray:
    """``frames`` consecutive frames from the middle of the clip, shrunk and centre-cropped (THWC uint8)."""
    decoded = list(decode_all(path))
    start = max(0, (len(decoded) - frames) // 2)
    out = []
    ch, cw = crop
    for f in decoded[start : start + frames]:
        f = shrink(f)
        h, w = f.shape[:2]
        th, tw = min(ch, h), min(cw, w)
        th, tw = th - th % (2 * scale), tw - tw % (2 * scale)  # even LR sizes for 4:2:0
        y, x = (h - th) // 2, (w - tw) // 2
        out.append(np.ascontiguousarray(f[y : y + th, x : x + tw]))
    return np.stack(out)


def evaluate(
    upscalers: dict[str, Upscale], clips: Sequence[np.ndarray], scale: int, crfs: Sequence[int]
) -> dict[str, dict[str, dict[str, float]]]:
    """``{condition: {upscaler: mean scores}}``; CRF 0 means the clean (uncompressed) LR."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for crf in crfs:
        cond = f"h264 CRF {crf}" if crf else "clean"
        sums: dict[str, dict[str, float]] = {n: {} for n in upscalers}
        for hr in clips:
            lr = lr_clip(hr, scale, codec="h264" if crf else None, crf=crf)
            for name, up in upscalers.items():
                sr = np.stack([up(f) for f in lr])
                for k, v in clip_scores(sr, hr, scale, ssim=False).items():
                    sums[name][k] = sums[name].get(k, 0.0) + v / len(clips)
        out[cond] = sums
    return out


def table(result: dict[str, dict[str, dict[str, float]]]) -> str:
    lines = ["| input | upscaler | PSNR-Y | gain | tPSNR-Y | tPSNR gain |", "|---|---|---|---|---|---|"]
    for cond, per in result.items():
        base = per["bicubic"]
        for name, s in per.items():
            g, tg = s["psnr_y"] - base["psnr_y"], s["tpsnr_y"] - base["tpsnr_y"]
            lines.append(f"| {cond} | {name} | {s['psnr_y']:.2f} | {g:+.2f} | {s['tpsnr_y']:.2f} | {tg:+.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from training.evaluate import model_upscaler
    from vsr.artifact import load_artifact
    from vsr.imageops import upscale_bicubic

    p = argparse.ArgumentParser(prog="python -m training.clip_eval", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", required=True, help="artifact names or folders")
    p.add_argument("--video-dir", default="../shared/datasets/train/video")
    p.add_argument("--clips", nargs="+", default=list(DEFAULT_CLIPS), help="clip names (file stems) to evaluate on")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--crop", type=int, nargs=2, default=(360, 640), metavar=("H", "W"))
    p.add_argument("--crf", type=int, nargs="+", default=[0, 23, 28], help="0 = clean LR")
    p.add_argument("--json", help="also write the result here")
    args = p.parse_args(argv)
    sources = {s.stem: s for s in folder_clips(Path(args.video_dir))}
    missing = [c for c in args.clips if c not in sources]
    if missing:
        sys.stderr.write(f"error: clips not found in {args.video_dir}: {missing}\n")
        return 2
    scale = 2
    ups: dict[str, Upscale] = {"bicubic": lambda lr: upscale_bicubic(lr, scale)}
    for m in args.models:
        model, meta = load_artifact(m)
        if meta.scale != scale:
            sys.stderr.write(f"error: {m} is x{meta.scale}; this evaluation is x2\n")
            return 2
        ups[m] = model_upscaler(model, scale)
    clips = [load_clip(sources[c], args.frames, tuple(args.crop), scale) for c in args.clips]
    result = evaluate(ups, clips, scale, args.crf)
    sys.stdout.write(table(result) + "\n")
    if args.json:
        doc: dict[str, Any] = {
            "command": "python -m training.clip_eval " + " ".join(argv if argv is not None else sys.argv[1:]),
            "clips": args.clips,
            "frames": args.frames,
            "crop": list(args.crop),
            "result": result,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
