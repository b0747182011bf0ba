"""The training loop as plain, visible functions: build, train_step, evaluate, checkpoint, train.

Used by ``vsr train-teacher`` (EDSR, alpha = 1) and ``vsr distill`` (student, alpha < 1 with teachers).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.camera_train import camera_pairs, init_from_artifact, validate_holdout
from training.config import TrainConfig
from training.data import Pair, list_images, make_pairs, sample_batch
from training.evaluate import evaluate_sets, model_upscaler
from training.losses import FeatureAdapters, feature_loss, kd_loss, pick_layers
from training.soft_targets import attach_soft_targets
from training.teachers import load_teacher
from vsr.archs import build
from vsr.inference import cpu_has_amx_bf16

log = logging.getLogger(__name__)


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 autocast where it is fast (CUDA, or a CPU with AMX/AVX512-BF16: ~1.7x fp32 here); weights stay fp32."""
    if cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16" or device.type == "cuda" or cpu_has_amx_bf16():
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


def build_state(cfg: TrainConfig, device: torch.device, teacher: nn.Module | None) -> State:
    torch.manual_seed(cfg.seed)
    model = build(cfg.arch, cfg.arch_config).to(device)
    if cfg.init:
        init_from_artifact(model, cfg.init)
    ema = build(cfg.arch, cfg.arch_config).to(device).requires_grad_(False) if cfg.ema > 0 else None
    if ema is not None:
        ema.load_state_dict(model.state_dict())
    adapters = None
    params = list(model.parameters())
    if cfg.feat_beta > 0 and cfg.feat_adapters and teacher is not None:
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
    return State(model=model, ema=ema, adapters=adapters, optimizer=opt, rng=np.random.default_rng(cfg.seed))


def train_step(
    state: State, cfg: TrainConfig, pairs: list[Pair], device: torch.device, teacher: nn.Module | None
) -> dict[str, float]:
    batch = sample_batch(
        pairs, scale=cfg.scale, batch=cfg.batch, patch=cfg.patch, rng=state.rng, degradations=cfg.degradations
    )
    lr_img, hr = batch.lr.to(device, non_blocking=True), batch.hr.to(device, non_blocking=True)
    soft = batch.soft.to(device, non_blocking=True) if batch.soft is not None else None
    for g in state.optimizer.param_groups:
        g["lr"] = lr_at(state.step, cfg)
    dtype = amp_dtype(cfg, device)
    with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
        out = state.model(lr_img)
        loss, parts = kd_loss(out.float(), hr, soft, alpha=cfg.alpha, kind=cfg.loss)
        if cfg.feat_beta > 0 and teacher is not None:
            with torch.no_grad():
                t_feats = teacher.forward_features(lr_img)  # type: ignore[operator]
            s_feats = state.model.forward_features(lr_img)  # type: ignore[operator]
            idx = pick_layers(len(s_feats), len(t_feats))
            f_loss = feature_loss([s_feats[i] for i, _ in idx], [t_feats[j] for _, j in idx], state.adapters)
            loss = loss + cfg.feat_beta * f_loss
            parts["feat"] = float(f_loss.detach())
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.clip > 0:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), cfg.clip)
    state.optimizer.step()
    if state.ema is not None:
        decay = min(cfg.ema, (1 + state.step) / (10 + state.step))  # warm-up: early EMA tracks the model
        with torch.no_grad():
            for e, p in zip(state.ema.parameters(), state.model.parameters(), strict=True):
                e.lerp_(p, 1.0 - decay)
    state.step += 1
    parts["loss"] = float(loss.detach())  # note: a device sync point; cheap next to the step on CPU
    return parts


def evaluate(state: State, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    model = state.ema or state.model
    model.eval()
    if cfg.camera.enabled:
        res = validate_holdout(model, cfg, device)
    else:
        res = evaluate_sets(
            model_upscaler(model, cfg.scale, device=str(device)),
            cfg.data_paths(cfg.val_sets),
            cfg.scale,
            progress=False,
        )
    state.model.train()
    return res


def checkpoint(state: State, cfg: TrainConfig) -> dict[str, Any]:
    return {
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


def restore(state: State, ckpt: dict[str, Any]) -> None:
    state.model.load_state_dict(ckpt["model"])
    if state.ema is not None and ckpt.get("ema") is not None:
        state.ema.load_state_dict(ckpt["ema"])
    if state.adapters is not None and ckpt.get("adapters") is not None:
        state.adapters.load_state_dict(ckpt["adapters"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.rng.bit_generator.state = ckpt["rng"]
    torch.set_rng_state(ckpt["torch_rng"])
    state.step, state.best_psnr = ckpt["step"], ckpt["best_psnr"]


def load_teachers(cfg: TrainConfig, device: torch.device) -> tuple[list[nn.Module], list[float], list[dict]]:
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
    cfg: TrainConfig, device: torch.device, teachers: list[nn.Module], weights: list[float], descs: list[dict]
) -> list[Pair]:
    if cfg.camera.enabled:
        return camera_pairs(cfg, device, teachers, weights, descs)
    pairs = make_pairs(list_images(cfg.data_paths(cfg.train_sets)), cfg.scale, min_lr=cfg.patch)
    if teachers and cfg.alpha < 1.0:
        ids = [f"{d['source']}" for d in descs]
        attach_soft_targets(
            pairs, teachers, weights, teacher_ids=ids, device=device, cache_dir=Path(".cache") / f"x{cfg.scale}"
        )
    return pairs


def log_row(path: Path, row: dict[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
