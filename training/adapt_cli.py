"""``vsr adapt``'s arguments and handler (light: ``vsr --help`` builds the parser without torch; the run is in
``training.adapt``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from training.config import DEFAULT_TEACHER
from vsr.errors import UsageError


def add_adapt_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--clips", required=True, help="a folder of the site's video files")
    p.add_argument("--out", required=True, help="artifact folder to write (its name is the model's name)")
    p.add_argument("--base", default="x2-camera", help="the model to start from and to beat (default x2-camera)")
    p.add_argument("--minutes", type=float, default=5.0, help="time budget, everything included (default 5)")
    p.add_argument("--steps", type=int, default=0, help="stop after this many steps (default: when time is up)")
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"teacher weights (default {DEFAULT_TEACHER}); none: L1")
    p.add_argument("--frames", type=int, default=32, help="frames read per clip, spread over it (default 32)")
    p.add_argument("--holdout", type=float, default=0.25, help="share of each clip held back at its end (default 0.25)")
    p.add_argument("--min-gain", type=float, default=0.0, help="dB the model must gain at every CRF (default 0)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0, help="seed of the crops and the model's init draws (default 0)")


def cmd_adapt(args: argparse.Namespace) -> int:
    clips = Path(args.clips)
    if not clips.is_dir():
        raise UsageError(f"--clips {clips}: not a folder")
    if not 0 < args.holdout < 1 or args.frames < 2 or args.minutes < 0:
        raise UsageError("--holdout must be in (0, 1), --frames >= 2, --minutes >= 0")
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"--out {out} exists and is not empty")
    teacher = None if str(args.teacher).lower() == "none" else args.teacher
    cfg: dict[str, Any] = dict(clips=clips, out=out, base=args.base, minutes=args.minutes, steps=args.steps,
                               teacher=teacher, frames=args.frames, holdout=args.holdout, min_gain=args.min_gain,
                               seed=args.seed, threads=args.threads)  # fmt: skip
    start = time.monotonic()  # the budget includes loading torch and the models
    from training.adapt import AdaptConfig, adapt  # torch, av: only when the command runs

    r = adapt(AdaptConfig(**cfg), start=start)
    for k in r.base:
        sys.stdout.write(f"{k}: {args.base} {r.base[k]:.3f} dB, adapted {r.adapted[k]:.3f} dB ({r.gains[k]:+.3f})\n")
    sys.stdout.write(f"wrote {out}\n" if r.written else f"not written: {r.why}\n")
    return 0 if r.written else 1
