"""The ``vsr`` command. Subcommands import their modules lazily: ``vsr serve`` never loads training code."""

from __future__ import annotations

import argparse
import os
import sys

from vsr import logs


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vsr", description="Real-time video super-resolution: train, evaluate, serve.")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument(
        "--log-format",
        default=os.environ.get("VSR_LOG_FORMAT", "auto"),
        help="json (one object per line), text, or auto: text on a terminal, else json (env VSR_LOG_FORMAT)",
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    from training.cli import add_train_args  # light: argparse and dataclasses only

    add_train_args(sub.add_parser("train-teacher", help="train an EDSR teacher from scratch"), teacher=True)
    add_train_args(sub.add_parser("distill", help="distill a real-time student from teacher(s)"), teacher=False)

    ev = sub.add_parser("evaluate", help="PSNR-Y/SSIM-Y of a model and bicubic on test sets")
    ev.add_argument("--model", required=True, help="x2, x4, an artifact folder, or teacher .pth weights")
    ev.add_argument("--data", action="append", help="test set folder (repeatable); default Set5 and Set14")
    ev.add_argument("--scale", type=int)
    ev.add_argument("--tile", type=int, default=0)
    ev.add_argument("--json", action="store_true")
    ev.add_argument(
        "--codec",
        choices=["clean", "h264", "h265"],
        help="evaluate on 6-frame pan clips of each image, LR by bicubic then this codec (clean: none), with tPSNR-Y",
    )
    ev.add_argument("--crf", type=int, default=28, help="codec quality with --codec h264/h265 (default 28)")

    ex = sub.add_parser("export", help="export a checkpoint as an artifact, and/or an artifact to ONNX")
    ex.add_argument("--checkpoint", help="a training checkpoint.pt")
    ex.add_argument("--out", default="artifact", help="artifact folder to write (with --checkpoint)")
    ex.add_argument("--name")
    ex.add_argument("--model", default="x2", help="artifact to export to ONNX when no --checkpoint")
    ex.add_argument("--onnx", help="also write an ONNX file here (dynamic batch/H/W) and check parity")

    up = sub.add_parser("upscale", help="upscale image files, a folder of images, or a video, offline")
    up.add_argument("input")
    up.add_argument("output")
    up.add_argument("--model", default="x2")
    up.add_argument("--device", default="auto")
    up.add_argument(
        "--tile",
        type=int,
        default=0,
        help="0 (auto): tiles only above ~1 MP on CPU / 1080p on CUDA; N: N*N px per call",
    )

    sv = sub.add_parser("serve", help="run the HTTP service")
    sv.add_argument("--host")
    sv.add_argument("--port", type=int)
    sv.add_argument("--models", help="comma-separated artifact names/paths (default x2,x4,x2-camera)")
    sv.add_argument("--device")

    bn = sub.add_parser("bench", help="benchmarks into bench/results/ and bench/README.md")
    bn.add_argument("what", nargs="*", default=["engine", "service"])
    bn.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    return p


def main(argv: list[str] | None = None) -> int:
    # Before anything starts torch/OpenMP: allocator keeps its buffers, OpenMP threads sleep when idle (vsr.runtime).
    from vsr.runtime import configure

    configure()
    args = _parser().parse_args(argv)
    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if args.cmd in ("train-teacher", "distill"):
        from training.cli import cmd_train

        return cmd_train(args, teacher=args.cmd == "train-teacher")
    if args.cmd == "evaluate":
        from training.cli import cmd_evaluate

        return cmd_evaluate(args)
    if args.cmd == "export":
        from training.cli import cmd_export

        return cmd_export(args)
    if args.cmd == "upscale":
        from vsr_cli.upscale import cmd_upscale

        return cmd_upscale(args)
    if args.cmd == "serve":
        from service.main import cmd_serve

        return cmd_serve(args)
    if args.cmd == "bench":
        from bench.run import cmd_bench

        return cmd_bench(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
