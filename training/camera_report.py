"""The camera model's numbers, by one command: install the trained artifact, evaluate, write card + README tables.

    python -m training.camera_report --install runs/x2-camera/artifact --ablation runs/x2-camera-cs30 ... --write

- Set5/Set14 as 6-frame pan clips, LR by bicubic /2, clean and libx264 (veryfast) at CRF 23/28/33: PSNR-Y, SSIM-Y,
  tPSNR-Y of bicubic and each model (:mod:`training.video_eval`) -> ``bench/results/camera_eval.json``;
- the held-out training images as clips (the figures the recipe was chosen by) for every model;
- the table goes into ``vsr/models/x2-camera/MODEL_CARD.md`` and the README between ``camera-table`` markers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from training.camera_train import validate_holdout
from training.config import DEFAULT_DATA_ROOT, TrainConfig
from training.evaluate import evaluate_set, model_upscaler
from training.video_eval import FRAMES, Upscale, evaluate_video_sets
from vsr.artifact import BUNDLED_DIR, META_NAME, load_artifact
from vsr.imageops import upscale_bicubic

BEGIN, END = "<!-- camera-table:begin -->", "<!-- camera-table:end -->"
RESULTS = Path("bench/results/camera_eval.json")
COMMAND = "python -m training.camera_report --write"


def condition_label(crf: int | None) -> str:
    return f"h264 CRF {crf}" if crf else "clean"


def grid(
    models: list[str], folders: list[str], crfs: list[int | None], scale: int = 2
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """``{condition: {set: {upscaler: scores}}}`` for bicubic and every model."""
    ups: dict[str, Upscale] = {"bicubic": lambda lr: upscale_bicubic(lr, scale)}
    for m in models:
        ups[m] = model_upscaler(load_artifact(m)[0], scale)
    return {
        condition_label(c): evaluate_video_sets(ups, folders, scale, codec="h264" if c else None, crf=c or 0)
        for c in crfs
    }


def markdown(g: dict[str, Any]) -> str:
    sets = list(next(iter(g.values())))
    head = "| input | upscaler | " + " | ".join(f"{s} PSNR-Y (gain) / SSIM-Y / tPSNR-Y" for s in sets) + " |"
    lines = [head, "|---|---|" + "---|" * len(sets)]
    for cond, per_set in g.items():
        for up in per_set[sets[0]]:
            cells = []
            for s in sets:
                r, b = per_set[s][up], per_set[s]["bicubic"]
                gain = "" if up == "bicubic" else f" ({r['psnr_y'] - b['psnr_y']:+.2f})"
                cells.append(f"{r['psnr_y']:.2f}{gain} / {r['ssim_y']:.4f} / {r['tpsnr_y']:.2f}")
            lines.append(f"| {cond} | {up} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def holdout_table(models: list[str], cfg: TrainConfig) -> tuple[dict[str, Any], str]:
    """Held-out training clips (never Set5/Set14): PSNR-Y gain over bicubic and tPSNR-Y per model and condition."""
    res = {m: validate_holdout(load_artifact(m)[0], cfg, load_device()) for m in models}
    conds = list(next(iter(res.values())))
    lines = ["| model | " + " | ".join(f"{c}: gain / tPSNR gain" for c in conds) + " |", "|---|" + "---|" * len(conds)]
    for m, r in res.items():
        cells = [
            f"{r[c]['psnr_y'] - r[c]['bicubic_psnr_y']:+.2f} / {r[c]['tpsnr_y'] - r[c]['bicubic_tpsnr_y']:+.2f}"
            for c in conds
        ]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return res, "\n".join(lines)


def load_device() -> Any:
    import torch

    return torch.device("cpu")


def ablation_rows(runs: list[Path]) -> str:
    """One row per ablation run: its camera settings and its last held-out evaluation (from metrics.jsonl)."""
    lines = [
        "| run | clean share | steps | held-out clean gain | CRF 23 gain | CRF 28 gain | CRF 28 tPSNR gain |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if run.suffix == ".json":  # a saved validate_holdout result of a bundled model (e.g. x2, before fine-tuning)
            e = json.loads(run.read_text())

            def g(c: str, k: str = "psnr_y", e: dict[str, Any] = e) -> str:
                return f"{e[c][k] - e[c]['bicubic_' + k]:+.2f}"

            lines.append(
                f"| {run.stem} (no fine-tune) | - | - | {g('holdout-clean')} | {g('holdout-h264-crf23')} | "
                f"{g('holdout-h264-crf28')} | {g('holdout-h264-crf28', 'tpsnr_y')} |"
            )
            continue
        cfg = json.loads((run / "config.json").read_text())
        evals = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval" in r]
        if not evals:
            continue
        last = evals[-1]
        e = last["eval"]

        def gain(c: str, k: str = "psnr_y", e: dict[str, Any] = e) -> str:
            return f"{e[c][k] - e[c]['bicubic_' + k]:+.2f}" if c in e else "-"

        lines.append(
            f"| {run.name} | {cfg['camera']['clean_share']} | {last['step']} | {gain('holdout-clean')} | "
            f"{gain('holdout-h264-crf23')} | {gain('holdout-h264-crf28')} | {gain('holdout-h264-crf28', 'tpsnr_y')} |"
        )
    return "\n".join(lines)


def replace_block(path: Path, text: str) -> None:
    """Put ``text`` between the camera-table markers of ``path`` (appended with markers if absent)."""
    body = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{text}\n{END}"
    if BEGIN in body and END in body:
        body = body[: body.index(BEGIN)] + block + body[body.index(END) + len(END) :]
    else:
        body = body.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(body)


def card_header(meta: dict[str, Any], recipe: str) -> str:
    """The model card's recipe part, from the artifact's own metadata (what the run recorded, not retyped)."""
    tr = meta["training"]
    cfg, cam = tr["config"], tr["config"]["camera"]
    deg = cam["degradation"]
    teachers = ", ".join(t["source"] for t in tr.get("teachers", [])) or "none"
    luma = meta["config"].get("colors") == 1
    role = (
        ", a luma (Y) student: it sees and predicts BT.601 Y, chroma is upscaled bilinearly (vsr/luma.py). One of the models the"
        " stream model `auto` chooses from, by measured cost against the frame budget of all live streams."
        if luma
        else ", the same network as `x2` (same speed). Default model of video jobs (`VSR_VIDEO_MODEL`)."
    )
    init = str(cfg.get("init") or "")
    start = (
        "Trained from scratch (random init)"
        if not init
        else f"Started from `{init}`"
        if "/" in init  # a run's artifact, not a bundled model
        else f"Started from the bundled `{init}`"
    )
    return f"""# vsr model `{meta["name"]}` — x2 student for compressed, noisy camera video

- Architecture: `{meta["arch"]}` {json.dumps(meta["config"])} — {meta["parameters"]:,} parameters{role}
- {start}; distilled from `{teachers}` with
  `L = α·L1(student(degraded LR), HR) + (1−α)·L1(student(degraded LR), teacher(clean LR))`, α = {cfg["alpha"]}:
  the teacher labels the **clean** LR, the student sees the degraded one (or, with probability
  {cam["clean_share"]}, the clean one).
- Data: {", ".join(cfg["train_sets"])} less the held-out slice (1 in {cam["holdout_every"]} by content hash):
  {cam["clips"]} pan/zoom clips of {cam["frames"]} frames per image (LR side ≤ {cam["lr_size"]}), each degraded
  once per clip: blur p={deg["blur_prob"]} (defocus r {deg["defocus_radius"]} / motion {deg["motion_length"]} HR px) →
  downscale kernel p={deg["kernel_prob"]} from {deg["kernels"]} (else bicubic) → sensor noise p={deg["noise_prob"]}
  (Gaussian σ {deg["gauss_sigma"]} levels + Poisson {deg["photons"]} photons, chroma ×{deg["chroma"]}) → codec
  p={deg["codec_prob"]} from {deg["codecs"]} at CRF {deg["crf"]}, yuv420p, presets {deg["presets"]},
  GOP {deg["gop"]}, B-frames {deg["bframes"]}.
- Training: {tr["steps"]} steps, batch {cfg["batch"]}, LR patch {cfg["patch"]}, lr {cfg["lr"]} (warm-up
  {cfg["warmup"]}, cosine), EMA {cfg["ema"]}, seed {cfg["seed"]}, {tr.get("amp", "fp32")}; {tr["wall_time_s"]:.0f} s
  wall on `{tr["machine"]}` ({tr["device"]}; no GPU), on a 2-core machine shared with other jobs (the
  wall time is not a speed figure).
- Recipe: `{recipe}`, run by `vsr distill --config {recipe}`; this card by `{COMMAND} --install ...`.
"""


def record_clean_scores(name: str, folders: list[str]) -> dict[str, Any]:
    """Score the bundled ``name`` on clean stills (the field's protocol, as the x2 card) into its metadata."""
    model, meta = load_artifact(name)
    test = {
        Path(f).name: evaluate_set(model_upscaler(model, meta.scale), f, meta.scale, progress=False) for f in folders
    }
    path = BUNDLED_DIR / name / META_NAME
    raw = json.loads(path.read_text())
    raw["scores"] = {"test": test, "camera_eval": str(RESULTS)}
    path.write_text(json.dumps(raw, indent=2) + "\n")
    return test


def clean_table(test: dict[str, Any]) -> str:
    lines = ["| set | bicubic PSNR-Y / SSIM-Y | model PSNR-Y / SSIM-Y |", "|---|---|---|"]
    for s, r in test.items():
        lines.append(
            f"| {s} | {r['bicubic_psnr_y']:.3f} / {r['bicubic_ssim_y']:.4f} | {r['psnr_y']:.3f} / {r['ssim_y']:.4f} |"
        )
    return "\n".join(lines)


def install(artifact: Path, name: str) -> Path:
    """Copy a trained artifact into the bundled models under ``name`` (its metadata renamed)."""
    dest = BUNDLED_DIR / name
    dest.mkdir(parents=True, exist_ok=True)
    for f in artifact.iterdir():
        if f.is_file() and f.name != "MODEL_CARD.md":
            shutil.copy2(f, dest / f.name)
    meta = json.loads((dest / META_NAME).read_text())
    meta["name"] = name
    (dest / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    return dest


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.camera_report", description=__doc__.splitlines()[0])
    p.add_argument("--models", default="x2,x2-camera", help="comma-separated artifacts to compare with bicubic")
    p.add_argument("--crfs", default="0,23,28,33", help="libx264 CRFs; 0 = clean; none = skip the test sets")
    p.add_argument("--data", action="append", help="test-set folders (default Set5 and Set14)")
    p.add_argument("--install", type=Path, help="trained artifact folder to bundle as --name first")
    p.add_argument("--name", default="x2-camera")
    p.add_argument("--recipe", default="training/recipes/x2_camera.json", help="for the held-out slice")
    p.add_argument("--ablation", type=Path, action="append", default=[], help="run folders of the recipe ablation")
    p.add_argument("--note", default="", help="a line for the card under its recipe (e.g. what is interim)")
    p.add_argument("--holdout", action="store_true", help="also score the held-out training clips (~1.5 min a model)")
    p.add_argument("--write", action="store_true", help="write the results JSON, the card's and README's tables")
    args = p.parse_args(argv)
    data = args.data or [f"{DEFAULT_DATA_ROOT}/test/Set5", f"{DEFAULT_DATA_ROOT}/test/Set14"]
    clean = ""
    if args.install:
        install(args.install, args.name)
        clean = clean_table(record_clean_scores(args.name, data))
        print(clean + "\n")
    models = args.models.split(",")
    crfs = [] if args.crfs == "none" else [int(c) or None for c in args.crfs.split(",")]
    g = grid(models, data, crfs) if crfs else {}
    table = markdown(g) if g else "(test-set table not computed: --crfs none)"
    held, held_md = holdout_table(models, TrainConfig.from_json(args.recipe)) if args.holdout else ({}, "")
    print(table + "\n\n" + held_md)
    if args.ablation:
        print("\n" + ablation_rows(args.ablation))
    if args.write:
        note = (
            f"Set5/Set14 as {FRAMES}-frame pan clips (2 px/frame), LR by bicubic /2, then libx264 veryfast yuv420p; "
            f"tPSNR-Y = PSNR of the frame differences. Produced by `{COMMAND}` ({RESULTS})."
        )
        if g:  # the results file and the README only ever hold a full evaluation
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps({"frames": FRAMES, "test_sets": g, "holdout": held}, indent=2) + "\n")
            replace_block(Path("README.md"), table + "\n\n" + note)
        card = BUNDLED_DIR / args.name / "MODEL_CARD.md"
        if args.install:  # a fresh card: the recipe part from the artifact's metadata, the tables below
            header = card_header(json.loads((card.parent / META_NAME).read_text()), args.recipe)
            note = f"\n**Note.** {args.note}\n" if args.note else ""
            card.write_text(f"{header}{note}\n## Clean stills (Set5/Set14 images, LR by bicubic /2)\n\n{clean}\n")
        parts = [table, note]
        if held_md:
            parts += ["Held-out training images as clips (gain over bicubic, dB):", held_md]
        if args.ablation:
            parts += ["Recipe ablation (held-out clips, gain over bicubic, dB):", ablation_rows(args.ablation)]
        replace_block(card, "\n\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
