"""bench/README.md is rendered from the committed results: the report must read every result file's schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import load, render

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"


def test_report_renders_every_committed_result() -> None:
    results = load(RESULTS)
    if not results:
        pytest.skip("no benchmark results committed yet")
    text = render(results)
    targets = text.split("## Targets", 1)[1].split("\n## ", 1)[0]
    for name, res in results.items():
        if name == "kd_ablation":
            assert "## Knowledge distillation ablation" in text
            continue
        kind = name.split("-", 1)[0]
        if kind not in ("realtime", "engine", "service", "streams", "gpu"):
            continue  # another report's results (e.g. train-speed, rendered next to its JSON)
        if kind != "engine":  # the engine-across-sizes table has no target of its own
            assert f"({name})" in targets, f"{name} has no line in the targets table"
        assert "## " in text and f"({name})" in text and f"`{res['command']}`" in text
