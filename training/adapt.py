"""``vsr adapt``: fine-tune a camera student on a site's own footage; keep it only if it beats the base there.

    vsr adapt --clips recordings/ --out models/site-a [--base x2-camera] [--minutes 5]

1. Read every video in ``--clips`` (``training.adapt_data``): frames sampled per clip, the last part held back.
2. Score the base model on the held-back frames: PSNR-Y after H.264 at CRF 23 and 28 (``EVAL_CRFS``).
3. Label the training frames' clean LR with the teacher (RLFN by default; at most ``TEACHER_SHARE`` of the time),
   build clean + H.264 (several CRFs) inputs, and train the base's own weights with the training loop's step
   (``training.loop``: same loss, EMA, schedule) until ``--minutes`` (less the time the final scoring needs) or
   ``--steps``.
4. Score the adapted model the same way. Only if it beats the base at every CRF by more than ``--min-gain`` is the
   artifact written (its folder name is its model name: ready for ``VSR_MODEL_REPOSITORY``), with ``MODEL_CARD.md``.

Progress goes to stderr as a line on a terminal and as JSON lines off one; the two scores are printed either way.
Memory is bounded by ``--frames`` per clip; the only files written are the artifact's (nothing cached).
Exit status: 0 written, 1 not better (nothing written).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import torch

from training.adapt_data import held_back_inputs, label, read_site, score, training_pairs
from training.config import DEFAULT_TEACHER, TrainConfig
from training.evaluate import model_upscaler
from training.export import export_artifact
from training.loop import build_state, train_step
from training.pool import CropPool
from training.soft_targets import teacher_sr
from training.teachers import load_teacher
from vsr.artifact import load_artifact
from vsr.errors import UsageError

log = logging.getLogger(__name__)

EVAL_CRFS = (23, 28)
TRAIN_CRFS = (18, 23, 28, 33)
TEACHER_SHARE = 0.25  # of the time budget the teacher may spend labelling


@dataclass
class AdaptConfig:
    clips: Path
    out: Path
    base: str = "x2-camera"
    minutes: float = 5.0
    steps: int = 0  # 0 = until the time is up
    teacher: str | None = DEFAULT_TEACHER  # None: no distillation (hard targets only)
    frames: int = 32  # per clip, spread over it (bounds memory)
    holdout: float = 0.25  # the last share of each clip's frames, held back
    batch: int = 16
    patch: int = 48  # LR crop
    lr: float = 3e-4
    alpha: float = 0.5  # hard-target weight when a teacher is used
    min_gain: float = 0.0  # dB at every EVAL_CRFS
    seed: int = 0
    threads: int = 0
    train_crfs: tuple[int, ...] = TRAIN_CRFS


@dataclass
class Reporter:
    """Progress: one rewritten line on a terminal, JSON lines off one (``stream``: stderr by default)."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)

    def __call__(self, event: str, **fields: Any) -> None:
        if not self.stream.isatty():
            self.stream.write(json.dumps({"event": event, **fields}) + "\n")
        elif event == "step":
            f = fields
            self.stream.write(f"\rstep {f['step']}  loss {f['loss']:.4f}  {f['elapsed_s']:.0f}/{f['budget_s']:.0f} s ")
        else:
            self.stream.write(("\n" if event == "trained" else "") + f"{event}: {json.dumps(fields)}\n")
        self.stream.flush()


@dataclass
class AdaptResult:
    base: dict[str, float]  # "h264-crf23": PSNR-Y, ...
    adapted: dict[str, float]
    written: bool
    steps: int
    seconds: float
    why: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def gains(self) -> dict[str, float]:
        return {k: round(self.adapted[k] - self.base[k], 3) for k in self.base}


def adapt(cfg: AdaptConfig, report: Reporter | None = None, *, start: float | None = None) -> AdaptResult:
    """The whole run (see the module docstring); writes ``cfg.out`` only when the adapted model is better.
    ``start``: when the budget began (``time.monotonic()``; the CLI passes the time before torch was imported)."""
    report = report or Reporter()
    start = time.monotonic() if start is None else start
    deadline = start + cfg.minutes * 60.0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device("cpu")
    base_model, meta = load_artifact(cfg.base)
    scale = meta.scale
    clips = read_site(cfg.clips, frames=cfg.frames, holdout=cfg.holdout, scale=scale)
    report("read", clips=[{"name": c.name, "train": len(c.train), "held": len(c.held)} for c in clips])
    held = {f"h264-crf{crf}": held_back_inputs(clips, scale, crf) for crf in EVAL_CRFS}
    t0 = time.monotonic()
    base = {k: round(score(model_upscaler(base_model, scale), v, scale), 3) for k, v in held.items()}
    eval_s = time.monotonic() - t0
    report("base", model=cfg.base, psnr_y=base, seconds=round(eval_s, 1))

    teacher_fn, teacher_desc = _teacher(cfg, scale, device)
    soft = None
    if teacher_fn is not None:
        label_until = time.monotonic() + TEACHER_SHARE * max(deadline - time.monotonic(), 0.0)
        soft = label(clips, teacher_fn, scale, stop=lambda: time.monotonic() >= label_until)
        report("labelled", frames=sum(len(s) for s in soft), of=sum(len(c.train) for c in clips))
    pairs = training_pairs(clips, scale, cfg.train_crfs, soft)
    tc = _train_config(cfg, meta.arch, meta.config, teacher=teacher_desc is not None, patch=_patch(cfg, pairs))
    state = build_state(tc, device, None)
    steps = _train(cfg, tc, state, pairs, deadline - 1.5 * eval_s - 2.0, report, start) if pairs else 0

    model = (state.ema or state.model).eval()
    adapted = {k: round(score(model_upscaler(model, scale), v, scale), 3) for k, v in held.items()}
    result = AdaptResult(base, adapted, False, steps, 0.0)
    better = all(result.gains[k] > cfg.min_gain for k in base)
    result.why = "" if better else f"not better than {cfg.base} by > {cfg.min_gain} dB at every CRF: {result.gains}"
    result.info = {
        "clips": [(c.name, len(c.train), len(c.held), c.total_frames) for c in clips],
        "pairs": len(pairs),
        "labelled": sum(len(x) for x in soft) if soft is not None else None,
    }
    if better:
        _write(cfg, model, meta.arch, result, teacher_desc, tc)
        result.written = True
    result.seconds = round(time.monotonic() - start, 1)
    report("done", base=base, adapted=adapted, gains=result.gains, written=result.written, steps=steps)
    return result


def _teacher(cfg: AdaptConfig, scale: int, device: torch.device) -> tuple[Any, dict[str, Any] | None]:
    if cfg.teacher is None:
        return None, None
    if not Path(cfg.teacher).exists():
        raise UsageError(f"teacher {cfg.teacher!r} not found (pass --teacher PATH, or --teacher none)")
    model, desc = load_teacher(cfg.teacher)
    if desc["scale"] != scale:
        raise UsageError(f"teacher {cfg.teacher} is x{desc['scale']}; the base model is x{scale}")
    model.to(device)
    return (lambda lr: teacher_sr([model], [1.0], lr, device)), desc


def _patch(cfg: AdaptConfig, pairs: list[Any]) -> int:
    smallest = min((min(p.lr.shape[:2]) for p in pairs), default=cfg.patch)
    return max(8, min(cfg.patch, smallest))


def _train_config(
    cfg: AdaptConfig, arch: str, arch_config: dict[str, Any], *, teacher: bool, patch: int
) -> TrainConfig:
    return TrainConfig(
        name=cfg.out.name,
        scale=int(arch_config.get("scale", 2)),
        arch=arch,
        arch_config=dict(arch_config),
        init=cfg.base,
        teachers=[str(cfg.teacher)] if teacher else [],
        alpha=cfg.alpha if teacher else 1.0,
        steps=max(cfg.steps, 1),
        batch=cfg.batch,
        patch=patch,
        lr=cfg.lr,
        min_lr=cfg.lr / 20,
        warmup=10,
        ema=0.99,
        seed=cfg.seed,
        device="cpu",
        amp="off",
        pool=1024,
        val_sets=[],
        holdout=0,
    )


def _train(
    cfg: AdaptConfig, tc: TrainConfig, state: Any, pairs: list[Any], until: float, report: Reporter, start: float
) -> int:
    """Steps of the training loop until ``until`` (monotonic) or ``cfg.steps``. The cosine schedule is stretched
    to end at the deadline: ``tc.steps`` is re-estimated from the measured step time as the run goes."""
    pool = CropPool(pairs, scale=tc.scale, patch=tc.patch, size=tc.pool, seed=tc.seed, refresh=tc.pool_refresh)
    device = torch.device("cpu")
    t_first = time.monotonic()
    last_report = 0.0
    while time.monotonic() < until and (cfg.steps <= 0 or state.step < cfg.steps):
        parts = train_step(state, tc, pool, device, None)
        now = time.monotonic()
        per_step = (now - t_first) / state.step
        if cfg.steps <= 0:
            tc.steps = state.step + max(int((until - now) / per_step), 1)
        if now - last_report >= 2.0:
            last_report = now
            budget = cfg.minutes * 60.0
            report(
                "step", step=state.step, loss=round(parts["loss"], 5), elapsed_s=round(now - start, 1), budget_s=budget
            )
    report("trained", steps=state.step, seconds=round(time.monotonic() - t_first, 1))
    return int(state.step)


def _write(
    cfg: AdaptConfig, model: torch.nn.Module, arch: str, r: AdaptResult, teacher: dict[str, Any] | None, tc: TrainConfig
) -> None:
    scores = {"site": {"base": cfg.base, "base_psnr_y": r.base, "psnr_y": r.adapted, "gain": r.gains}}
    data = {"site_clips": str(cfg.clips), "clips": r.info["clips"], "holdout": cfg.holdout, "frames": cfg.frames}
    training = {"adapt": {k: str(v) for k, v in vars(cfg).items()}, "teacher": teacher, "steps": r.steps}
    out = export_artifact(model, out_dir=cfg.out, name=cfg.out.name, arch=arch, training=training, data=data,
                          scores=scores, config=dict(tc.arch_config))  # fmt: skip
    load_artifact(out)  # validates what was written
    (out / "MODEL_CARD.md").write_text(model_card(cfg, r, teacher))


def model_card(cfg: AdaptConfig, r: AdaptResult, teacher: dict[str, Any] | None) -> str:
    rows = "\n".join(f"| {k} | {r.base[k]:.2f} | {r.adapted[k]:.2f} | {r.gains[k]:+.2f} |" for k in r.base)
    clips = ", ".join(f"`{n}` ({t} train / {h} held back of {total} frames)" for n, t, h, total in r.info["clips"])
    how = "L1 to the frames"
    if teacher:
        how = f"distilled from `{teacher['source']}`, alpha {cfg.alpha}, teacher on the clean LR of the"
        how += f" {r.info['labelled']} training frames it had time to label (only those are trained on)"
    return f"""# vsr model `{cfg.out.name}` — `{cfg.base}` adapted to one site's footage

- Made by `vsr adapt --clips {cfg.clips} --out {cfg.out} --base {cfg.base} --minutes {cfg.minutes}`:
  {r.steps} steps ({how}), batch {cfg.batch}, LR patch up to {cfg.patch}, lr {cfg.lr}, from `{cfg.base}`'s weights.
- Clips: {clips}. Inputs: the clean bicubic LR and H.264 round trips at CRF {", ".join(map(str, cfg.train_crfs))}.
- Chosen on the held-back last {cfg.holdout:.0%} of each clip's sampled frames (never trained on): written only because
  it beats `{cfg.base}` there at every CRF below. Other scenes: expect `{cfg.base}`'s figures or worse.

| held-back frames, LR through | `{cfg.base}` PSNR-Y | this model PSNR-Y | gain |
|---|---|---|---|
{rows}
"""
