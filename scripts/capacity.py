"""Capacity planning table for docs/scale.md, computed from the committed benchmark results (bench/results/*.json).

    python scripts/capacity.py            # print the table
    python scripts/capacity.py --write    # put it into docs/scale.md (between the capacity markers)

What is measured and what is derived is said on every row:
- measured: the stream benchmark's CPU cost per upscaled frame at its source resolution (streams-<device>.json);
  a sustained stream count when the benchmark found one.
- extrapolated: other resolutions, scaled by pixel count (the model is convolutional: work per frame ~ pixels) and,
  where engine-<device>.json has both sizes, by the engine's measured cost ratio between them.
- arithmetic: compute per stream (2 x parameters x input pixels x fps), from the artifact's parameter count; a GPU
  row is only a division by an assumed effective throughput until a GPU benchmark result exists.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"
DOC = REPO / "docs" / "scale.md"
BEGIN, END = "<!-- capacity:begin (scripts/capacity.py --write) -->", "<!-- capacity:end -->"
FPS = 30
RESOLUTIONS = {"360p": (640, 360), "540p": (960, 540), "1080p": (1920, 1080)}


def load(name: str) -> dict[str, Any] | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.is_file() else None


def source_size(streams: dict[str, Any]) -> tuple[int, int]:
    w, h = streams["source"].split(" ", 1)[0].split("x")
    return int(w), int(h)


def engine_ms(engine: dict[str, Any] | None, size: tuple[int, int]) -> float | None:
    """The default model's fastest measured ms per frame at ``size`` in the engine benchmark (any batch)."""
    if engine is None:
        return None
    rows = [r for r in engine.get("rows", []) if r.get("impl") == "x2" and r.get("input") == f"{size[0]}x{size[1]}"]
    return min(r["ms_per_frame"] for r in rows) if rows else None


def cpu_rows(streams: dict[str, Any], engine: dict[str, Any] | None, src: str) -> list[list[str]]:
    """Each resolution from the one before it: by the engine's measured cost ratio where engine-cpu.json has both
    sizes (on this CPU cost grows faster than pixels: activations fall out of cache), else by pixel count."""
    row = max(streams["rows"], key=lambda r: r["streams"])
    prev, ms = source_size(streams), row["cpu_ms_per_output_frame"]["service"]  # the whole service, per frame
    out = []
    for label, size in sorted(RESOLUTIONS.items(), key=lambda kv: kv[1][0] * kv[1][1]):
        if size == prev:
            how = f"measured: {src}, {ms} CPU-ms per upscaled frame ({row['streams']} stream)"
        else:
            e_prev, e_here = engine_ms(engine, prev), engine_ms(engine, size)
            name = f"{prev[0]}x{prev[1]}"
            if e_prev and e_here:
                ratio, why = e_here / e_prev, f"engine-cpu.json's measured cost ratio to {name}"
            else:
                ratio, why = size[0] * size[1] / (prev[0] * prev[1]), f"pixel count vs {name}"
            ms, how = ms * ratio, f"extrapolated: x{ratio:.2f} by {why}"
        per_core = 1000.0 / ms / FPS
        out.append([label, f"{1000.0 / ms:.2f}", f"{per_core:.3f}", f"{1 / per_core:.1f}", how])
        prev = size
    return out


def compute_rows(params: int) -> list[list[str]]:
    out = []
    for label, (w, h) in RESOLUTIONS.items():
        gflops = 2 * params * w * h * FPS / 1e9
        out.append([label, f"{gflops:.0f}", f"{10_000 / gflops:.0f}", f"{50_000 / gflops:.0f}"])
    return out


def table(rows: list[list[str]], head: list[str]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def render() -> str:
    try:
        return _render()
    except (KeyError, ValueError, TypeError) as e:  # a benchmark file in a shape this script does not know
        return f"The benchmark results could not be read for capacity planning ({type(e).__name__}: {e}); see bench/README.md."


def _render() -> str:
    streams, engine = load("streams-cpu.json"), load("engine-cpu.json")
    lines: list[str] = []
    if streams is None or not streams.get("rows"):
        return "No CPU stream benchmark in bench/results/ (run `vsr bench streams`)."
    m = streams["machine"]
    lines += [
        f"CPU: `bench/results/streams-cpu.json` ({streams['command']}, {streams['created']}, commit "
        f"`{streams['git_commit']}`; {m['cpu']}, {m['cpu_threads']} threads, stream model "
        f"{', '.join(streams.get('stream_models') or [streams.get('model', '?')])}), source {streams['source']}. "
        f"Sustained {FPS} fps streams on that machine: {streams['max_sustained_streams']}.",
        "",
    ]
    head = ["camera", "upscaled fps per CPU core", f"{FPS} fps streams per core", "cores per stream", "how"]
    lines += table(cpu_rows(streams, engine, "streams-cpu.json"), head)
    gpu = sorted(p.name for p in RESULTS.glob("streams-cuda*.json"))
    params = streams["model_info"]["parameters"]
    lines += [
        "",
        f"GPU: {'results: ' + ', '.join(gpu) if gpu else 'not measured (no streams-cuda*.json in bench/results/)'}. "
        f"Compute per {FPS} fps stream for the {params:,}-parameter x2 model (2 FLOP per parameter per input pixel; "
        "arithmetic, not a measurement), and what an assumed *effective* throughput would carry:",
        "",
    ]
    head = ["camera", f"GFLOP/s per {FPS} fps stream", "streams at 10 TFLOP/s effective", "at 50 TFLOP/s effective"]
    lines += table(compute_rows(params), head)
    return "\n".join(lines)


def write(doc: Path = DOC) -> None:
    text = doc.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    doc.write_text(text[:start] + "\n" + render() + "\n" + text[end:])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--write", action="store_true", help=f"update {DOC.relative_to(REPO)}")
    args = p.parse_args(argv)
    if args.write:
        write()
    else:
        sys.stdout.write(render() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
