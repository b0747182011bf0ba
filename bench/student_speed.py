"""Frame time of two x2 students side by side through the shared engine: ``python -m bench.student_speed A B``.

The issue's rule for a new bundled model: at 640x360 it must be no slower than today's bundled x2, measured in the
same run. Each artifact is loaded into its own :class:`vsr.engine.Engine` (fp32 on this CPU unless ``auto`` measures
bf16 faster), warmed up, then timed alternately (A, B, A, B, ...) so that load changes hit both alike. Run it with nothing
else loading the CPU. Writes ``bench/results/student-speed-cpu.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsr.engine import Engine

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="artifact names or folders (e.g. x2 runs/x2-abl/kd-s0/artifact)")
    p.add_argument("--size", default="640x360", help="LR frame WxH")
    p.add_argument("--repeat", type=int, default=15)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="auto")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    frame = np.random.default_rng(0).integers(0, 256, size=(1, h, w, 3), dtype=np.uint8)
    engines = {m: Engine.open([m], device="cpu", dtype=args.dtype) for m in args.models}
    for e in engines.values():
        e.warmup()
        e.run(e.names[0], frame)
    times: dict[str, list[float]] = {m: [] for m in args.models}
    load_before = os.getloadavg()
    for _ in range(args.repeat):
        for m, e in engines.items():
            t = time.perf_counter()
            e.run(e.names[0], frame)
            times[m].append(time.perf_counter() - t)
    rows: list[dict[str, Any]] = []
    for m, e in engines.items():
        meta = e.models[e.names[0]].meta
        rows.append(
            {
                "model": m,
                "input_space": meta.input_space,
                "parameters": meta.parameters,
                "dtype": e.dtype_name,
                "ms_per_frame": round(statistics.median(times[m]) * 1e3, 2),
            }
        )
    result = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench.student_speed " + " ".join(sys.argv[1:]),
        "size": args.size,
        "threads": args.threads,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "student-speed-cpu.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# x2 students at {args.size} through the engine ({args.threads} threads, median of {args.repeat})",
        "",
        f"Command: `{result['command']}`, {result['created']}; load average before {load_before[0]:.2f}, "
        f"after {result['loadavg_after'][0]:.2f}.",
        "",
        "| model | input | params | dtype | ms/frame |",
        "|---|---|---|---|---|",
        *(
            f"| {r['model']} | {r['input_space']} | {r['parameters']:,} | {r['dtype']} | {r['ms_per_frame']} |"
            for r in rows
        ),
    ]
    (RESULTS / "student-speed-cpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
