"""Students in lock-step: several recipes trained in one process on the *same* batches, per seed.

    python -m training.lockstep --config training/recipes/x2_kd.json --seeds 0 1 2 --name ablation-x2
    python -m training.lockstep --config x2_kd.json --variant rgb='{"arch_config": {"colors": 3}}' --variant ...
    python -m training.lockstep --resume training/runs/ablation-x2      # continue (scripts/train.sh does this)

Default variants are the KD ablation's twins: ``kd`` (the recipe) and ``nokd`` (alpha = 1). Per seed the students
share the initial weights (``torch.manual_seed(seed)``), the schedule and every batch (``loop.adapt_batch`` converts
it to Y for luma students and drops teacher-only zoom-out samples for students that do not use them), so twins
differ only in the KD terms (and the zoom-out samples, which carry no ground truth and only a KD student can use).
Seeds differ in initial weights and in which crops/flips they draw from one shared crop pool (its contents follow
the pool seed, ``cfg.seed`` of the recipe). Sharing the batch halves the data cost and removes batch-order noise
from the KD gain. Resumable (one checkpoint for all models); each model exports its own artifact at the end, with
held-out validation scores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig
from training.export import export_artifact
from training.loop import (
    State,
    adapt_batch,
    build_state,
    evaluate,
    load_teachers,
    log_row,
    prepare_data,
    step_on,
    to_device,
    validation_data,
)
from training.run import hold_run_lock, stop_on_sigterm
from vsr.engine import pick_device

log = logging.getLogger(__name__)


def lockstep_configs(
    base: TrainConfig, seeds: list[int], variants: dict[str, dict[str, Any]]
) -> dict[str, TrainConfig]:
    """``{"<variant>-s<seed>": cfg}``: each variant is the base recipe with some fields overridden (and, with the
    key ``"_seeds"``, run for those seeds only: e.g. a one-seed comparison riding along a multi-seed ablation)."""
    out = {}
    for v, over in variants.items():
        over = dict(over)
        only = over.pop("_seeds", seeds)
        cfg_v = TrainConfig.from_dict(base.to_dict() | over)
        for s in only:
            out[f"{v}-s{s}"] = replace(cfg_v, seed=s, name=f"{base.name}-{v}-s{s}")
    return out


TWINS: dict[str, dict[str, Any]] = {"kd": {}, "nokd": {"alpha": 1.0, "zoomout": 0}}


def train_lockstep(
    base: TrainConfig, seeds: list[int], variants: dict[str, dict[str, Any]] | None = None, *, progress: bool = True
) -> dict[str, Any]:
    """Train every variant x seed in lock-step; the crop pool (and teacher outputs) come from ``base``."""
    variants = variants or TWINS
    if base.alpha >= 1.0 or not base.teachers:
        raise ValueError("the base recipe must distil (alpha < 1, a teacher): the pool carries its teacher outputs")
    if base.threads:
        torch.set_num_threads(base.threads)
    base.run_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_lock(base.run_dir):  # one process per run folder; released when this returns or raises
        (base.run_dir / "config.json").write_text(
            json.dumps({"base": base.to_dict(), "seeds": seeds, "variants": variants}, indent=2)
        )
        return _train_locked(base, seeds, variants, progress=progress)


def _train_locked(
    base: TrainConfig, seeds: list[int], variants: dict[str, dict[str, Any]], *, progress: bool
) -> dict[str, Any]:
    device, run_dir = pick_device(base.device), base.run_dir
    teachers, weights, descs = load_teachers(base, device)
    source = prepare_data(base, device, teachers, weights, descs)
    val = validation_data(base)
    cfgs = lockstep_configs(base, seeds, variants)
    states: dict[str, State] = {k: build_state(c, device, None) for k, c in cfgs.items()}
    ckpt_path, metrics = run_dir / "checkpoint.pt", run_dir / "metrics.jsonl"
    elapsed = 0.0
    if ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        for k, st in states.items():
            _restore(st, ck["states"][k])
        source.seek(ck["pool_draws"])
        elapsed = ck["elapsed_s"]
        log.info("resumed %s at step %d", run_dir, states[next(iter(states))].step)
    t_start = time.time() - elapsed
    step = states[next(iter(states))].step
    last: dict[str, Any] = {}
    stop = stop_on_sigterm()
    while step < base.steps:
        for s in seeds:
            keys = [f"{v}-s{s}" for v in variants if f"{v}-s{s}" in cfgs]
            # the first variant's generator draws the seed's batch for all its variants
            shared = source.batch(base.batch, states[keys[0]].rng)
            row = {"step": step + 1, "time_s": round(time.time() - t_start, 1)}
            for key in keys:
                parts = step_on(states[key], cfgs[key], to_device(adapt_batch(shared, cfgs[key]), cfgs[key], device))
                if (step + 1) % 50 == 0:
                    row[key] = round(parts["loss"], 5)
            if len(row) > 2:
                log_row(metrics, row)
        step += 1
        if progress and step % 100 == 0:
            log.info("step %d/%d %.0fs", step, base.steps, time.time() - t_start)
        if step % base.eval_every == 0 or step == base.steps:
            last = {k: evaluate(st, cfgs[k], device, val) for k, st in states.items()}
            log_row(metrics, {"step": step, "time_s": round(time.time() - t_start, 1), "eval": last})
        if step % base.ckpt_every == 0 or step == base.steps or stop.is_set():
            done = step == base.steps  # the schedule is over: the optimiser's moments (half the file) are dead weight
            ck = {
                "states": {k: _checkpoint(st, optimizer=not done) for k, st in states.items()},
                "pool_draws": source.draws,
                "elapsed_s": time.time() - t_start,
            }
            torch.save(ck, ckpt_path.with_suffix(".tmp"))
            ckpt_path.with_suffix(".tmp").replace(ckpt_path)
        if stop.is_set():  # SIGTERM: checkpoint written above; `--resume` continues exactly here
            log.info("stopped at step %d on SIGTERM; checkpoint written", step)
            return {"stopped": True, "steps": step, "run": str(run_dir)}
    wall = time.time() - t_start
    arts = {}
    for k, st in states.items():
        arts[k] = str(
            export_artifact(
                st.ema or st.model,
                out_dir=run_dir / k / "artifact",
                name=cfgs[k].name,
                arch=cfgs[k].arch,
                training={
                    "config": cfgs[k].to_dict(),
                    "teachers": descs if cfgs[k].alpha < 1 else [],
                    "steps": st.step,
                    "wall_time_s": round(wall, 1),
                    "lockstep": {"seeds": seeds, "models": len(states), "note": "wall time shared by all models"},
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                },
                data={
                    "train": base.train_sets,
                    "val": f"held-out slice of the training images (1 in {base.holdout} by name hash)",
                    "val_images": sorted(n for pairs in val.values() for n, _, _ in pairs),
                    "zoomout_images": cfgs[k].zoomout if cfgs[k].alpha < 1 else 0,
                },
                scores={"val": last.get(k, {})},
            )
        )
    summary = {"artifacts": arts, "wall_time_s": wall, "val": last, "steps": step}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def _checkpoint(st: State, *, optimizer: bool = True) -> dict[str, Any]:
    return {
        "step": st.step,
        "model": st.model.state_dict(),
        "ema": st.ema.state_dict() if st.ema is not None else None,
        "optimizer": st.optimizer.state_dict() if optimizer else None,
        "rng": st.rng.bit_generator.state,
    }


def _restore(st: State, ck: dict[str, Any]) -> None:
    st.model.load_state_dict(ck["model"])
    if st.ema is not None and ck["ema"] is not None:
        st.ema.load_state_dict(ck["ema"])
    if ck["optimizer"] is not None:  # None in a finished run's checkpoint, where no step is left to take
        st.optimizer.load_state_dict(ck["optimizer"])
    st.rng.bit_generator.state = ck["rng"]
    st.step = ck["step"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="the KD recipe (JSON of TrainConfig fields)")
    p.add_argument("--resume", metavar="RUN", help="continue a lock-step run folder (its config.json)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--name")
    p.add_argument("--steps", type=int)
    p.add_argument("--set", action="append", default=[], help="override a base field: key=JSON (repeatable)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME=JSON overrides, e.g. rgb='{\"arch_config\": {}}' (repeatable; default: KD twins)",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='{"t":"%(asctime)s","level":"%(levelname)s","msg":"%(message)s"}')
    if args.resume:
        saved = json.loads((Path(args.resume) / "config.json").read_text())
        summary = train_lockstep(TrainConfig.from_dict(saved["base"]), saved["seeds"], saved["variants"])
        print(json.dumps({k: v for k, v in summary.items() if k != "val"}, indent=2, default=str))  # noqa: T201
        return 0
    if not args.config:
        p.error("--config or --resume is required")
    d = json.loads(Path(args.config).read_text())
    for kv in args.set:
        k, v = kv.split("=", 1)
        d[k] = json.loads(v)
    if args.name:
        d["name"] = args.name
    if args.steps:
        d["steps"] = args.steps
    variants = {k: json.loads(v) for k, v in (kv.split("=", 1) for kv in args.variant)} or None
    summary = train_lockstep(TrainConfig.from_dict(d), args.seeds, variants)
    print(json.dumps({k: v for k, v in summary.items() if k != "val"}, indent=2, default=str))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
