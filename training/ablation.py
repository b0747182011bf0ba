"""KD ablation: bicubic, teacher, student without KD and student with KD, side by side on the test sets.

    python -m training.ablation --scale 2 --teacher ../shared/teachers/RLFN_x2.pth \
        --nokd runs/x2-nokd/artifact --kd runs/x2-kd/artifact --install x2

writes ``bench/results/kd_ablation.json`` (merged per scale), and with ``--install NAME`` copies the KD student to the
bundled ``vsr/models/NAME/`` with the scores in its metadata and a model card beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
from pathlib import Path
from typing import Any

from training.evaluate import evaluate_sets, model_upscaler
from training.teachers import load_teacher
from vsr.archs import count_parameters
from vsr.artifact import BUNDLED_DIR, META_NAME, ArtifactMeta, load_artifact

RESULTS = Path("bench/results/kd_ablation.json")


def _row(name: str, res: dict[str, Any], params: int | None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"model": name, "params": params, "sets": res, **(extra or {})}


def run(args: argparse.Namespace) -> dict[str, Any]:
    sets = [Path(args.data_root) / "test" / s for s in ("Set5", "Set14")]
    teacher, tdesc = load_teacher(args.teacher)
    rows: dict[str, Any] = {}
    t_res = evaluate_sets(model_upscaler(teacher, args.scale), sets, args.scale)
    rows["bicubic"] = _row(
        "bicubic", {k: {"psnr_y": v["bicubic_psnr_y"], "ssim_y": v["bicubic_ssim_y"]} for k, v in t_res.items()}, 0
    )
    rows["teacher"] = _row(Path(args.teacher).name, t_res, count_parameters(teacher), {"arch": tdesc["arch"]})
    for key, path in (("student_no_kd", args.nokd), ("student_kd", args.kd)):
        model, meta = load_artifact(path)
        res = evaluate_sets(model_upscaler(model, args.scale), sets, args.scale)
        tr = meta.training
        rows[key] = _row(
            meta.name,
            res,
            meta.parameters,
            {
                "steps": tr.get("steps"),
                "wall_time_s": tr.get("wall_time_s"),
                "machine": tr.get("machine"),
                "alpha": tr.get("config", {}).get("alpha"),
                "artifact": str(path),
            },
        )
    gains = {
        s: rows["student_kd"]["sets"][s]["psnr_y"] - rows["student_no_kd"]["sets"][s]["psnr_y"]
        for s in rows["teacher"]["sets"]
    }
    return {
        "scale": args.scale,
        "rows": rows,
        "kd_gain_psnr_y": gains,
        "command": " ".join(["python -m training.ablation", *sys.argv[1:]]),
        "machine": platform.platform(),
    }


def table(result: dict[str, Any]) -> str:
    sets = list(result["rows"]["teacher"]["sets"])
    head = "| model | params | " + " | ".join(f"{s} PSNR-Y / SSIM-Y" for s in sets) + " |"
    lines = [head, "|---|---|" + "---|" * len(sets)]
    labels = {
        "bicubic": "bicubic",
        "teacher": "teacher",
        "student_no_kd": "student, no KD (α=1)",
        "student_kd": "student, KD",
    }
    for key, label in labels.items():
        r = result["rows"][key]
        cells = " | ".join(f"{r['sets'][s]['psnr_y']:.3f} / {r['sets'][s]['ssim_y']:.4f}" for s in sets)
        lines.append(f"| {label} ({r['model']}) | {r['params'] or '-'} | {cells} |")
    gains = ", ".join(f"{s} {g:+.3f} dB" for s, g in result["kd_gain_psnr_y"].items())
    return "\n".join(lines) + f"\n\nKD gain over the no-KD twin (PSNR-Y): {gains}.\n"


def install(result: dict[str, Any], name: str, note: str | None = None) -> Path:
    """Copy the KD student into the bundled models with scores and a model card."""
    src = Path(result["rows"]["student_kd"]["artifact"])
    dst = BUNDLED_DIR / name
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "model.safetensors", dst / "model.safetensors")
    meta = ArtifactMeta.model_validate_json((src / META_NAME).read_text())
    meta.name = name
    meta.scores = {"test": result["rows"]["student_kd"]["sets"], "ablation": "bench/results/kd_ablation.json"}
    meta.license = "Apache-2.0 (distilled from RLFN, Apache-2.0)"
    (dst / META_NAME).write_text(json.dumps(meta.model_dump(), indent=2) + "\n")
    tr = meta.training
    card = f"""# vsr model `{name}` — x{meta.scale} real-time student

- Architecture: `{meta.arch}` {json.dumps(meta.config)} — {meta.parameters:,} parameters (re-parameterised blocks fused).
- Distilled from `{", ".join(t["source"] for t in tr.get("teachers", []))}` with
  `L = α·L1(student, HR) + (1−α)·L1(student, teacher)`, α = {tr["config"]["alpha"]}, {tr["steps"]} steps,
  batch {tr["config"]["batch"]}, LR patch {tr["config"]["patch"]}, on {", ".join(tr["config"]["train_sets"])}.
- Trained on `{tr.get("machine")}` ({tr.get("device")}) in {tr.get("wall_time_s")} s.
- Recipe: `training/recipes/{name}_kd.json` (twin without KD: `{name}_nokd.json`), run by
  `training/recipes/train_default_models.sh`.
- Input: RGB uint8 frames of any size; output `scale`× larger. Bicubic-degraded training data: on heavily compressed
  or noisy camera footage retrain with degradations (see README).

## Evaluation (PSNR-Y / SSIM-Y, BT.601, {meta.scale}-pixel border cropped, LR by bicubic downscale)

{table(result)}
Produced by: `{result["command"]}`
"""
    (dst / "MODEL_CARD.md").write_text(card)
    return dst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--teacher", required=True)
    p.add_argument("--nokd", required=True)
    p.add_argument("--kd", required=True)
    p.add_argument("--data-root", default="../shared/datasets")
    p.add_argument("--install", help="bundled model name to install the KD student as (e.g. x2)")
    p.add_argument("--note", help="a sentence appended to the model card (e.g. how the run deviated from its recipe)")
    args = p.parse_args(argv)
    result = run(args)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    allres = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    allres[f"x{args.scale}"] = result
    RESULTS.write_text(json.dumps(allres, indent=2) + "\n")
    print(table(result))
    if args.install:
        print(f"installed {install(result, args.install, args.note)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
