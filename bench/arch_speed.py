"""What a student architecture costs on this CPU before it is trained: ``python -m bench.arch_speed``.

Each candidate is an untrained fused ``rep_student`` (``CxD`` = C channels, D body blocks; ``/F`` = a space-to-depth
factor F, ``unshuffle``), quantised the way ``vsr export --int8`` does (NNCF, int8 at convolution inputs; calibrated
on random frames: the weights and ranges do not change the time), compiled by OpenVINO for one 640x360 luma frame
(uint8 Y in and out, as a stream's planes run it) and timed interleaved with the bundled x2 and x2-camera-fast
int8 IRs in the same run. ``--profile`` adds OpenVINO's per-layer times (``PERF_COUNT``) grouped as head / body /
tail / the rest (pixel shuffle, anchor, rounding, conversions).

Why this exists: on CPUs with AMX an int8 conv's time follows the number of positions more than the channels
(issue 18: x2-camera-fast's ratio to x2 fell from 1.89x on an AVX2 Zen 3 to 1.44x here), so a candidate's FLOPs do
not predict its speed; measure before spending a training run. Writes ``arch-speed-t<threads>-cpu.json`` under
``bench/results`` (or ``VSR_BENCH_RESULTS``). Needs the ``train`` extra (NNCF). Run it with nothing else loading the
CPU (``scripts/quiet.sh``).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import re
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT = ["16x5", "16x3", "16x2", "24x2", "20x3/2", "24x2/2", "16x5/2"]
BUNDLED = ["x2", "x2-camera-fast"]


def parse(spec: str) -> dict[str, int]:
    """``"20x3/2"`` -> rep_student config (luma, x2, fused)."""
    m = re.fullmatch(r"(\d+)x(\d+)(?:/(\d+))?", spec)
    if not m:
        raise ValueError(f"bad candidate {spec!r}: CxD or CxD/F (e.g. 16x5, 20x3/2)")
    c, d, f = int(m[1]), int(m[2]), int(m[3] or 1)
    return {"scale": 2, "channels": c, "depth": d, "colors": 1, "fused": True, "unshuffle": f}


def quantised(config: dict[str, int], rng: np.random.Generator) -> tuple[Any, int]:
    """(int8 OpenVINO graph in float levels, parameters) of an untrained student."""
    import torch

    from training.quantize import quantize_graph
    from vsr.archs.student import RepStudent
    from vsr.ov import levels_model

    torch.manual_seed(0)
    model = RepStudent(**config).eval()
    calib = [(rng.random((1, 1, 96, 160)) * 255).astype(np.float32) for _ in range(4)]
    return quantize_graph(levels_model(model, 1), calib), sum(p.numel() for p in model.parameters())


def compiled(graph: Any, size: tuple[int, int], threads: int, profile: bool) -> Any:
    import openvino as ov

    from vsr.ov import with_uint8_io

    g = with_uint8_io(graph)
    g.reshape({0: [1, size[0], size[1], 1]})
    config = {"INFERENCE_NUM_THREADS": str(threads), "NUM_STREAMS": "1", "PERFORMANCE_HINT": "LATENCY"}
    if profile:
        config["PERF_COUNT"] = "YES"
    return ov.Core().compile_model(g, "CPU", config).create_infer_request()


def layer_groups(request: Any) -> dict[str, float]:
    """ms per group of the last inference: head, body (all blocks), tail, other."""
    out: dict[str, float] = collections.defaultdict(float)
    for p in request.get_profiling_info():
        ms = p.real_time.total_seconds() * 1e3
        name = p.node_name
        group = next(
            (g for g in ("head", "body", "tail") if f"model.{g}" in name and p.node_type == "Convolution"), "other"
        )
        out[group] += ms
    return {k: round(v, 3) for k, v in out.items()}


def run(specs: list[str], *, threads: int, size: tuple[int, int], rounds: int, profile: bool) -> dict[str, Any]:
    from bench.runtimes import cpu_flags
    from vsr.artifact import resolve
    from vsr.ov import INT8_XML, read_int8

    rng = np.random.default_rng(0)
    graphs: dict[str, tuple[Any, int | None]] = {}
    for name in BUNDLED:
        graphs[f"bundled {name}"] = (read_int8(resolve(name) / INT8_XML), None)
    for spec in specs:
        graphs[spec] = quantised(parse(spec), rng)
    reqs = {k: compiled(g, size, threads, profile) for k, (g, _) in graphs.items()}
    frame = rng.integers(0, 256, (1, *size, 1), dtype=np.uint8)
    times: dict[str, list[float]] = {k: [] for k in reqs}
    for r in reqs.values():
        for _ in range(3):
            r.infer({0: frame})
    for _ in range(rounds):  # interleaved: a load change hits every candidate alike
        for k, r in reqs.items():
            t = time.perf_counter()
            r.infer({0: frame})
            times[k].append(time.perf_counter() - t)
    base = statistics.median(times["bundled x2"])
    rows = {}
    for k, v in times.items():
        med = statistics.median(v)
        rows[k] = {"params": graphs[k][1], "ms": round(med * 1e3, 2), "best_ms": round(min(v) * 1e3, 2)}
        rows[k]["x2_over_this"] = round(base / med, 2)
        if profile:
            rows[k]["layers_ms"] = layer_groups(reqs[k])
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.arch_speed " + " ".join(sys.argv[1:]),
        "cpu": cpu_flags(),
        "threads": threads,
        "input": f"{size[1]}x{size[0]} Y, int8, uint8 in/out",
        "rounds": rounds,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
    }


def table(res: dict[str, Any]) -> str:
    lines = [
        "| candidate | params | ms (median) | best ms | x2 / this | layers ms (profile) |",
        "|---|---|---|---|---|---|",
    ]
    for k, r in res["rows"].items():
        params = "" if r["params"] is None else f"{r['params']:,}"
        layers = ", ".join(f"{g} {ms}" for g, ms in r.get("layers_ms", {}).items())
        lines.append(f"| {k} | {params} | {r['ms']} | {r['best_ms']} | {r['x2_over_this']} | {layers} |")
    cpu = res["cpu"]
    lines.append(
        f"\nCPU: {cpu.get('model')} ({', '.join(cpu.get('flags', []))}); {res['threads']} thread(s); {res['input']}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("candidates", nargs="*", default=DEFAULT, help="CxD or CxD/F (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--size", default="640x360", help="LR frame WxH")
    p.add_argument("--rounds", type=int, default=25)
    p.add_argument("--profile", action="store_true")
    args = p.parse_args(argv)
    logging.getLogger("nncf").setLevel(logging.ERROR)  # its notes; a global logging.disable would outlive main()
    try:
        w, h = (int(v) for v in args.size.split("x"))
        for spec in args.candidates:
            parse(spec)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    res = run(args.candidates, threads=args.threads, size=(h, w), rounds=args.rounds, profile=args.profile)
    out = Path(os.environ.get("VSR_BENCH_RESULTS", "bench/results")) / f"arch-speed-t{args.threads}-cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
