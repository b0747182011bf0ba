"""Stream benchmark: how many concurrent 640x360 30 fps RTSP streams the default model sustains on this machine.

For N = 1, 2, 3, ... the real service (``vsr serve`` subprocess, default settings, loopback allow-listed) is given N
streams, each from its own gst-rtsp-server process (``tests/rtsp_server.py``: videotestsrc -> x264 ultrafast
zerolatency; one server per stream, since clients of one shared server get frames in lockstep). After a warm-up,
every stream's counters (``GET /stream/{id}``) are read at both ends of a fixed window. N is *sustained* when every
stream decodes >= 95 % of the nominal 30 fps, emits >= 95 % of what it decoded, and its p99 latency (decode ->
JPEG emitted) stays under ``LATENCY_BOUND_S``. The run stops at the first N that is not sustained.

Everything shares the same CPU: the RTSP servers' x264 encoding, the service's decode, RGB conversion, model and
JPEG encoding, and this process. The CPU each used over the window is reported (``/proc`` via psutil), and the
pipeline's per-frame edge costs (H.264 decode + RGB, JPEG encode of the output) are timed on their own.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import httpx
import numpy as np
import torch
from PIL import Image

from bench.serve import REPO, CpuMeter, ServiceProcess, delta, scrape

WIDTH, HEIGHT, FPS = 640, 360, 30
SUSTAIN_RATIO = 0.95
LATENCY_BOUND_S = 0.5


@dataclass(frozen=True)
class Plan:
    warmup_s: float
    window_s: float
    max_streams: int
    live_timeout_s: float = 30.0


def plan(quick: bool) -> Plan:
    return (
        Plan(warmup_s=2.0, window_s=4.0, max_streams=1) if quick else Plan(warmup_s=5.0, window_s=15.0, max_streams=2)
    )


def _rtsp() -> Any:
    """The tests' RTSP server helpers (``tests/`` is not an installed package: import it from the checkout)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.support import rtsp

    return rtsp


def run_streams(*, device: torch.device, quick: bool) -> dict[str, Any]:
    ok, why = _rtsp().rtsp_server_available()
    if not ok:
        return {"device": str(device), "skipped": why, "rows": [], "max_sustained_streams": None}
    p = plan(quick)
    env = {"VSR_STREAM_ALLOW_CIDRS": "127.0.0.0/8", "VSR_MAX_STREAMS": str(p.max_streams)}
    rows: list[dict[str, Any]] = []
    with ServiceProcess(env=env) as svc:
        model = httpx.get(f"{svc.base}/v2/models", timeout=10).json()["models"][0]  # the first is the default
        for n in range(1, p.max_streams + 1):
            row = run_n(svc, n, p)
            rows.append(row)
            print(_row_line(row), flush=True)
            if not row["sustained"]:
                break
    sustained = [r["streams"] for r in rows if r["sustained"]]
    return {
        "device": str(device),
        "default_model": model.get("name"),  # the service's first model; each stream's own is in its row
        "stream_models": sorted({s["model"] for r in rows for s in r["per_stream"] if s.get("model")}),
        "model_info": {k: model.get(k) for k in ("arch", "scale", "parameters", "dtype", "device")},
        "source": f"{WIDTH}x{HEIGHT} @ {FPS} fps, videotestsrc smpte -> x264 ultrafast zerolatency, RTSP/TCP loopback",
        "criteria": {
            "input_fps_min": round(SUSTAIN_RATIO * FPS, 2),
            "output_over_input_min": SUSTAIN_RATIO,
            "latency_p99_max_s": LATENCY_BOUND_S,
        },
        "window_s": p.window_s,
        "rows": rows,
        "max_sustained_streams": max(sustained) if sustained else 0,
        "edges": edge_costs(),
    }


def run_n(svc: ServiceProcess, n: int, p: Plan) -> dict[str, Any]:
    servers = [_rtsp().RtspServer(width=WIDTH, height=HEIGHT, fps=FPS) for _ in range(n)]
    ids: list[str] = []
    viewers: list[MjpegViewer] = []
    client = httpx.Client(base_url=svc.base, timeout=10)
    try:
        for srv in servers:
            srv.start()
        for i, srv in enumerate(servers):
            r = client.post("/stream", json={"url": srv.url, "name": f"bench-{n}-{i}"})
            r.raise_for_status()
            ids.append(r.json()["id"])
        live = _wait_live(client, ids, p.live_timeout_s)
        viewers += [MjpegViewer(svc.base, sid) for sid in ids]  # JPEG is only encoded while someone watches
        for v in viewers:
            v.start()
        time.sleep(p.warmup_s)
        meter = CpuMeter({"service": [svc.pid], "rtsp servers": [s.proc.pid for s in servers if s.proc]})
        m0 = scrape(svc.base)
        s0, t0 = _snapshot(client, ids)
        meter.start()
        time.sleep(p.window_s)
        cpu = meter.stop()
        s1, t1 = _snapshot(client, ids)
        m1 = scrape(svc.base)
        costs = _model_costs(client)
        viewer_fps = [round(v.frames_between(t0, t1) / (t1 - t0), 2) for v in viewers]
    finally:
        for v in viewers:
            v.stop()
        for sid in ids:
            client.delete(f"/stream/{sid}")
        client.close()
        for srv in servers:
            srv.stop()
    row = _summarize(n, live, s0, s1, m0, m1, t1 - t0, cpu)
    row["viewer_fps"] = viewer_fps  # JPEG frames an MJPEG viewer received per second, per stream
    row["model_ms_per_megapixel"] = costs  # what the stream model choice budgeted with at the window's end
    return row


def _model_costs(client: httpx.Client) -> dict[str, float | None]:
    names = [m["name"] for m in client.get("/v2/models").json()["models"]]
    return {n: client.get(f"/v2/models/{n}").json().get("ms_per_megapixel") for n in names}


class MjpegViewer:
    """A viewer of ``/stream/{id}/mjpeg`` in a thread: records when each JPEG part arrives."""

    def __init__(self, base: str, stream_id: str) -> None:
        self.url = f"{base}/stream/{stream_id}/mjpeg"
        self.arrivals: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"viewer:{stream_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def frames_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in list(self.arrivals) if t0 <= t <= t1)

    def _run(self) -> None:
        with contextlib.suppress(httpx.HTTPError), httpx.stream("GET", self.url, timeout=10) as r:
            for chunk in r.iter_bytes():
                # every part starts with its headers: count them as they arrive
                self.arrivals.extend([time.monotonic()] * chunk.count(b"Content-Type: image/jpeg"))
                if self._stop.is_set():
                    return


def _snapshot(client: httpx.Client, ids: list[str]) -> tuple[list[dict[str, Any]], float]:
    """Every stream's info and the moment it was read (the middle of the reads)."""
    t = time.monotonic()
    infos = [client.get(f"/stream/{sid}").json() for sid in ids]
    return infos, (t + time.monotonic()) / 2


def _wait_live(client: httpx.Client, ids: list[str], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        infos = [client.get(f"/stream/{sid}").json() for sid in ids]
        if all(i["state"] == "live" and i["frames_out"] > 0 for i in infos):
            return True
        time.sleep(0.2)
    return False


def _summarize(
    n: int,
    live: bool,
    s0: list[dict[str, Any]],
    s1: list[dict[str, Any]],
    m0: dict[str, float],
    m1: dict[str, float],
    wall: float,
    cpu: dict[str, Any],
) -> dict[str, Any]:
    streams = []
    for a, b in zip(s0, s1, strict=True):
        fin = (b["frames_in"] - a["frames_in"]) / wall
        fout = (b["frames_out"] - a["frames_out"]) / wall
        drops = {k: v - a["dropped"].get(k, 0) for k, v in b["dropped"].items() if v - a["dropped"].get(k, 0)}
        lat = b["latency_seconds"]
        streams.append(
            {
                "name": b["name"],
                "state": b["state"],
                "model": b.get("model"),  # what the stream ran (``auto`` picks per stream, not the default model)
                "model_choice": b.get("model_choice"),
                "input_fps": round(fin, 2),
                "output_fps": round(fout, 2),
                "out_over_in": round(fout / fin, 3) if fin else 0.0,
                "dropped": drops,
                "reconnects": b["reconnects"] - a["reconnects"],
                "latency_p50_s": lat["p50"],
                "latency_p99_s": lat["p99"],
            }
        )
    batches = delta(m1, m0, "vsr_batch_size_count")
    frames = delta(m1, m0, "vsr_batch_size_sum")
    compute = delta(m1, m0, "vsr_batch_compute_seconds_sum")
    sustained = live and all(
        s["state"] == "live"
        and s["input_fps"] >= SUSTAIN_RATIO * FPS
        and s["out_over_in"] >= SUSTAIN_RATIO
        and s["latency_p99_s"] is not None
        and s["latency_p99_s"] <= LATENCY_BOUND_S
        for s in streams
    )
    out_total = sum(s["output_fps"] for s in streams)
    return {
        "streams": n,
        "sustained": sustained,
        "all_live": live,
        "input_fps_min": min(s["input_fps"] for s in streams),
        "output_fps_total": round(out_total, 2),
        "out_over_in_min": min(s["out_over_in"] for s in streams),
        "latency_p50_s_max": _max(s["latency_p50_s"] for s in streams),
        "latency_p99_s_max": _max(s["latency_p99_s"] for s in streams),
        "avg_batch": round(frames / batches, 2) if batches else None,
        "worker_busy": round(compute / wall, 3),
        "model_ms_per_frame": round(1000 * compute / frames, 2) if frames else None,
        "cpu": cpu,
        "cpu_ms_per_output_frame": {
            k: round(1000 * v / out_total, 1) if out_total else None for k, v in cpu["cores_busy"].items()
        },
        "per_stream": streams,
    }


def _max(values: Any) -> float | None:
    vs = [v for v in values if v is not None]
    return max(vs) if vs else None


def _row_line(r: dict[str, Any]) -> str:
    return (
        f"streams={r['streams']} sustained={r['sustained']} in>={r['input_fps_min']} out/in>={r['out_over_in_min']} "
        f"p99<={r['latency_p99_s_max']} batch={r['avg_batch']} busy={r['worker_busy']}"
    )


def edge_costs(frames: int = 60) -> dict[str, float]:
    """ms per frame, one thread, of the pipeline's edges at this size: H.264 decode + RGB conversion of a source
    frame (what the reader and pump do) and the JPEG encode of a 2x output frame (what every emitted frame costs)."""
    import av

    buf = io.BytesIO()
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    with av.open(buf, "w", format="mp4") as out:
        s = out.add_stream("libx264", rate=Fraction(FPS))
        s.width, s.height, s.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        s.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(FPS)}
        for i in range(frames):
            rgb = np.stack([(xx + 4 * i) % 256, (yy + 2 * i) % 256, (xx // 2 + yy // 2 + i) % 256], -1)
            for pkt in s.encode(av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")):
                out.mux(pkt)
        for pkt in s.encode():
            out.mux(pkt)
    t = time.perf_counter()
    buf.seek(0)
    with av.open(buf) as inp:
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    decode_ms = 1000 * (time.perf_counter() - t) / len(decoded)
    big = np.asarray(Image.fromarray(decoded[-1]).resize((2 * WIDTH, 2 * HEIGHT), Image.Resampling.BICUBIC))
    t = time.perf_counter()
    for _ in range(20):
        Image.fromarray(big).save(io.BytesIO(), "JPEG", quality=80)
    jpeg_ms = 1000 * (time.perf_counter() - t) / 20
    return {"h264_decode_rgb_ms": round(decode_ms, 2), "jpeg_encode_2x_ms": round(jpeg_ms, 2)}


def streams_table(res: dict[str, Any]) -> str:
    if res.get("skipped"):
        return f"streams benchmark skipped: {res['skipped']}"
    lines = [
        "| streams | sustained | min input fps | total output fps | min out/in | max p50 latency s | max p99 latency s "
        "| avg batch | worker busy | cores busy (service / RTSP servers / other) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        c = r["cpu"]["cores_busy"]
        cores = f"{c['service']:.2f} / {c['rtsp servers']:.2f} / {r['cpu']['other_cores_busy']:.2f}"
        lines.append(
            f"| {r['streams']} | {'yes' if r['sustained'] else 'no'} | {r['input_fps_min']} | {r['output_fps_total']} "
            f"| {r['out_over_in_min']:.0%} | {r['latency_p50_s_max']} | {r['latency_p99_s_max']} | {r['avg_batch']} "
            f"| {r['worker_busy']:.0%} | {cores} |"
        )
    return "\n".join(lines)
