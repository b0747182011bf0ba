"""CLI handlers of the training subcommands; ``vsr_cli.main`` imports this lazily (training-only dependencies)."""

from __future__ import annotations

import argparse
import json
import logging
import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from training.config import DEFAULT_DATA_ROOT, TrainConfig
from vsr.errors import UsageError

T = TypeVar("T")

log = logging.getLogger(__name__)


def add_train_args(p: argparse.ArgumentParser, *, teacher: bool) -> None:
    p.add_argument("--config", help="JSON file of TrainConfig fields; flags below override it")
    p.add_argument("--name", help="run name: the folder under --out-dir and the artifact's name")
    p.add_argument("--scale", type=int, help="upscaling factor: 2, 3 or 4")
    p.add_argument("--data-root", help=f"folder holding train/ and test/ image sets (default {DEFAULT_DATA_ROOT})")
    p.add_argument("--steps", type=int, help="optimizer steps in all")
    p.add_argument("--batch", type=int, help="crops per step")
    p.add_argument("--patch", type=int, help="LR crop size in pixels")
    p.add_argument("--lr", type=float, help="peak learning rate (cosine schedule after warm-up)")
    p.add_argument("--seed", type=int, help="seed of every random draw (data, init)")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--amp", choices=["auto", "bf16", "fp16", "off"], help="mixed precision (auto: measured)")
    p.add_argument("--threads", type=int, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--eval-every", type=int, help="steps between validation runs")
    p.add_argument("--out-dir", help="where runs (checkpoints, logs, artifacts) go (default runs/)")
    p.add_argument("--arch-config", type=json.loads, help='JSON, e.g. \'{"channels": 24, "depth": 5}\'')
    p.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint exists")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in folder RUN exactly where its checkpoint left it (its config.json; flags override)",
    )
    if not teacher:
        p.add_argument("--teacher", action="append", dest="teachers", help=".pth weights or an artifact (repeatable)")
        p.add_argument(
            "--teacher-weight", action="append", type=float, dest="teacher_weights", help="one per --teacher"
        )
        p.add_argument("--alpha", type=float, help="weight of the ground-truth loss; 1 = no KD")
        p.add_argument("--feat-beta", type=float, help="weight of affinity feature distillation")
        p.add_argument("--loss", choices=["l1", "charbonnier"], help="pixel loss")


def config_from_args(args: argparse.Namespace, *, teacher: bool) -> TrainConfig:
    base = json.loads(Path(args.config).read_text()) if args.config else {}
    run = getattr(args, "resume", None)
    if run:  # the run's own config, where it is now (a run folder may move between machines)
        base = json.loads((Path(run) / "config.json").read_text()) | {"out_dir": str(Path(run).parent)}
        base["name"] = Path(run).name
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


def checked_config(args: argparse.Namespace, *, teacher: bool) -> TrainConfig:
    """The run's config, with the mistakes a user makes (no teacher, missing files) as :class:`UsageError`."""
    if args.config and not Path(args.config).is_file():
        raise UsageError(f"config file not found: {args.config}")
    run = getattr(args, "resume", None)
    if run and args.config:
        raise UsageError("--resume RUN takes the run's own config.json: drop --config")
    if run and getattr(args, "no_resume", False):
        raise UsageError("--resume and --no-resume contradict each other")
    if run and not (Path(run) / "checkpoint.pt").is_file():
        raise UsageError(f"no checkpoint to resume in {run} (expected {Path(run) / 'checkpoint.pt'})")
    try:
        cfg = config_from_args(args, teacher=teacher)
    except ValueError as e:  # also JSONDecodeError and TrainConfig's own checks
        if not teacher and "needs at least one teacher" in str(e) and not (args.teachers or []):
            raise UsageError("distill needs --teacher WEIGHTS (repeatable), or --alpha 1 to train without KD") from None
        raise UsageError(f"invalid training settings: {e}") from None
    except TypeError as e:  # an unknown field in --config
        raise UsageError(f"invalid training settings: {e}") from None
    _require_folders(cfg.data_paths(cfg.train_sets + cfg.val_sets))
    for t in cfg.teachers:
        if not Path(t).exists():
            raise UsageError(f"teacher not found: {t}")
    _check_init_weights(cfg)
    return cfg


def _check_init_weights(cfg: TrainConfig) -> None:
    """An ``init`` weight file that is missing or is another network, as a UsageError now, not after the data
    (the camera pool takes tens of minutes to build)."""
    from training.teachers import init_state, is_weight_file

    if not cfg.init or not is_weight_file(cfg.init):
        return
    if not Path(cfg.init).is_file():
        raise UsageError(f"init weights not found: {cfg.init}")
    try:
        init_state(cfg.init, cfg.arch, cfg.arch_config)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _require_folders(folders: Iterable[Path]) -> None:
    for f in folders:
        if not f.is_dir():
            raise UsageError(f"data folder not found: {f}")


def cmd_train(args: argparse.Namespace, *, teacher: bool) -> int:
    from training import distributed
    from training.run import train

    cfg = checked_config(args, teacher=teacher)
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

    if args.model.endswith((".pth", ".pt")):
        model, desc = _read(load_teacher, args.model)
    else:
        model, desc = _load_model(args.model)
    data = args.data or [f"{DEFAULT_DATA_ROOT}/test/Set5", f"{DEFAULT_DATA_ROOT}/test/Set14"]
    _require_folders(Path(d) for d in data)
    scale = args.scale or desc["scale"]
    if scale != desc["scale"]:
        raise UsageError(f"model is x{desc['scale']}, asked for x{scale}")
    upscale = model_upscaler(model, scale, tile=args.tile)
    codec = getattr(args, "codec", None)
    if codec is not None:  # pan clips, clean or through the codec, with temporal consistency
        return _evaluate_clips(args, upscale, scale, data, codec)
    sets = evaluate_sets(upscale, data, scale, progress=not args.json)
    result = {"model": args.model, "scale": scale, "sets": sets}
    print(json.dumps(result, indent=2) if args.json else format_table(result))
    return 0


def _read(load: Callable[..., T], path: str, **kwargs: Any) -> T:
    """``load(path)``, with a missing or unreadable file as :class:`UsageError`."""
    if not Path(path).is_file():
        raise UsageError(f"file not found: {path}")
    try:
        return load(path, **kwargs)
    except (OSError, RuntimeError, ValueError, KeyError, pickle.UnpicklingError, EOFError) as e:
        raise UsageError(f"cannot read {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def _evaluate_clips(args: argparse.Namespace, upscale: Any, scale: int, data: list[str], codec: str) -> int:
    from training.video_eval import evaluate_video_sets, format_video_table
    from vsr.imageops import upscale_bicubic

    ups = {"bicubic": lambda lr: upscale_bicubic(lr, scale), args.model: upscale}
    c = None if codec == "clean" else codec
    sets = evaluate_video_sets(ups, data, scale, codec=c, crf=args.crf, progress=not args.json)
    result = {"model": args.model, "scale": scale, "codec": c, "crf": args.crf if c else None, "sets": sets}
    print(json.dumps(result, indent=2) if args.json else format_video_table(result))
    return 0


def _load_model(name: str) -> tuple[Any, dict[str, int]]:
    from vsr.artifact import load_artifact

    model, meta = load_artifact(name)
    return model, {"scale": meta.scale}


def _has_nncf() -> bool:
    import importlib.util

    return importlib.util.find_spec("nncf") is not None and importlib.util.find_spec("openvino") is not None


def _data_root(artifact: str) -> str:
    """The data root an artifact was trained on (its model.json), else the default one."""
    from vsr.artifact import resolve

    meta = json.loads((resolve(artifact) / "model.json").read_text())
    root = meta.get("data", {}).get("data_root") or meta.get("training", {}).get("config", {}).get("data_root")
    return str(root or DEFAULT_DATA_ROOT)


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from training.export import export_artifact, export_onnx
    from vsr.archs import build

    out: dict[str, Any] = {}
    if args.checkpoint:
        ck = _read(torch.load, args.checkpoint, map_location="cpu", weights_only=False)
        if not isinstance(ck, dict) or not {"config", "model", "step"} <= set(ck):
            raise UsageError(f"{args.checkpoint} is not a vsr training checkpoint")
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
    asked = args.int8 is not None  # --int8 [ARTIFACT]; with --checkpoint it is the default when nncf is installed
    if asked or (args.checkpoint and not args.no_int8 and _has_nncf()):
        from training.quantize import quantize_artifact

        target = args.int8 or source
        try:
            out["int8"] = quantize_artifact(target, args.data_root or _data_root(target))
        except FileNotFoundError as e:  # the training data is not on this machine
            if asked:
                raise UsageError(f"int8: {e}") from None
            out["int8"] = {"skipped": f"no training data to calibrate on: {e}"}
    if args.onnx:
        model, _ = _load_model(source)
        out["onnx"] = args.onnx
        out["parity"] = export_onnx(model, args.onnx)
    print(json.dumps(out, indent=2))
    return 0
