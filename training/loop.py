"""The training loop as plain, visible functions: prepare_data, build_state, next_batch, step_on (train_step = both),
evaluate, checkpoint/restore. ``training.run`` strings them into a run; ``training.lockstep`` trains twins on shared
batches. A data source is anything with ``batch(n, rng) -> Batch`` (see ``training.pool.CropPool``).

Used by ``vsr train-teacher`` (EDSR, alpha = 1) and ``vsr distill`` (student, alpha < 1 with teachers).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.camera_train import camera_pairs, init_from_artifact, validate_holdout
from training.config import TrainConfig
from training.data import Batch, Pair, list_images, make_pairs, split_holdout, validation_pairs
from training.evaluate import evaluate_pairs, model_upscaler
from training.losses import FeatureAdapters, feature_loss, kd_loss, pick_layers
from training.pool import CropPool
from training.soft_targets import attach_soft_targets, zoom_out_pairs
from training.teachers import init_state, is_weight_file, load_teacher
from vsr.archs import build
from vsr.luma import rgb_to_luma

ValPairs = dict[str, list[tuple[str, np.ndarray, np.ndarray]]]

log = logging.getLogger(__name__)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype asked for; ``auto`` is bf16 on CUDA and undecided (None) on CPU, where
    :func:`choose_amp` times both (bf16 autocast was 1.7x faster on an AMX Xeon and slower on CPUs without
    native bf16: decide by measuring, not by flags)."""
    if cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16" or device.type == "cuda":
        return torch.bfloat16
    return None


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr`` — a pure function of the step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(cfg.steps - cfg.warmup, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(t, 1.0)))


@dataclass
class State:
    """What a run mutates; one self-describing checkpoint dict is made from it."""

    model: nn.Module
    ema: nn.Module | None
    adapters: FeatureAdapters | None
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    step: int = 0
    best_psnr: float = -1.0
    amp: torch.dtype | None = None
    # what the step calls: None = ``model``; under torchrun its DDP wrapper (training.distributed.wrap), which
    # averages the gradients across ranks. Checkpoints, EMA and export always use the bare ``model``.
    ddp: nn.Module | None = None


def build_state(cfg: TrainConfig, device: torch.device, teacher: nn.Module | None) -> State:
    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = build(cfg.arch, cfg.arch_config).to(device).to(memory_format=fmt)  # type: ignore[call-overload]
    if cfg.init and is_weight_file(cfg.init):  # e.g. fine-tuning a published RLFN into a restoration teacher
        model.load_state_dict(init_state(cfg.init, cfg.arch, cfg.arch_config), strict=True)
    elif cfg.init:
        init_from_artifact(model, cfg.init)
    ema = build(cfg.arch, cfg.arch_config).to(device).requires_grad_(False) if cfg.ema > 0 else None
    if ema is not None:
        ema.load_state_dict(model.state_dict())
    adapters = None
    params = list(model.parameters())
    if cfg.feat_beta > 0 and cfg.feat_adapters and teacher is not None:
        if cfg.colors != 3:
            raise ValueError("feature distillation needs an RGB student (the teacher sees RGB)")
        probe = torch.zeros(1, 3, 16, 16, device=device)
        with torch.no_grad():
            s_feats, t_feats = model.forward_features(probe), teacher.forward_features(probe)  # type: ignore[operator]
        pairs = pick_layers(len(s_feats), len(t_feats))
        adapters = FeatureAdapters(
            student_channels=[s_feats[i].shape[1] for i, _ in pairs],
            teacher_channels=[t_feats[j].shape[1] for _, j in pairs],
        ).to(device)
        params += list(adapters.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.99))
    return State(
        model=model,
        ema=ema,
        adapters=adapters,
        optimizer=opt,
        rng=np.random.default_rng(cfg.seed),
        amp=amp_dtype(cfg, device),
    )


def choose_amp(state: State, cfg: TrainConfig, batch: Batch, device: torch.device) -> None:
    """``amp=auto`` on CPU: time a few forward+backward passes in fp32 and in bf16 autocast, keep the faster."""
    if cfg.amp != "auto" or device.type != "cpu":
        return

    def cost(dtype: torch.dtype | None) -> float:
        times = []
        for _ in range(4):
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
                out = state.model(batch.lr)
            out.float().abs().mean().backward()
            times.append(time.perf_counter() - t0)
        state.model.zero_grad(set_to_none=True)
        return sorted(times)[1]  # first call warms up; the median of the rest

    fp32, bf16 = cost(None), cost(torch.bfloat16)
    state.amp = torch.bfloat16 if bf16 < 0.9 * fp32 else None
    log.info("amp auto: fp32 %.1f ms, bf16 %.1f ms per pass -> %s", fp32 * 1e3, bf16 * 1e3, state.amp)


def adapt_batch(b: Batch, cfg: TrainConfig) -> Batch:
    """Fit a (shared, RGB) batch to one student: drop teacher-only samples for a student that does not use them
    (no KD, or no zoom-out in its recipe), convert to Y for a luma student."""
    if b.has_hr is not None and (cfg.alpha >= 1.0 or not cfg.zoomout):
        keep = b.has_hr
        b = Batch(lr=b.lr[keep], hr=b.hr[keep], soft=b.soft[keep] if b.soft is not None else None, has_hr=None)
    if cfg.colors == 1:
        soft = rgb_to_luma(b.soft) if b.soft is not None else None
        b = Batch(lr=rgb_to_luma(b.lr), hr=rgb_to_luma(b.hr), soft=soft, has_hr=b.has_hr)
    return b


def next_batch(source: CropPool, cfg: TrainConfig, rng: np.random.Generator, device: torch.device) -> Batch:
    """One batch from the data source for ``cfg``'s student, on ``device`` in the configured memory format."""
    return to_device(adapt_batch(source.batch(cfg.batch, rng), cfg), cfg, device)


def to_device(b: Batch, cfg: TrainConfig, device: torch.device) -> Batch:
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format

    def move(t: torch.Tensor) -> torch.Tensor:
        return t.to(device, non_blocking=True).contiguous(memory_format=fmt)

    soft = move(b.soft) if b.soft is not None else None
    has_hr = b.has_hr.to(device) if b.has_hr is not None else None
    return Batch(lr=move(b.lr), hr=move(b.hr), soft=soft, has_hr=has_hr)


def step_on(state: State, cfg: TrainConfig, batch: Batch, teacher: nn.Module | None = None) -> dict[str, float]:
    """One optimiser step of ``state`` on ``batch`` (twins trained in lock-step share the batch)."""
    for g in state.optimizer.param_groups:
        g["lr"] = lr_at(state.step, cfg)
    dtype = state.amp
    device_type = batch.lr.device.type
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = (state.ddp or state.model)(batch.lr)
        loss, parts = kd_loss(out.float(), batch.hr, batch.soft, alpha=cfg.alpha, kind=cfg.loss, has_hr=batch.has_hr)
        if cfg.feat_beta > 0 and teacher is not None:
            with torch.no_grad():
                t_feats = teacher.forward_features(batch.lr)  # type: ignore[operator]
            s_feats = state.model.forward_features(batch.lr)  # type: ignore[operator]
            idx = pick_layers(len(s_feats), len(t_feats))
            f_loss = feature_loss(
                [s_feats[i].float() for i, _ in idx], [t_feats[j].float() for _, j in idx], state.adapters
            )
            loss = loss + cfg.feat_beta * f_loss
            parts["feat"] = float(f_loss.detach())
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip > 0:
        params = [p for g in state.optimizer.param_groups for p in g["params"]]  # adapters clipped with the rest
        torch.nn.utils.clip_grad_norm_(params, cfg.clip)
    state.optimizer.step()
    if state.ema is not None:
        decay = min(cfg.ema, (1 + state.step) / (10 + state.step))  # warm-up: early EMA tracks the model
        with torch.no_grad():
            torch._foreach_lerp_(list(state.ema.parameters()), list(state.model.parameters()), 1.0 - decay)
    state.step += 1
    parts["loss"] = float(loss.detach())  # note: a device sync point; cheap next to the step on CPU
    return parts


def train_step(
    state: State, cfg: TrainConfig, source: CropPool, device: torch.device, teacher: nn.Module | None
) -> dict[str, float]:
    """Draw a batch from ``source`` and take one step on it."""
    return step_on(state, cfg, next_batch(source, cfg, state.rng, device), teacher)


def evaluate(state: State, cfg: TrainConfig, device: torch.device, val: ValPairs) -> dict[str, Any]:
    """PSNR-Y/SSIM-Y of the EMA (else the live) model on the validation images (the held-out slice)."""
    model = state.ema or state.model
    model.eval()
    if cfg.camera.enabled:  # held-out training images as clips: clean and through libx264
        res = validate_holdout(model, cfg, device)
    else:
        res = {
            name: evaluate_pairs(model_upscaler(model, cfg.scale, device=str(device)), pairs, cfg.scale)
            for name, pairs in val.items()
        }
    state.model.train()
    return res


def checkpoint(state: State, cfg: TrainConfig, source: CropPool | None = None) -> dict[str, Any]:
    return {
        "pool_draws": source.draws if source is not None else None,
        "config": cfg.to_dict(),
        "step": state.step,
        "best_psnr": state.best_psnr,
        "model": state.model.state_dict(),
        "ema": state.ema.state_dict() if state.ema is not None else None,
        "adapters": state.adapters.state_dict() if state.adapters is not None else None,
        "optimizer": state.optimizer.state_dict(),
        "rng": state.rng.bit_generator.state,
        "torch_rng": torch.get_rng_state(),
    }


def restore(state: State, ckpt: dict[str, Any], source: CropPool | None = None) -> None:
    """Put ``state`` (and the crop pool, when given) back where the checkpoint was taken."""
    if source is not None and ckpt.get("pool_draws") is not None:
        source.seek(ckpt["pool_draws"])
    state.model.load_state_dict(ckpt["model"])
    if state.ema is not None and ckpt.get("ema") is not None:
        state.ema.load_state_dict(ckpt["ema"])
    if state.adapters is not None and ckpt.get("adapters") is not None:
        state.adapters.load_state_dict(ckpt["adapters"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.rng.bit_generator.state = ckpt["rng"]
    torch.set_rng_state(ckpt["torch_rng"])
    state.step, state.best_psnr = ckpt["step"], ckpt["best_psnr"]


def load_teachers(cfg: TrainConfig, device: torch.device) -> tuple[list[nn.Module], list[float], list[dict[str, Any]]]:
    models, descs = [], []
    for path in cfg.teachers:
        m, d = load_teacher(path)
        if d["scale"] != cfg.scale:
            raise ValueError(f"teacher {path} is x{d['scale']}, run is x{cfg.scale}")
        models.append(m.to(device))
        descs.append(d)
    weights = cfg.teacher_weights or [1.0 / max(len(models), 1)] * len(models)
    return models, weights, descs


def prepare_data(
    cfg: TrainConfig,
    device: torch.device,
    teachers: list[nn.Module],
    weights: list[float],
    descs: list[dict[str, Any]],
    shard: tuple[int, int] = (0, 1),
) -> CropPool:
    """The training data source: a crop pool over the training images (less the held-out slice), with teacher
    outputs attached when distilling and teacher-only zoom-out samples when ``cfg.zoomout`` > 0.

    ``shard = (rank, world)``: data-parallel rank ``rank`` gets every ``world``-th image and its own pool seed."""
    if cfg.camera.enabled:  # the camera clip pool (degraded + clean LR, teacher on the clean LR) feeds the crops
        pairs = camera_pairs(cfg, device, teachers, weights, descs)
        return CropPool(pairs, scale=cfg.scale, patch=cfg.patch, size=cfg.pool, seed=cfg.seed, refresh=cfg.pool_refresh)
    del descs  # teachers are identified by their weights' hash, not by their description
    paths, _held = split_holdout(list_images(cfg.data_paths(cfg.train_sets)), cfg.holdout if not cfg.val_sets else 0)
    rank, world = shard
    if world > 1:
        if len(paths) < world:
            raise ValueError(f"{len(paths)} training images cannot be shared by {world} ranks")
        paths = paths[rank::world]
    pairs = make_pairs(paths, cfg.scale, min_lr=cfg.patch)
    extra: list[Pair] = []
    if teachers and cfg.alpha < 1.0:
        cache = Path(".cache") / "soft"
        attach_soft_targets(pairs, teachers, weights, device=device, cache_dir=cache)
        if cfg.zoomout:
            rng = np.random.default_rng(1234)  # the zoom-out subset is fixed (cache hits), not tied to the seed
            chosen = sorted(rng.choice(len(pairs), size=min(cfg.zoomout, len(pairs)), replace=False))
            extra = zoom_out_pairs([pairs[i].hr for i in chosen], teachers, weights, device=device, cache_dir=cache)
    return CropPool(
        pairs,
        scale=cfg.scale,
        patch=cfg.patch,
        size=cfg.pool,
        seed=cfg.seed + rank,
        refresh=cfg.pool_refresh,
        degradations=cfg.degradations,
        teacher_only=extra,
        teacher_share=cfg.zoomout_share,
    )


def validation_data(cfg: TrainConfig) -> ValPairs:
    """``{name: [(image, LR, HR), ...]}``: the held-out slice of the training images, or ``cfg.val_sets``."""
    if cfg.camera.enabled:
        return {}  # camera runs validate on held-out clips of their own slice (training.camera_train)
    if cfg.val_sets:
        return {
            Path(s).name: validation_pairs([p], cfg.scale)
            for s, p in zip(cfg.val_sets, cfg.data_paths(cfg.val_sets), strict=True)
        }
    _train, held = split_holdout(list_images(cfg.data_paths(cfg.train_sets)), cfg.holdout)
    if not held:
        raise ValueError(f"holdout={cfg.holdout} leaves no validation image; set val_sets or a smaller holdout")
    return {"heldout": validation_pairs([], cfg.scale, files=held)}


def log_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
