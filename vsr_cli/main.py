"""The ``vsr`` command. Subcommands import their modules lazily: ``vsr serve`` never loads training code."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from typing import NoReturn

from vsr import logs
from vsr.errors import UsageError

# The shared layer's input errors (a missing model, an unknown device, an unreadable video) are the user's too.
# Named, not imported: their modules load torch, which `vsr --help` and `vsr --version` should not wait for.
USER_ERRORS = {"vsr.artifact": "ArtifactError", "vsr.engine": "DeviceError", "vsr.video": "VideoError"}


def is_user_error(e: BaseException) -> bool:
    """A :class:`UsageError`, or one of :data:`USER_ERRORS` (only a loaded module can have raised its own)."""
    types = [UsageError] + [getattr(m, cls) for mod, cls in USER_ERRORS.items() if (m := sys.modules.get(mod))]
    return isinstance(e, tuple(types))


class Parser(argparse.ArgumentParser):
    """argparse with one ``error: ...`` line (and exit 2) instead of the usage block: the house style for bad input."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def version() -> str:
    try:
        return importlib.metadata.version("vsr")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="vsr", description="Real-time video super-resolution: train, evaluate, serve.")
    p.add_argument("--version", action="version", version=f"vsr {version()}", help="print the version and exit")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    p.add_argument(
        "--log-format",
        default=os.environ.get("VSR_LOG_FORMAT", "auto"),
        help="json (one object per line), text, or auto: text on a terminal, else json (env VSR_LOG_FORMAT)",
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    from training.cli import add_train_args  # light: argparse and dataclasses only

    add_train_args(sub.add_parser("train-teacher", help="train an EDSR teacher from scratch"), teacher=True)
    add_train_args(sub.add_parser("distill", help="distill a real-time student from teacher(s)"), teacher=False)

    from training.adapt_cli import add_adapt_args  # light too

    add_adapt_args(
        sub.add_parser(
            "adapt",
            help="fine-tune a camera student on a site's footage; written only if it beats the base there (exit 1: not)",
        )
    )

    ev = sub.add_parser("evaluate", help="PSNR-Y/SSIM-Y of a model and bicubic on test sets")
    ev.add_argument("--model", required=True, help="x2, x4, an artifact folder, or teacher .pth weights")
    ev.add_argument("--data", action="append", help="test set folder (repeatable); default Set5 and Set14")
    ev.add_argument("--scale", type=int, help="upscaling factor (default: the model's own)")
    ev.add_argument("--tile", type=int, default=0, help="N: at most N*N input pixels per model call (0 = whole image)")
    ev.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    ev.add_argument(
        "--codec",
        choices=["clean", "h264", "h265"],
        help="evaluate on 6-frame pan clips of each image, LR by bicubic then this codec (clean: none), with tPSNR-Y",
    )
    ev.add_argument("--crf", type=int, default=28, help="codec quality with --codec h264/h265 (default 28)")

    ex = sub.add_parser("export", help="export a checkpoint as an artifact, and/or an artifact to ONNX")
    ex.add_argument("--checkpoint", help="a training checkpoint.pt")
    ex.add_argument("--out", default="artifact", help="artifact folder to write (with --checkpoint)")
    ex.add_argument("--name", help="the artifact's model name (default: the run's name)")
    ex.add_argument("--model", default="x2", help="artifact to export to ONNX when no --checkpoint")
    ex.add_argument("--onnx", help="also write an ONNX file here (dynamic batch/H/W) and check parity")
    ex.add_argument(
        "--int8",
        nargs="?",
        const="",
        metavar="ARTIFACT",
        help="add an int8 variant (NNCF post-training quantisation, checked on held-out training data) to ARTIFACT, "
        "or to the one --checkpoint writes (which does so by default when nncf is installed)",
    )
    ex.add_argument("--no-int8", action="store_true", help="with --checkpoint: write no int8 variant")
    ex.add_argument("--data-root", help="the training data (default: the artifact's data_root, ../shared/datasets)")

    up = sub.add_parser("upscale", help="upscale image files, a folder of images/videos, or a video, offline")
    up.add_argument("input", help="an image, a video, or a folder of them")
    up.add_argument("output", help="the output file (format from its extension), or a folder")
    up.add_argument("--model", default="x2", help="x2, x4, or an artifact folder (default x2)")
    up.add_argument("--device", default="auto", help="auto (CUDA if available, else CPU), cpu, cuda, cuda:N")
    up.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="auto: fp16 on CUDA, on CPU the faster of fp32 and bf16 (measured); as the service's VSR_DTYPE",
    )
    up.add_argument(
        "--tile",
        type=int,
        default=0,
        help="0 (auto): tiles only above ~1 MP on CPU / 1080p on CUDA; N: N*N px per call (images and videos)",
    )

    sv = sub.add_parser("serve", help="run the HTTP service")
    sv.add_argument("--host", help="address to listen on (env VSR_HOST, default 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port to listen on (env VSR_PORT, default 8000)")
    sv.add_argument("--models", help="comma-separated artifact names/paths (env VSR_MODELS, default x2,x4,x2-camera)")
    sv.add_argument("--device", help="auto, cpu, cuda or cuda:N (env VSR_DEVICE, default auto)")

    bn = sub.add_parser("bench", help="benchmarks into bench/results/ and bench/README.md")
    bn.add_argument(
        "what",
        nargs="*",
        default=["kernel", "engine", "cli", "service", "streams"],
        choices=["kernel", "engine", "cli", "runtimes", "sizes", "service", "streams", "planes", "gpu"],
        help="kernel/engine/cli: one run on the same 640x360 frames (+ OpenCV ESPCN/FSRCNN); sizes: the engine "
        "across sizes and batches; service: vsr serve at 1/4/16 JPEG clients; streams: a live RTSP camera to an "
        "MJPEG viewer; runtimes: torch fp32/bf16 vs OpenVINO f32/bf16/int8 vs OpenCV ESPCN on the same frames; planes: "
        "luma models' stream frames as decoder planes vs RGB (in memory and live); gpu: "
        "540p->1080p on CUDA (scripts/gpu_check.sh)",
    )
    bn.add_argument("--quick", action="store_true", help="fewer repeats (smoke run)")
    bn.add_argument("--dry-run", action="store_true", help="gpu: run on CPU with a tiny frame (checks the script)")
    return p


def main(argv: list[str] | None = None) -> int:
    # Before anything starts torch/OpenMP: allocator keeps its buffers, OpenMP threads sleep when idle (vsr.runtime).
    from vsr.runtime import configure

    configure()
    args = _parser().parse_args(argv)
    try:
        logs.configure(args.log_level, args.log_format)
        return _run(args)
    except Exception as e:
        if not is_user_error(e):
            raise
        sys.stderr.write(f"error: {e}\n")  # bad input: one line, no traceback
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.cmd in ("train-teacher", "distill"):
        from training.cli import cmd_train

        return cmd_train(args, teacher=args.cmd == "train-teacher")
    if args.cmd == "adapt":
        from training.adapt_cli import cmd_adapt

        return cmd_adapt(args)
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
