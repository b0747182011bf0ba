"""CLI handlers of the training subcommands; ``vsr_cli.main`` imports this lazily (training-only dependencies)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from training.config import DEFAULT_DATA_ROOT, TrainConfig

log = logging.getLogger(__name__)


def add_train_args(p: argparse.ArgumentParser, *, teacher: bool) -> None:
    p.add_argument("--config", help="JSON file of TrainConfig fields; flags below override it")
    p.add_argument("--name")
    p.add_argument("--scale", type=int)
    p.add_argument("--data-root")
    p.add_argument("--steps", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--patch", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--device")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"])
    p.add_argument("--threads", type=int)
    p.add_argument("--eval-every", type=int)
    p.add_argument("--out-dir")
    p.add_argument("--arch-config", type=json.loads, help='JSON, e.g. \'{"channels": 24, "depth": 5}\'')
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    if not teacher:
        p.add_argument("--teacher", action="append", dest="teachers", help=".pth weights or an artifact (repeatable)")
        p.add_argument("--teacher-weight", action="append", type=float, dest="teacher_weights")
        p.add_argument("--alpha", type=float, help="weight of the ground-truth loss; 1 = no KD")
        p.add_argument("--feat-beta", type=float, help="weight of affinity feature distillation")
        p.add_argument("--loss", choices=["l1", "charbonnier"])


def config_from_args(args: argparse.Namespace, *, teacher: bool) -> TrainConfig:
    base = json.loads(Path(args.config).read_text()) if args.config else {}
    if teacher:
        base |= {"arch": "edsr", "alpha": 1.0, "name": base.get("name", f"edsr-x{args.scale or base.get('scale', 2)}")}
    keys = [
        "name",
        "scale",
        "data_root",
        "steps",
        "batch",
        "patch",
        "lr",
        "seed",
        "device",
        "amp",
        "threads",
        "eval_every",
        "out_dir",
        "arch_config",
        "teachers",
        "teacher_weights",
        "alpha",
        "feat_beta",
        "loss",
    ]
    for k in keys:
        v = getattr(args, k, None)
        if v is not None:
            base[k] = v
    if teacher and not base.get("arch_config"):
        base["arch_config"] = {"channels": 64, "blocks": 16}
    return TrainConfig.from_dict(base)


def cmd_train(args: argparse.Namespace, *, teacher: bool) -> int:
    from training import distributed
    from training.run import train

    cfg = config_from_args(args, teacher=teacher)
    ranks = distributed.init(cfg.device)  # torchrun's environment, else one process (training/distributed.py)
    try:
        summary = train(cfg, resume=not args.no_resume, ranks=ranks)
    finally:
        distributed.close()
    if ranks.master:
        print(json.dumps(summary, indent=2, default=str))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_sets, format_table, model_upscaler
    from training.teachers import load_teacher

    model, desc = load_teacher(args.model) if args.model.endswith((".pth", ".pt")) else _load_model(args.model)
    scale = args.scale or desc["scale"]
    if scale != desc["scale"]:
        print(f"error: model is x{desc['scale']}, asked for x{scale}", file=sys.stderr)
        return 2
    data = args.data or [f"{DEFAULT_DATA_ROOT}/test/Set5", f"{DEFAULT_DATA_ROOT}/test/Set14"]
    upscale = model_upscaler(model, scale, tile=args.tile)
    codec = getattr(args, "codec", None)
    if codec is not None:  # pan clips, clean or through the codec, with temporal consistency
        return _evaluate_clips(args, upscale, scale, data, codec)
    sets = evaluate_sets(upscale, data, scale, progress=not args.json)
    result = {"model": args.model, "scale": scale, "sets": sets}
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _evaluate_clips(args: argparse.Namespace, upscale: Any, scale: int, data: list[str], codec: str) -> int:
    from training.video_eval import evaluate_video_sets, format_video_table
    from vsr.imageops import upscale_bicubic

    ups = {"bicubic": lambda lr: upscale_bicubic(lr, scale), args.model: upscale}
    c = None if codec == "clean" else codec
    sets = evaluate_video_sets(ups, data, scale, codec=c, crf=args.crf, progress=not args.json)
    result = {"model": args.model, "scale": scale, "codec": c, "crf": args.crf if c else None, "sets": sets}
    print(json.dumps(result, indent=2) if args.json else format_video_table(result))
    return 0


def _load_model(name: str):
    from vsr.artifact import load_artifact

    model, meta = load_artifact(name)
    return model, {"scale": meta.scale}


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from training.export import export_artifact, export_onnx
    from vsr.archs import build

    out: dict = {}
    if args.checkpoint:
        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        cfg = TrainConfig.from_dict(ck["config"])
        model = build(cfg.arch, cfg.arch_config)
        model.load_state_dict(ck["ema"] or ck["model"])
        art = export_artifact(
            model.eval(),
            out_dir=args.out,
            name=args.name or cfg.name,
            arch=cfg.arch,
            training={"config": ck["config"], "steps": ck["step"]},
            data={"train": cfg.train_sets},
            scores={},
        )
        out["artifact"] = str(art)
        source = str(art)
    else:
        source = args.model
    if args.onnx:
        model, _ = _load_model(source)
        out["onnx"] = args.onnx
        out["parity"] = export_onnx(model, args.onnx)
    print(json.dumps(out, indent=2))
    return 0
