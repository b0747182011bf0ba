"""``vsr bench [kernel engine cli sizes service streams gpu]``: run benchmarks, write JSON under bench/results/, refresh bench/README.md."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

# another folder: the GPU dry run, or the same benchmarks on another CPU (bench/results/NAME/, README there too,
# its targets listed in bench/README.md)
RESULTS = Path(os.environ.get("VSR_BENCH_RESULTS", "bench/results"))


def machine() -> dict[str, Any]:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    from bench.runtimes import cpu_flags  # lscpu's model name and the SIMD flags that decide which precisions are fast

    cpu = cpu_flags()
    if "model" in cpu:
        info["cpu"] = cpu["model"]
    info["cpu_flags"] = cpu.get("flags", [])
    return info


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _write(name: str, payload: dict[str, Any], device: torch.device) -> Path:
    """Write a result with the load average when its part started (``loadavg_start`` in the meta) and now."""
    payload = {**payload, "loadavg": {"start": payload.pop("loadavg_start", None), "end": _loadavg()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{device.type}.json"
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def cmd_bench(args: argparse.Namespace) -> int:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    repeat = 3 if args.quick else 10
    flags = [f for f, on in (("--quick", args.quick), ("--dry-run", getattr(args, "dry_run", False))) if on]
    command = " ".join(["vsr bench", *args.what, *flags])
    meta: dict[str, Any] = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": command,
        "git_commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    realtime_parts = [w for w in ("kernel", "engine", "cli") if w in args.what]
    if realtime_parts:
        meta["loadavg_start"] = _loadavg()
        from bench.realtime import realtime_table, run_realtime

        res = run_realtime(device=device, quick=args.quick, parts=realtime_parts)
        print(realtime_table(res))
        print(_write("realtime", meta | res, device))
    if "runtimes" in args.what:  # torch fp32/bf16 vs OpenVINO f32/bf16/int8 vs OpenCV ESPCN, same frames
        meta["loadavg_start"] = _loadavg()
        from bench.runtimes import run_runtimes, runtimes_table

        res = run_runtimes(quick=args.quick)
        print(runtimes_table(res))
        print(_write("runtimes", meta | res, device))
    if "sizes" in args.what:  # the engine across sizes and batch sizes, x2 and x4, beside bicubic and OpenCV
        meta["loadavg_start"] = _loadavg()
        from bench.engine import engine_table, run_engine

        res = run_engine(["x2", "x4"], batches=[1, 2, 4, 8], repeat=repeat, device=device)
        print(engine_table(res))
        print(_write("engine", meta | res, device))
    if "service" in args.what:
        meta["loadavg_start"] = _loadavg()
        from bench.service import run_service, service_table

        res = run_service(device=device, quick=args.quick)
        print(service_table(res))
        print(_write("service", meta | res, device))
    if "streams" in args.what:
        meta["loadavg_start"] = _loadavg()
        from bench.streams import run_streams, streams_table

        res = run_streams(device=device, quick=args.quick)
        print(streams_table(res))
        print(_write("streams", meta | res, device))
    if "planes" in args.what:  # luma models' stream frames as decoder planes vs RGB, same frames / same cameras
        meta["loadavg_start"] = _loadavg()
        from bench.planes import planes_table, run_planes

        res = run_planes(quick=args.quick)
        print(planes_table(res))
        print(_write("planes", meta | res, device))
    if "gpu" in args.what:
        meta["loadavg_start"] = _loadavg()
        from bench.gpu import gpu_table, run_gpu

        dry = bool(getattr(args, "dry_run", False))
        res = run_gpu(device=torch.device("cpu") if dry else device, dry_run=dry)
        print(gpu_table(res))
        name = "gpu-dryrun" if dry else "gpu"
        print(_write(name, meta | res, torch.device("cpu") if dry else device))
    if getattr(args, "dry_run", False):
        return 0  # a dry run checks the code path; it does not touch bench/README.md
    from bench.report import write_readme

    print(write_readme(RESULTS))
    return 0
