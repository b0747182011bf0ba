"""Promote a finished run's student to a bundled model, only if it beats the bundled one on held-out data.

    python -m training.promote --run training/runs/x2-luma --name x2                 # compare, write the JSON
    python -m training.promote --run training/runs/x2-luma --name x2 --install       # ... and install on a win

Both models are scored on the run's held-out slice of the training images (1 in ``holdout`` by name hash, never
trained on by the run; ``--sets`` narrows it, e.g. to the photo sets for a photo model) and, for reference only,
on Set5/Set14 (never used to choose). The bundled model may have trained on the held-out images (the first bundled
models used every image of T91/BSD200), so the comparison favours it. A win installs the run's artifact as
``vsr/models/NAME`` (weights, metadata with both scores, a model card with steps, wall time, data, seed and machine),
removes the old int8 variant and quantises the new one (``training.quantize``: kept only within 0.05 dB of fp32).
Results: ``bench/results/promote.json`` (per bundled name, the last comparison).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from training.config import TrainConfig
from training.loop import validation_data
from training.seeds import score
from vsr.artifact import BUNDLED_DIR, META_NAME, ArtifactMeta

RESULTS = Path("bench/results/promote.json")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def compare(run: Path, name: str, sets: list[str] | None) -> dict[str, Any]:
    cfg = TrainConfig.from_dict(json.loads((run / "config.json").read_text()))
    if sets:
        cfg = replace(cfg, train_sets=sets)
    heldout = next(iter(validation_data(cfg).values()))  # (name, LR, HR) of the held-out slice
    new = score(run / "artifact", cfg.scale, cfg.data_root, heldout)
    old = score(BUNDLED_DIR / name, cfg.scale, cfg.data_root, heldout)
    row = {
        k: {"artifact": v["artifact"], "params": v["params"], "heldout": v["heldout"]["heldout"], "sets": v["sets"]}
        for k, v in (("candidate", new), ("bundled", old))
    }
    gain = row["candidate"]["heldout"]["psnr_y"] - row["bundled"]["heldout"]["psnr_y"]
    return {
        "run": str(run),
        "name": name,
        "heldout_sets": cfg.train_sets,
        "heldout_images": len(heldout),
        **row,
        "heldout_gain_db": gain,
        "wins": gain > 0,
        "_meta": new["meta"],
        "_old_meta": old["meta"],
    }


def install(result: dict[str, Any], note: str | None) -> Path:
    meta: ArtifactMeta = result["_meta"]
    dst, src = BUNDLED_DIR / result["name"], Path(result["candidate"]["artifact"])
    meta.name = result["name"]
    meta.scores = {
        "test": result["candidate"]["sets"],
        "heldout": result["candidate"]["heldout"],
        "chosen_by": f"held-out PSNR-Y of {result['heldout_sets']} against the bundled model",
        "replaced": {
            "params": result["bundled"]["params"],
            "heldout_psnr_y": result["bundled"]["heldout"]["psnr_y"],
            "test": result["bundled"]["sets"],
        },
    }
    meta.int8 = None
    meta.license = "Apache-2.0 (distilled from RLFN, Apache-2.0)"
    meta.notes = note
    dst.mkdir(parents=True, exist_ok=True)
    for stale in dst.glob("model_int8.*"):  # the old model's int8 IR: never beside new weights
        stale.unlink()
    shutil.copy2(src / "model.safetensors", dst / "model.safetensors")
    (dst / META_NAME).write_text(json.dumps(meta.model_dump(), indent=2) + "\n")
    (dst / "MODEL_CARD.md").write_text(card(result, meta))
    return dst


def card(result: dict[str, Any], meta: ArtifactMeta) -> str:
    tr, cfg = meta.training, meta.training["config"]
    space = "luma: Y in and out, BT.601, chroma bilinear" if meta.input_space == "y" else "RGB"
    rows = []
    for who in ("candidate", "bundled"):
        r = result[who]
        cells = [r["heldout"]] + [r["sets"][s] for s in ("Set5", "Set14")]
        label = f"this model ({r['params']:,} params)" if who == "candidate" else f"replaced ({r['params']:,} params)"
        rows.append(f"| {label} | " + " | ".join(f"{c['psnr_y']:.2f} / {c['ssim_y']:.4f}" for c in cells) + " |")
    bic = [result["candidate"]["heldout"]] + [result["candidate"]["sets"][s] for s in ("Set5", "Set14")]
    rows.append(
        "| bicubic | " + " | ".join(f"{c['bicubic_psnr_y']:.2f} / {c['bicubic_ssim_y']:.4f}" for c in bic) + " |"
    )
    teachers = ", ".join(t["source"] for t in tr.get("teachers", []))
    return f"""# vsr model `{result["name"]}` — x{meta.scale} real-time student ({space})

- Architecture: `{meta.arch}` {json.dumps(meta.config)} — {meta.parameters:,} parameters (re-parameterised blocks
  fused); input space `{meta.input_space}`.
- Run: `{result["run"]}` (config, checkpoint, metrics and curves in the repository; recipe in its `config.json`).
  `L = α·L1(student, HR) + (1−α)·L1(student, teacher)`, α = {cfg["alpha"]}, teacher `{teachers}`; {tr["steps"]}
  steps, batch {cfg["batch"]}, LR patch {cfg["patch"]}, lr {cfg["lr"]} (warm-up {cfg["warmup"]}, cosine), seed
  {cfg["seed"]}; zoom-out samples {cfg.get("zoomout", 0)}.
- Data: {", ".join(cfg["train_sets"])} less the held-out slice (1 in {cfg.get("holdout")} by name hash).
- Trained on `{tr.get("machine")}` ({tr.get("device")}) in {tr.get("wall_time_s")} s.
- Chosen because it beat the bundled model it replaced on the held-out slice ({result["heldout_images"]} images of
  {", ".join(result["heldout_sets"])}): {result["heldout_gain_db"]:+.3f} dB PSNR-Y. Set5/Set14 chose nothing.
- Teacher, and students with and without KD side by side: the README's model table and
  `bench/results/kd_ablation.json`.
{f"- Note: {meta.notes}" if meta.notes else ""}

## Evaluation (PSNR-Y / SSIM-Y, BT.601, {meta.scale}-pixel border cropped, LR by bicubic downscale)

| model | held-out slice | Set5 | Set14 |
|---|---|---|---|
{chr(10).join(rows)}

Produced by: `{result["command"]}` on {result["machine"]}.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, type=Path, help="a finished run folder (with artifact/)")
    p.add_argument("--name", required=True, help="the bundled model to compare with (and replace)")
    p.add_argument("--sets", nargs="+", help="held-out slice from these training sets (default: the run's)")
    p.add_argument("--install", action="store_true", help="install the run's student if it wins on held-out")
    p.add_argument("--note", help="a line for the model card")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if not (args.run / "artifact" / META_NAME).is_file():
        print(f"error: {args.run} has no exported artifact (is the run finished?)", file=sys.stderr)  # noqa: T201
        return 2
    result = compare(args.run, args.name, args.sets)
    result["command"] = " ".join(["python -m training.promote", *argv])
    result["machine"] = cpu_name()
    verdict = (
        f"{args.run.name}: held-out {result['candidate']['heldout']['psnr_y']:.3f} dB vs bundled {args.name} "
        f"{result['bundled']['heldout']['psnr_y']:.3f} dB ({result['heldout_gain_db']:+.3f})"
    )
    if args.install and result["wins"]:
        dst = install(result, args.note)
        from training.quantize import quantize_artifact

        q = quantize_artifact(dst, TrainConfig.from_dict(json.loads((args.run / "config.json").read_text())).data_root)
        verdict += f" -> installed as {args.name}; int8 {'used' if q.get('used') else 'not used'} ({q.get('delta_db')})"
    elif args.install:
        verdict += f" -> NOT installed; bundled {args.name} kept"
    result["verdict"] = verdict
    allres = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    allres[args.name] = {k: v for k, v in result.items() if not k.startswith("_")}
    RESULTS.write_text(json.dumps(allres, indent=2, default=str) + "\n")
    print(verdict)  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
