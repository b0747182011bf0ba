"""Training-loop speed, before and after, side by side in one run: ``python -m bench.train_speed``.

"Before" is the loop of a git ref (default ``e8f4216``, the first session's loop), extracted with ``git archive`` into
a temporary folder; "after" is this tree. Each variant runs in its own subprocess (its own torch threads, its own
imports) with the same recipe: the bundled x2's (RepStudent channels 24, depth 5, expand 1; batch 32, LR patch 32,
no KD so no teacher cost), over T91 + BSD200. Steps/s counts whole steps (batch sampling included) after a warm-up.
Run it with nothing else loading the CPU; the load average is recorded.

Writes ``bench/results/train-speed-<device>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
RECIPE: dict[str, Any] = {
    "scale": 2,
    "arch_config": {"channels": 24, "depth": 5, "expand": 1},
    "batch": 32,
    "patch": 32,
    "alpha": 1.0,
    "teachers": [],
    "ema": 0.999,
    "device": "cpu",
    "data_root": str(REPO.parent / "shared" / "datasets"),  # absolute: the 'before' worker runs in its own folder
}
# (label, tree, threads, overrides): the "after" variants switch one feature off at a time.
VARIANTS: list[tuple[str, str, int, dict[str, Any]]] = [
    ("before", "before", 1, {"amp": "off"}),
    ("before", "before", 2, {"amp": "off"}),
    ("after", "after", 1, {"amp": "off"}),
    ("after", "after", 2, {"amp": "off"}),
    ("after, branches not folded", "after", 1, {"amp": "off", "fold": False}),
    ("after, no channels-last", "after", 1, {"amp": "off", "channels_last": False}),
    ("after, bf16 autocast", "after", 1, {"amp": "bf16"}),
]


def worker(overrides: dict[str, Any], steps: int, warmup: int, threads: int) -> dict[str, Any]:
    """Time ``steps`` training steps of whichever ``training`` package is first on the path."""
    import numpy as np
    import torch

    from training import loop
    from training.config import TrainConfig

    torch.set_num_threads(threads)
    known = {f.name for f in fields(TrainConfig)}
    cfg_d = {k: v for k, v in (RECIPE | overrides).items() if k in known}
    if "fold" in overrides:
        cfg_d["arch_config"] = {**cfg_d["arch_config"], "fold": overrides["fold"]}
    cfg = TrainConfig(**cfg_d)
    device = torch.device("cpu")
    t0 = time.perf_counter()
    source = loop.prepare_data(cfg, device, [], [], [])
    prep_s = time.perf_counter() - t0
    state = loop.build_state(cfg, device, None)
    for _ in range(warmup):
        loop.train_step(state, cfg, source, device, None)
    t0 = time.perf_counter()
    for _ in range(steps):
        loop.train_step(state, cfg, source, device, None)
    wall = time.perf_counter() - t0
    # the data part alone: the old per-sample sampler vs the pool's gather
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(20):
        if hasattr(source, "batch"):
            source.batch(cfg.batch, rng)
        else:
            from training.data import sample_batch

            sample_batch(source, scale=cfg.scale, batch=cfg.batch, patch=cfg.patch, rng=rng)
    data_ms = (time.perf_counter() - t0) / 20 * 1e3
    import training

    return {
        "training_from": str(Path(training.__file__).parent.parent),
        "steps": steps,
        "wall_s": round(wall, 3),
        "steps_per_s": round(steps / wall, 3),
        "ms_per_step": round(wall / steps * 1e3, 2),
        "data_ms_per_batch": round(data_ms, 2),
        "prepare_s": round(prep_s, 1),
        "threads": torch.get_num_threads(),
        "amp": str(getattr(state, "amp", None) or overrides.get("amp")),
    }


def extract(ref: str, dest: Path) -> Path:
    """``git archive`` the ``vsr`` and ``training`` packages of ``ref`` into ``dest``."""
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "vsr", "training"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def run_variant(tree: Path, overrides: dict[str, Any], steps: int, warmup: int, threads: int) -> dict[str, Any]:
    # cwd = the tree: ``python -m`` puts the cwd first on sys.path, so ``training``/``vsr`` come from that tree
    # (``bench`` itself from REPO, which the 'before' tree lacks).
    env = os.environ | {"PYTHONPATH": f"{tree}{os.pathsep}{REPO}", "OMP_NUM_THREADS": str(threads)}
    spec = json.dumps({"overrides": overrides, "steps": steps, "warmup": warmup, "threads": threads})
    out = subprocess.run(
        [sys.executable, "-m", "bench.train_speed", "--worker", spec],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(result: dict[str, Any]) -> str:
    lines = [
        "| variant | threads | steps/s | ms/step | data ms/batch | × before (same threads) |",
        "|---|---|---|---|---|---|",
    ]
    base = {r["threads"]: r["steps_per_s"] for r in result["rows"] if r["label"] == "before"}
    for r in result["rows"]:
        ratio = r["steps_per_s"] / base[r["threads"]] if r["threads"] in base else float("nan")
        lines.append(
            f"| {r['label']} | {r['threads']} | {r['steps_per_s']:.2f} | {r['ms_per_step']:.1f} | "
            f"{r['data_ms_per_batch']:.2f} | {ratio:.2f}× |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", default="e8f4216", help="git ref of the 'before' loop")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(worker(spec["overrides"], spec["steps"], spec["warmup"], spec["threads"])))
        return 0
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": extract(args.before, Path(tmp)), "after": REPO}
        for label, tree, threads, overrides in VARIANTS:
            r = run_variant(trees[tree], overrides, args.steps, args.warmup, threads)
            rows.append({"label": label, "tree": args.before if tree == "before" else "this tree", **r})
            print(f"{label} threads={threads}: {r['steps_per_s']:.2f} steps/s", file=sys.stderr)
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    result = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.train_speed " + " ".join(sys.argv[1:]),
        "git_commit": commit.stdout.strip(),
        "before_ref": args.before,
        "recipe": RECIPE,
        "machine": {"platform": platform.platform(), "cpu": _cpu(), "cores": os.cpu_count()},
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "train-speed-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    md = (
        f"# Training-loop speed (x2 recipe, batch {RECIPE['batch']}, LR patch {RECIPE['patch']})\n\n"
        f"Command: `{result['command']}` at commit `{result['git_commit']}`, {result['created']}; "
        f"'before' = `{args.before}`. Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores; "
        f"load average before {load_before[0]:.2f}, after {result['loadavg_after'][0]:.2f}.\n\n" + table(result) + "\n"
    )
    (RESULTS / "train-speed-cpu.md").write_text(md)
    print(md)
    return 0


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
