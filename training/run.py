"""``train(cfg)``: the whole run — data, teachers, loop with progress bar, JSONL log, plot, checkpoints, export."""

from __future__ import annotations

import fcntl
import json
import logging
import platform
import signal
import threading
import time
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from training.camera_train import camera_data_info
from training.config import TrainConfig
from training.distributed import Ranks, agree, wrap
from training.export import export_artifact
from training.loop import (
    build_state,
    checkpoint,
    choose_amp,
    evaluate,
    load_teachers,
    log_row,
    next_batch,
    prepare_data,
    restore,
    train_step,
    validation_data,
)
from training.plot import plot_curves
from vsr.engine import pick_device
from vsr.progress import bar as make_bar

log = logging.getLogger(__name__)


def _save(path: Path, ck: dict[str, Any]) -> None:
    torch.save(ck, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)  # atomic: a kill mid-save keeps the old one


def hold_run_lock(run_dir: Path) -> IO[str]:
    """Lock ``run_dir`` for this process's lifetime (keep the returned file open): two processes training one run
    would interleave checkpoints. ``scripts/train.sh`` reads the lock to tell a running run from an unfinished one."""
    f = (run_dir / ".lock").open("w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise RuntimeError(f"{run_dir} is being trained by another process") from None
    return f


def stop_on_sigterm() -> threading.Event:
    """An event set by SIGTERM (only from the main thread; elsewhere, e.g. in tests, an event never set)."""
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def train(
    cfg: TrainConfig, *, resume: bool = True, progress: bool = True, ranks: Ranks | None = None
) -> dict[str, Any]:
    """Train (or resume) the run in ``cfg.run_dir``; returns a summary with the exported artifact path.

    ``ranks``: this process's place under torchrun (``training.distributed.init``); rank 0 alone writes files and
    logs, holds the run folder's lock while it trains (released when this returns or raises), and returns the summary
    (the others return ``{}``)."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ranks = ranks or Ranks(pick_device(cfg.device))
    log.info("world size %d; device %s", ranks.world, ranks.device)
    if ranks.world > 1 and cfg.feat_beta > 0:
        raise ValueError(
            "feature distillation (feat_beta > 0) is not supported under torchrun: its adapters are not synchronised"
        )
    if not ranks.master:
        return _train(cfg, ranks, resume=resume, progress=progress)
    cfg.run_dir.mkdir(parents=True, exist_ok=True)
    with hold_run_lock(cfg.run_dir):
        (cfg.run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
        return _train(cfg, ranks, resume=resume, progress=progress)


def _train(cfg: TrainConfig, ranks: Ranks, *, resume: bool, progress: bool) -> dict[str, Any]:
    device, master, run_dir = ranks.device, ranks.master, cfg.run_dir
    teachers, weights, descs = load_teachers(cfg, device)
    t0 = time.time()
    source = prepare_data(cfg, device, teachers, weights, descs, shard=(ranks.rank, ranks.world))
    val = validation_data(cfg) if master else {}
    online_teacher = teachers[0] if cfg.feat_beta > 0 and teachers else None
    state = build_state(cfg, device, online_teacher)
    ckpt_path = run_dir / "checkpoint.pt"
    metrics_path = run_dir / "metrics.jsonl"
    elapsed = 0.0
    state.model.train()
    # before the restore: the probe batch advances the crop pool, which the restore then seeks to the checkpoint's
    # position (after it, a resumed run would draw one batch more than the unbroken run and diverge)
    choose_amp(state, cfg, next_batch(source, cfg, np.random.default_rng(0), device), device)
    state.amp = agree(state.amp)
    if resume and ckpt_path.is_file():
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        restore(state, ck, source)
        elapsed = ck.get("elapsed_s", 0.0)
        log.info("resumed %s at step %d", run_dir, state.step)
    elif metrics_path.exists() and master:
        metrics_path.unlink()
    if ranks.world > 1:  # each rank its own batch stream (offset by rank; by step too on a resume, whatever N was)
        state.rng = np.random.default_rng([cfg.seed, ranks.rank, state.step])
    log.info("data ready: %d images in %.1fs; device %s", len(source.pairs), time.time() - t0, device)
    state.ddp = wrap(state.model, ranks)
    t_start = time.time() - elapsed
    bar = make_bar(total=cfg.steps, initial=state.step, desc=cfg.name, disable=not (progress and master))
    last: dict[str, Any] = {}
    stop = stop_on_sigterm() if ranks.world == 1 else threading.Event()
    while state.step < cfg.steps:
        if stop.is_set():  # SIGTERM: checkpoint now and leave; `vsr distill --resume RUN` continues exactly here
            _save(ckpt_path, checkpoint(state, cfg, source) | {"elapsed_s": time.time() - t_start})
            bar.close()
            log.info("stopped at step %d on SIGTERM; checkpoint written", state.step)
            return {"stopped": True, "steps": state.step, "run": str(run_dir)}
        parts = train_step(state, cfg, source, device, online_teacher)
        bar.update(1)
        if not master:
            continue
        if state.step % 50 == 0:
            bar.set_postfix(loss=f"{parts['loss']:.4f}", psnr=f"{state.best_psnr:.2f}")
            log_row(
                metrics_path,
                {
                    "step": state.step,
                    "time_s": round(time.time() - t_start, 2),
                    "lr": state.optimizer.param_groups[0]["lr"],
                    **parts,
                },
            )
        if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
            last = evaluate(state, cfg, device, val)
            psnr = next(iter(last.values()))["psnr_y"]
            state.best_psnr = max(state.best_psnr, psnr)
            log_row(metrics_path, {"step": state.step, "time_s": round(time.time() - t_start, 2), "eval": last})
            bar.set_postfix(loss=f"{parts['loss']:.4f}", psnr=f"{psnr:.2f}")
        if state.step % cfg.ckpt_every == 0 or state.step == cfg.steps:
            _save(ckpt_path, checkpoint(state, cfg, source) | {"elapsed_s": time.time() - t_start})
    bar.close()
    if not master:
        return {}
    wall = time.time() - t_start
    plot_curves(metrics_path, run_dir / "curves.png")
    training_info = {
        "config": cfg.to_dict(),
        "teachers": descs,
        "steps": state.step,
        "wall_time_s": round(wall, 1),
        "device": str(device),
        "world_size": ranks.world,
        "machine": f"{platform.node()} {platform.processor() or platform.machine()} threads={torch.get_num_threads()}",
        "amp": str(state.amp) if state.amp is not None else "fp32",
    }
    art = export_artifact(
        state.ema or state.model,
        out_dir=run_dir / "artifact",
        name=cfg.name,
        arch=cfg.arch,
        training=training_info,
        data=camera_data_info(cfg)
        if cfg.camera.enabled
        else {
            "train": cfg.train_sets,
            "val": cfg.val_sets or f"held-out slice of the training images (1 in {cfg.holdout} by name hash)",
            "val_images": sorted(n for pairs in val.values() for n, _, _ in pairs),
            "data_root": cfg.data_root,
        },
        scores={"val": last},
    )
    return {"artifact": str(art), "wall_time_s": wall, "val": last, "steps": state.step}
