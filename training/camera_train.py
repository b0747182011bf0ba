"""Camera training's three hooks into the one training loop (:mod:`training.loop`).

- :func:`camera_pairs`: the pool of degraded clips (teacher on the clean LR, or on the student's input with
  ``teacher_input="degraded"``) as the loop's training pairs;
- :func:`init_from_artifact`: start from a trained artifact (the bundled ``x2``) instead of from scratch;
- :func:`validate_holdout`: PSNR-Y / tPSNR-Y of the model and of bicubic on the held-out training images made into
  clips, clean and libx264 at ``val_crfs`` — the figures a recipe is chosen by (never Set5/Set14).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from training.camera_pool import build_pool, holdout_by_content, pool_pairs
from training.config import TrainConfig
from training.data import Pair, list_images, load_cached
from training.evaluate import model_upscaler
from training.soft_targets import teacher_sr, weights_hash
from training.teachers import is_weight_file
from training.video_eval import evaluate_clips
from vsr.archs.student import RepConv
from vsr.artifact import load_artifact
from vsr.imageops import upscale_bicubic

log = logging.getLogger(__name__)
CACHE = Path(".cache") / "camera"


def camera_pairs(
    cfg: TrainConfig, device: torch.device, teachers: list[nn.Module], weights: list[float], descs: list[dict[str, Any]]
) -> list[Pair]:
    """Training pairs from the camera pool of the training images less the held-out slice."""
    train_paths, held = holdout_by_content(list_images(cfg.data_paths(cfg.train_sets)), cfg.camera.holdout_every)
    use_teacher = bool(teachers) and cfg.alpha < 1.0
    pool = build_pool(
        train_paths,
        cfg.scale,
        cfg.camera,
        seed=cfg.seed,
        cache=CACHE / f"x{cfg.scale}",
        teacher=(lambda lr: teacher_sr(teachers, weights, lr, device)) if use_teacher else None,
        teacher_id=teachers_id(teachers, weights, descs),
        teacher_input=cfg.teacher_input,
    )
    pairs = pool_pairs(pool, cfg.camera.clean_share)
    frames = sum(c.hr.shape[0] * c.hr.shape[1] for c in pool)
    log.info("camera pool: %d images, %d frames, %d held out", len(pool), frames, len(held))
    return [p for p in pairs if min(p.lr.shape[:2]) >= cfg.patch]


def teachers_id(teachers: list[nn.Module], weights: list[float], descs: list[dict[str, Any]]) -> str:
    """The soft-label cache's name for the teachers: a published weight file by its name (the key the pool's caches
    were written under), an artifact by a hash of its weights: our own teachers are retrained in place (a run's
    ``artifact`` folder), and a retrained teacher must not reuse its predecessor's labels."""
    names = [
        d["source"] if is_weight_file(d["source"]) else weights_hash(t) for t, d in zip(teachers, descs, strict=True)
    ]
    return ";".join(f"{n}:{w}" for n, w in zip(names, weights, strict=True))


@torch.no_grad()
def init_from_artifact(model: nn.Module, name: str) -> None:
    """Load an artifact's (fused) weights into ``model``, keeping its function exactly.

    A fused model takes them as they are; a re-parameterisable one gets each fused 3x3 kernel in its 3x3 branch
    (identity subtracted, other branches' last layers zeroed), so training starts from the artifact's output.
    """
    src, _ = load_artifact(name, rgb=False)  # a luma artifact: its bare Y model (the one being trained)
    state = src.state_dict()
    blocks = {n: m for n, m in model.named_modules() if isinstance(m, RepConv)}
    if not blocks:
        model.load_state_dict(state, strict=True)
        return
    for n, m in blocks.items():
        w, b = state[f"{n}.weight"].clone(), state[f"{n}.bias"].clone()
        if m.identity:
            idx = torch.arange(m.out_ch)
            w[idx, idx, 1, 1] -= 1.0
        m.conv3.weight.copy_(w)
        m.conv3.bias.copy_(b)  # type: ignore[union-attr]
        for z in (m.conv1.weight, m.conv1.bias, *((m.es_3x3.weight, m.es_3x3.bias) if m.expand > 0 else ())):
            z.zero_()


def holdout_paths(cfg: TrainConfig) -> list[Path]:
    return holdout_by_content(list_images(cfg.data_paths(cfg.train_sets)), cfg.camera.holdout_every)[1]


def holdout_images(cfg: TrainConfig) -> list[np.ndarray]:
    return [load_cached(p) for p in holdout_paths(cfg)]


def camera_data_info(cfg: TrainConfig) -> dict[str, Any]:
    """The artifact's ``data`` record of a camera run."""
    n = cfg.camera.holdout_every
    return {
        "train": cfg.train_sets,
        "val": f"held-out training images (1 in {n} by content hash) as {cfg.camera.frames}-frame pan clips, clean "
        f"and libx264 CRF {', '.join(map(str, cfg.camera.val_crfs))}",
        "val_images": sorted(p.stem for p in holdout_paths(cfg)),
        "data_root": cfg.data_root,
        "camera": asdict(cfg.camera),
    }


def validate_holdout(model: nn.Module, cfg: TrainConfig, device: torch.device) -> dict[str, Any]:
    """``{condition: {psnr_y, tpsnr_y, bicubic_*}}`` on the held-out clips, clean first (~1 min on one thread)."""
    images = holdout_images(cfg)
    ups = {
        "model": model_upscaler(model, cfg.scale, device=str(device)),
        "bicubic": lambda lr: upscale_bicubic(lr, cfg.scale),
    }
    out: dict[str, Any] = {}
    for crf in (None, *cfg.camera.val_crfs):
        res = evaluate_clips(ups, images, cfg.scale, codec="h264" if crf else None, crf=crf or 0, ssim=False)
        name = f"holdout-h264-crf{crf}" if crf else "holdout-clean"
        out[name] = res["model"] | {f"bicubic_{k}": v for k, v in res["bicubic"].items()} | {"images": len(images)}
    return out
