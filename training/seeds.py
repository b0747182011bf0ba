"""Multi-seed KD ablation from a lock-step run, and the bundled-model choice by held-out validation.

    python -m training.seeds --scale 2 --run runs/x2-abl [--install x2]
    python -m training.seeds --scale 2 --run training/runs/x2-ablation training/runs/x2-ablation-s2  # seeds split

Reads the ``kd-s<seed>`` / ``nokd-s<seed>`` artifacts of a ``training.lockstep`` run, evaluates each on Set5/Set14
(reported, never used to choose) and on the run's held-out slice of the training images, and adds to
``bench/results/kd_ablation.json`` (whose existing rows are kept) ``x<scale>.seeds``: Set5 PSNR-Y per seed for each
twin, mean ± std, the KD gain with its standard error. ``--install NAME`` picks the KD seed with the best held-out
PSNR-Y and installs it as the bundled model *only if* it beats the current bundled model on the same held-out slice;
otherwise it says so and leaves the bundled model alone.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any

from training.ablation import RESULTS
from training.config import TrainConfig
from training.evaluate import evaluate_pairs, evaluate_sets, model_upscaler
from training.loop import validation_data
from vsr.artifact import BUNDLED_DIR, META_NAME, ArtifactMeta, load_artifact

TEST_SETS = ("Set5", "Set14")


def stats(xs: list[float]) -> dict[str, float]:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return {"mean": statistics.fmean(xs), "std": sd, "sem": sd / len(xs) ** 0.5, "n": len(xs)}


def score(artifact: str | Path, scale: int, data_root: str, heldout: Any) -> dict[str, Any]:
    model, meta = load_artifact(artifact)
    up = model_upscaler(model, scale)
    sets = evaluate_sets(up, [Path(data_root) / "test" / s for s in TEST_SETS], scale, progress=False)
    held = {"heldout": evaluate_pairs(up, heldout, scale)}
    return {"artifact": str(artifact), "params": meta.parameters, "sets": sets, "heldout": held, "meta": meta}


def same_recipe(runs: list[Path]) -> dict[str, Any]:
    """The first run's config; every other run (seeds split over processes) must have the same recipe but its name."""
    confs = [json.loads((r / "config.json").read_text()) for r in runs]
    strip = [{k: v for k, v in c["base"].items() if k != "name"} | {"variants": c["variants"]} for c in confs]
    if any(x != strip[0] for x in strip[1:]):
        raise SystemExit(f"error: the runs {', '.join(map(str, runs))} have different recipes")
    return dict(confs[0])


def seeds_block(runs: list[Path], scale: int, command: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]], Any]:
    conf = same_recipe(runs)
    base = TrainConfig.from_dict(conf["base"])
    heldout = next(iter(validation_data(base).values()))  # (name, LR, HR) of the held-out slice
    scores = {}
    walls: list[float] = []  # each run's wall time (its students trained together: one figure per run)
    for run in runs:
        names = []
        for d in sorted(run.glob("*-s*/artifact")):
            if d.parent.name in scores:
                raise SystemExit(f"error: {d.parent.name} is in more than one of the runs")
            scores[d.parent.name] = score(d, scale, base.data_root, heldout)
            names.append(d.parent.name)
        walls.append(max((float(scores[n]["meta"].training.get("wall_time_s") or 0) for n in names), default=0.0))
    per: dict[str, list[float]] = {"kd": [], "no_kd": []}
    held: dict[str, list[float]] = {"kd": [], "no_kd": []}
    seeds = sorted({int(k.rsplit("-s", 1)[1]) for k in scores})
    for s in seeds:
        for twin, key in (("kd", f"kd-s{s}"), ("no_kd", f"nokd-s{s}")):
            per[twin].append(scores[key]["sets"]["Set5"]["psnr_y"])
            held[twin].append(scores[key]["heldout"]["heldout"]["psnr_y"])
    gains = [a - b for a, b in zip(per["kd"], per["no_kd"], strict=True)]
    twins = {f"{k}-s{s}" for s in seeds for k in ("kd", "nokd")}
    # other variants that rode along (e.g. an RGB student on the same batches as kd-s0): side by side, held-out first
    others = {
        k: {
            "heldout": v["heldout"]["heldout"],
            "Set5": v["sets"]["Set5"],
            "Set14": v["sets"]["Set14"],
            "params": v["params"],
        }
        for k, v in scores.items()
        if k not in twins
    }
    any_meta: ArtifactMeta = scores[f"kd-s{seeds[0]}"]["meta"]
    block = {
        "seeds": seeds,
        "kd": per["kd"],
        "no_kd": per["no_kd"],
        "metric": "Set5 PSNR-Y (dB), one value per seed",
        "kd_stats": stats(per["kd"]),
        "no_kd_stats": stats(per["no_kd"]),
        "paired_gain": stats(gains),
        "set14": {
            t: [scores[f"{k}-s{s}"]["sets"]["Set14"]["psnr_y"] for s in seeds]
            for t, k in (("kd", "kd"), ("no_kd", "nokd"))
        },
        "heldout": {"kd": held["kd"], "no_kd": held["no_kd"], "images": len(heldout)},
        "other_variants": {"variants": conf.get("variants"), "scores": others},
        "recipe": conf["base"],
        "twins_differ_in": "alpha (KD weight) and, for the KD twin, the teacher-labelled zoom-out samples "
        f"({conf['base'].get('zoomout', 0)} HR images fed to the teacher as LR, {conf['base'].get('zoomout_share', 0)} "
        "of the crop pool); the no-KD twin cannot use those (no ground truth). Same init, schedule and batches per seed.",
        "steps": any_meta.training.get("steps"),
        "wall_time_s_all_models": round(sum(walls), 1),
        "processes": len(runs),
        "run": ", ".join(map(str, runs)),
        "command": command,
    }
    return block, scores, heldout


def install(name: str, scores: dict[str, dict[str, Any]], heldout: Any, scale: int, block: dict[str, Any]) -> str:
    """Install the best KD seed (held-out PSNR-Y) as ``name`` if it beats the bundled one there; returns a verdict."""
    best = max((k for k in scores if k.startswith("kd-")), key=lambda k: scores[k]["heldout"]["heldout"]["psnr_y"])
    new = scores[best]["heldout"]["heldout"]["psnr_y"]
    old_model, old_meta = load_artifact(name)
    old = evaluate_pairs(model_upscaler(old_model, scale), heldout, scale)["psnr_y"]
    verdict = (
        f"best KD seed {best}: held-out {new:.3f} dB vs bundled {name} {old:.3f} dB "
        f"(the bundled model trained on these held-out images, so this favours it)"
    )
    if new <= old:
        return verdict + f" -> NOT installed; bundled {name} kept"
    src, dst = Path(scores[best]["artifact"]), BUNDLED_DIR / name
    meta: ArtifactMeta = scores[best]["meta"]
    meta.name = name
    meta.scores = {
        "test": scores[best]["sets"],
        "heldout": scores[best]["heldout"]["heldout"],
        "chosen_by": f"held-out PSNR-Y among KD seeds {block['seeds']}",
        "ablation": "bench/results/kd_ablation.json",
        "replaced": {"name": old_meta.name, "heldout_psnr_y": old, "test": old_meta.scores.get("test")},
    }
    meta.license = "Apache-2.0 (distilled from RLFN, Apache-2.0)"
    shutil.copy2(src / "model.safetensors", dst / "model.safetensors")
    (dst / META_NAME).write_text(json.dumps(meta.model_dump(), indent=2) + "\n")
    (dst / "MODEL_CARD.md").write_text(card(name, meta, block, best))
    return verdict + f" -> installed as {name}"


def card(name: str, meta: ArtifactMeta, block: dict[str, Any], best: str) -> str:
    tr, cfg = meta.training, meta.training["config"]
    test = meta.scores["test"]
    g, kd, nokd = block["paired_gain"], block["kd_stats"], block["no_kd_stats"]
    space = "luma (Y, BT.601; chroma bilinear)" if meta.input_space == "y" else "RGB"
    return (
        f"""# vsr model `{name}` — x{meta.scale} real-time student ({space})

- Architecture: `{meta.arch}` {json.dumps(meta.config)} — {meta.parameters:,} parameters (re-parameterised blocks
  fused); input space `{meta.input_space}`.
- Recipe: trained by `python -m training.lockstep` (the recipe in each run's `config.json`: {block["run"]}): `L = α·L1(student, HR) + (1−α)·L1(student, teacher)`, α = {cfg["alpha"]}, teacher
  `{", ".join(t["source"] for t in tr.get("teachers", []))}`, {tr["steps"]} steps, batch {cfg["batch"]}, LR patch
  {cfg["patch"]}, lr {cfg["lr"]} (warm-up {cfg["warmup"]}, cosine), EMA {cfg["ema"]}; zoom-out samples: {cfg["zoomout"]}
  HR images fed to the teacher as LR ({cfg["zoomout_share"]} of the crop pool).
- Data: {", ".join(cfg["train_sets"])} less the held-out slice ({block["heldout"]["images"]} images, 1 in
  {cfg["holdout"]} by name hash) used for validation and for choosing this seed ({best}). Set5/Set14 never chose
  anything.
- Seeds: {block["seeds"]} (this one: {best}); {len(block["seeds"]) * 2 + len(block["other_variants"]["scores"])} students trained in lock-step in one process
  on one CPU thread, {tr["wall_time_s"]} s wall time for all of them together.

## Scores (PSNR-Y / SSIM-Y, BT.601, {meta.scale}-pixel border cropped, LR by bicubic downscale)

| set | bicubic | this model |
|---|---|---|
| held-out slice | {meta.scores["heldout"]["bicubic_psnr_y"]:.3f} | {meta.scores["heldout"]["psnr_y"]:.3f} / {meta.scores["heldout"]["ssim_y"]:.4f} |
"""
        + "".join(
            f"| {s} | {test[s]['bicubic_psnr_y']:.3f} | {test[s]['psnr_y']:.3f} / {test[s]['ssim_y']:.4f} |\n"
            for s in TEST_SETS
        )
        + _others(block)
        + f"""
KD ablation over seeds (Set5 PSNR-Y): KD {kd["mean"]:.3f} ± {kd["std"]:.3f}, no KD {nokd["mean"]:.3f} ±
{nokd["std"]:.3f}; paired gain {g["mean"]:+.3f} ± {g["sem"]:.3f} dB (mean ± standard error, n = {g["n"]}).

Produced by: `{block["command"]}`
"""
        + (f"\nNote: {block['note']}\n" if block.get("note") else "")
    )


def _others(block: dict[str, Any]) -> str:
    """Card lines for the variants that trained beside the twins (e.g. the RGB-vs-luma comparison)."""
    others = block.get("other_variants", {}).get("scores", {})
    lines = []
    for k, v in sorted(others.items()):
        seed = int(k.rsplit("-s", 1)[1])
        i = block["seeds"].index(seed)
        lines.append(
            f"- `{k}` ({v['params']:,} params) on the same batches as `kd-s{seed}`: held-out "
            f"{v['heldout']['psnr_y']:.3f} vs {block['heldout']['kd'][i]:.3f} dB, Set5 {v['Set5']['psnr_y']:.3f} vs "
            f"{block['kd'][i]:.3f} dB.\n"
        )
    return ("\nSide-by-side variants (same seed, same batches):\n\n" + "".join(lines)) if lines else ""


ARM_MAY_CHANGE = {"teachers", "teacher_weights"}  # base fields a later arm may change: the teacher's side of KD


def arm_block(run: Path, block: dict[str, Any], scale: int, heldout: Any) -> dict[str, Any]:
    """Another arm of the ablation trained later (a lock-step run of the same base recipe with other variants, e.g.
    KD without the zoom-outs, or the same twins with another teacher: :data:`ARM_MAY_CHANGE`): each student scored like
    the twins, and its paired difference per seed to the KD and the no-KD twin of that seed (same initial weights; a
    seed's batches are drawn alike from the same crop pool, whose crops do not depend on the teacher)."""
    conf = json.loads((run / "config.json").read_text())
    base = {k: v for k, v in conf["base"].items() if k != "name"}
    recipe = {k: v for k, v in block["recipe"].items() if k != "name"}
    differs = {k: base.get(k) for k in base.keys() | recipe.keys() if base.get(k) != recipe.get(k)}
    if set(differs) - ARM_MAY_CHANGE:
        raise SystemExit(f"error: {run} has another base recipe than the ablation ({', '.join(sorted(differs))})")
    out: dict[str, Any] = {}
    for variant, over in conf["variants"].items():
        # an arm with another teacher: its own key (its "kd" is not the ablation's), the teacher recorded
        key = f"{variant} ({run.name})" if differs else variant
        keys = {s: run / f"{variant}-s{s}" / "artifact" for s in block["seeds"]}
        sc = {s: score(d, scale, base["data_root"], heldout) for s, d in keys.items() if d.is_dir()}
        seeds = sorted(sc)
        set5 = [sc[s]["sets"]["Set5"]["psnr_y"] for s in seeds]
        held = [sc[s]["heldout"]["heldout"]["psnr_y"] for s in seeds]
        idx = [block["seeds"].index(s) for s in seeds]
        out[key] = {
            "overrides": over | ({"base": differs} if differs else {}),
            "run": str(run),
            "seeds": seeds,
            "set5": set5,
            "set14": [sc[s]["sets"]["Set14"]["psnr_y"] for s in seeds],
            "heldout": held,
            "set5_minus_kd": stats([a - block["kd"][i] for a, i in zip(set5, idx, strict=True)]),
            "set5_minus_no_kd": stats([a - block["no_kd"][i] for a, i in zip(set5, idx, strict=True)]),
            "heldout_minus_kd": stats([a - block["heldout"]["kd"][i] for a, i in zip(held, idx, strict=True)]),
            "heldout_minus_no_kd": stats([a - block["heldout"]["no_kd"][i] for a, i in zip(held, idx, strict=True)]),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, required=True)
    p.add_argument("--run", required=True, type=Path, nargs="+", help="lock-step run folder(s): seeds may be split")
    p.add_argument("--install", help="bundled model name to replace if the best KD seed beats it on held-out")
    p.add_argument("--note", help="how the run deviated from its recipe (kept in the JSON and on the card)")
    p.add_argument("--arm", type=Path, action="append", default=[], help="a later lock-step run of other variants")
    p.add_argument(
        "--key",
        default="seeds",
        help="where the block goes under x<scale> (seeds: the ablation of record; e.g. seeds_16k for another length)",
    )
    args = p.parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    block, scores, heldout = seeds_block(args.run, args.scale, " ".join(["python -m training.seeds", *argv]))
    if args.note:
        block["note"] = args.note
    for run in args.arm:
        block.setdefault("arms", {}).update(arm_block(run, block, args.scale, heldout))
    if args.install:
        block["install"] = install(args.install, scores, heldout, args.scale, block)
    allres = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    allres.setdefault(f"x{args.scale}", {})[args.key] = block
    RESULTS.write_text(json.dumps(allres, indent=2) + "\n")
    print(json.dumps({k: v for k, v in block.items() if k != "recipe"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
