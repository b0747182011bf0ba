"""Loss and PSNR curves of a run's JSONL log, as a PNG (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path


def plot_curves(metrics: Path, out: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is in the [train] extra; the plot is a convenience
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
    steps = [r["step"] for r in rows if "loss" in r]
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [(r["step"], next(iter(r["eval"].values()))["psnr_y"]) for r in rows if "eval" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(steps, losses, lw=0.8)
    a.set(xlabel="step", ylabel="loss", yscale="log", title="training loss")
    if evals:
        b.plot(*zip(*evals, strict=True), marker="o")
    b.set(xlabel="step", ylabel="PSNR-Y (dB)", title="validation")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
