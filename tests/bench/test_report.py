"""bench/README.md is rendered from the committed results: the report must read every result file's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.report import load, render, write_readme

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


def test_other_cpu_folder_gets_its_own_readme_and_a_targets_table_in_the_main_one(tmp_path: Path) -> None:
    # the same benchmarks on another CPU (VSR_BENCH_RESULTS=bench/results/NAME): its README in its folder, its
    # targets in the main README under that CPU's name, and the main folder's own sections unchanged
    results = load(RESULTS)
    if "streams-cpu" not in results:
        pytest.skip("no streams result committed yet")
    main, other = tmp_path / "results", tmp_path / "results" / "xeon"
    other.mkdir(parents=True)
    for name in ("realtime-cpu", "streams-cpu"):
        (main / f"{name}.json").write_text((RESULTS / f"{name}.json").read_text())
    streams = results["streams-cpu"] | {"machine": {"cpu": "Some Other CPU", "cpu_flags": ["avx512_vnni", "amx_int8"]}}
    streams["rows"] = streams["rows"][:1]  # one camera only: the two-camera row must not come from the main folder
    (other / "streams-cpu.json").write_text(json.dumps(streams))
    text = write_readme(main, tmp_path / "README.md").read_text()
    section = text.split("## Targets on another CPU: Some Other CPU (`bench/results/xeon/`)", 1)[1]
    assert "avx512_vnni amx_int8" in section
    assert "one 640x360 30 fps RTSP camera" in section and "two such cameras" not in section
    assert "CLI file to file" in section and "not measured" in section  # no realtime result in that folder
    assert "Some Other CPU" not in text.split("## Targets on another CPU", 1)[0]
    own = write_readme(other).read_text()
    assert (other / "README.md").exists() and "Targets on another CPU" not in own and "Some Other CPU" in own
