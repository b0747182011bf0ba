"""A luma model's stream frames as decoder planes vs RGB (``vsr/planes.py``), side by side in one run.

- ``pipeline``: the per-frame work of a stream for each bundled luma model, in memory on the same 640x360 frames
  (yuv420p, as a decoder hands them out): the frame to the model's input, the model (the runtime the engine
  measures and picks), the output to a JPEG (q80) — once the RGB way (``to_ndarray("rgb24")``, the RGB graph with
  its colour work, Pillow's JPEG) and once the planes way (the planes, the bare Y graph, the source chroma
  upscaled, libjpeg-turbo's raw-planes JPEG). Median ms per stage over the frames, after an untimed pass.
- ``live``: the real service (``vsr serve``, a fresh one per row) with one luma model pinned (``VSR_STREAM_MODEL``),
  N 640x360 30 fps RTSP cameras (each its own gst-rtsp-server process) watched by MJPEG viewers,
  ``VSR_STREAM_PLANES`` false then true: frames/s at the viewers, p99 latency and the service's CPU ms per output
  frame (``bench/streams.py``'s window and criteria).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import av
import torch

from bench.realtime import bench_frames
from bench.serve import ServiceProcess
from bench.streams import Plan, run_n

LUMA_MODELS = ("x2-camera-fast", "x2-camera-lite", "x2")
LIVE_MODEL = "x2-camera-fast"
QUALITY = 80


def _timed(fn: Callable[[], Any], sink: list[float]) -> Any:
    t = time.perf_counter()
    out = fn()
    sink.append(1000 * (time.perf_counter() - t))
    return out


def pipeline(model: str, frames: list[av.VideoFrame]) -> dict[str, Any]:
    """ms per frame of each stage, both ways, on the same frames (median over them, after an untimed pass)."""
    from service.streams.output import encode_jpeg
    from vsr.engine import Engine
    from vsr.planes import Planes, from_video_frame

    engine = Engine.open([model], device="cpu")
    runner = engine.runner(model)
    stages: dict[str, dict[str, list[float]]] = {
        "rgb": {"input": [], "model": [], "output": [], "jpeg": []},
        "planes": {"input": [], "model": [], "output": [], "jpeg": []},
    }
    for timed in (False, True):
        for f in frames:
            s = stages["rgb"] if timed else {k: [] for k in stages["rgb"]}
            rgb = _timed(lambda f=f: f.to_ndarray(format="rgb24"), s["input"])
            out = _timed(lambda rgb=rgb: runner(rgb[None])[0], s["model"])
            s["output"].append(0.0)  # the model's RGB output is the frame
            _timed(lambda out=out: encode_jpeg(out, QUALITY), s["jpeg"])
            s = stages["planes"] if timed else {k: [] for k in stages["planes"]}
            p = _timed(lambda f=f: from_video_frame(f), s["input"])
            assert isinstance(p, Planes), p
            y = _timed(lambda p=p: runner(p.y[None, :, :, None])[0], s["model"])
            o = _timed(lambda p=p, y=y: p.upscaled(y), s["output"])
            _timed(lambda o=o: encode_jpeg(o, QUALITY), s["jpeg"])
    res: dict[str, Any] = {"runtime": f"{runner.info.runtime}/{runner.info.precision}"}
    for way, parts in stages.items():
        med = {k: round(statistics.median(v), 2) for k, v in parts.items()}
        res[way] = med | {"total": round(sum(med.values()), 2)}
    res["planes_over_rgb"] = round(res["planes"]["total"] / res["rgb"]["total"], 3)
    return res


def _yuv_frames(n: int) -> list[av.VideoFrame]:
    """``n`` 640x360 frames as a decoder hands them out (yuv420p, BT.601 limited range)."""
    return [av.VideoFrame.from_ndarray(f, format="rgb24").reformat(format="yuv420p") for f in bench_frames(n)]


def live(streams: list[int], plan: Plan) -> list[dict[str, Any]]:
    from bench.streams import _rtsp

    ok, why = _rtsp().rtsp_server_available()
    if not ok:
        return [{"skipped": why}]
    rows = []
    for n in streams:
        for planes in (False, True):
            env = {
                "VSR_STREAM_ALLOW_CIDRS": "127.0.0.0/8",
                "VSR_MAX_STREAMS": str(n),
                "VSR_MODELS": LIVE_MODEL,
                "VSR_STREAM_MODEL": LIVE_MODEL,
                "VSR_STREAM_PLANES": "true" if planes else "false",
            }
            # a fresh service for every row: 3 cameras on a service that had just run 2 measured 22.8 fps each,
            # against 29.3 on a fresh one (same code, same machine); the reason is not known
            with ServiceProcess(env=env) as svc:
                row = run_n(svc, n, plan)
            row["planes"] = planes
            rows.append(row)
            print(_live_line(row), flush=True)
    return rows


def run_planes(*, quick: bool) -> dict[str, Any]:
    frames = _yuv_frames(6 if quick else 30)
    threads = torch.get_num_threads()
    res: dict[str, Any] = {
        "frame": "640x360 yuv420p (Set5/Set14 crops), x2 -> 1280x720, JPEG q80",
        "threads": threads,
        "pipeline": {m: pipeline(m, frames) for m in LUMA_MODELS},
    }
    for m, r in res["pipeline"].items():
        print(f"{m} ({r['runtime']}): rgb {r['rgb']['total']} ms, planes {r['planes']['total']} ms", flush=True)
    plan = (
        Plan(warmup_s=2.0, window_s=4.0, max_streams=1) if quick else Plan(warmup_s=5.0, window_s=15.0, max_streams=3)
    )
    res["live_model"] = LIVE_MODEL
    res["live"] = live(list(range(2, plan.max_streams + 1)) if not quick else [1], plan)
    return res


def _live_line(r: dict[str, Any]) -> str:
    cpu = r.get("cpu_ms_per_output_frame", {}).get("service")
    return (
        f"planes={r['planes']} streams={r['streams']} sustained={r['sustained']} viewer fps={r.get('viewer_fps')} "
        f"p99<={r['latency_p99_s_max']} service cpu ms/frame={cpu}"
    )


def planes_table(res: dict[str, Any]) -> str:
    lines = [
        "| model (runtime) | way | input ms | model ms | output ms | JPEG ms | total ms | planes / RGB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m, r in res.get("pipeline", {}).items():
        for way in ("rgb", "planes"):
            s = r[way]
            ratio = f"**{r['planes_over_rgb']}**" if way == "planes" else ""
            lines.append(
                f"| {m} ({r['runtime']}) | {way} | {s['input']} | {s['model']} | {s['output']} | {s['jpeg']} "
                f"| {s['total']} | {ratio} |"
            )
    lines += [
        "",
        f"Live, `{res.get('live_model')}` pinned, 640x360 30 fps RTSP cameras to MJPEG viewers:",
        "",
        "| frames | cameras | sustained | viewer fps (each) | max p99 latency s | service CPU ms per output frame |",
        "|---|---|---|---|---|---|",
    ]
    for r in res.get("live", []):
        if "skipped" in r:
            lines.append(f"| skipped: {r['skipped']} | | | | | |")
            continue
        cpu = r.get("cpu_ms_per_output_frame", {}).get("service")
        way = "planes" if r["planes"] else "RGB"
        lines.append(
            f"| {way} | {r['streams']} | {r['sustained']} | {', '.join(map(str, r.get('viewer_fps', [])))} "
            f"| {r['latency_p99_s_max']} | {cpu} |"
        )
    return "\n".join(lines)
