"""Soak the real service: ``vsr serve`` in a subprocess, images POSTed at a steady rate, live streams with an MJPEG
viewer each, and now and then a video job — while the server process's RSS, threads, open file descriptors and
temporary files, the queue depth and the streams' counters are sampled. Writes the samples and a verdict as JSON
and the RSS curve as a PNG.

    python scripts/soak.py                                   # 10 minutes, 2 streams -> docs/soak.json, docs/soak_rss.png
    python scripts/soak.py --seconds 60 --streams 2 --out /tmp/soak.json --plot /tmp/soak.png

Verdict (the issue's bar): RSS growth after warm-up <= 5 %, threads and fds back to their warm level, no temporary
files left, no frame backlog (queue empty at the end, streams live). The model is a tiny generated artifact unless
``--model`` names one (e.g. ``x2``): the point is the service's own resource behaviour, not the model's speed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `python scripts/soak.py` finds scripts.soak_server
from bench.serve import wait_ready  # noqa: E402  # the same start-up check as the service benchmarks
from scripts.soak_server import start_server  # noqa: E402


@dataclass
class SoakConfig:
    seconds: float = 600.0
    streams: int = 2
    image_rps: float = 5.0
    video_every_s: float = 60.0  # a short video job this often (0 = never)
    sample_every_s: float = 2.0
    warmup_frac: float = 0.25  # samples before this fraction of the run are the warm-up (include one video job)
    stream_size: tuple[int, int] = (160, 90)
    stream_fps: int = 15
    model: str | None = None  # an artifact name/path; None = a tiny generated one
    dtype: str = "auto"
    max_rss_growth: float = 0.05
    # decode -> frame emitted, p99 per stream. Frames older than stream_max_frame_age_s (1 s) are dropped, not
    # queued, so a backlog cannot grow; this bound catches a pipeline stuck at that cap.
    max_latency_p99_s: float = 1.5
    extra_env: dict[str, str] = field(default_factory=dict)


# ---- fixtures the soak needs -----------------------------------------------------------------------------------


def png_bytes(h: int = 48, w: int = 64) -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# ---- process sampling (Linux /proc) ----------------------------------------------------------------------------


def proc_sample(pid: int, tmp: Path) -> dict[str, Any]:
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    return {
        "rss_bytes": rss,
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "temp_files": sum(1 for p in tmp.rglob("*") if p.is_file()),
    }


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


# ---- load ------------------------------------------------------------------------------------------------------


class Load:
    """Image posts at a fixed rate, one MJPEG viewer per stream, a video job now and then; counts outcomes."""

    def __init__(self, base: str, cfg: SoakConfig, video: Path) -> None:
        self.base, self.cfg, self.video = base, cfg, video
        self.stop = threading.Event()
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def count(self, key: str) -> None:
        with self.lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def start(self, stream_ids: list[str]) -> None:
        targets: list[Any] = [self.images]
        targets += [lambda sid=sid: self.viewer(sid) for sid in stream_ids]
        if self.cfg.video_every_s > 0:
            targets.append(self.videos)
        for t in targets:
            th = threading.Thread(target=t, daemon=True)
            th.start()
            self.threads.append(th)

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def images(self) -> None:
        body = png_bytes()
        period = 1.0 / self.cfg.image_rps
        with httpx.Client(base_url=self.base, timeout=30) as c:
            nxt = time.monotonic()
            while not self.stop.is_set():
                try:
                    r = c.post("/upscale", content=body, headers={"content-type": "image/png"})
                    self.count(f"image_{r.status_code}")
                except httpx.HTTPError as e:
                    self.count(f"image_{type(e).__name__}")
                nxt += period
                self.stop.wait(max(0.0, nxt - time.monotonic()))

    def viewer(self, sid: str) -> None:
        while not self.stop.is_set():
            try:
                with httpx.stream("GET", f"{self.base}/stream/{sid}/mjpeg", timeout=10) as r:
                    for chunk in r.iter_bytes():
                        if b"Content-Type: image/jpeg" in chunk:
                            self.count("mjpeg_frames")
                        if self.stop.is_set():
                            return
            except httpx.HTTPError:
                self.count("mjpeg_reconnects")
                self.stop.wait(0.5)

    def videos(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as c:
            while not self.stop.wait(self.cfg.video_every_s):
                try:
                    r = c.post("/upscale/video", content=self.video.read_bytes(), headers={"content-type": "video/mp4"})
                    if r.status_code != 202:
                        self.count(f"video_{r.status_code}")
                        continue
                    job = r.json()["id"]
                    while not self.stop.is_set():
                        state = c.get(f"/jobs/{job}").json()["state"]
                        if state in ("done", "failed", "cancelled"):
                            break
                        time.sleep(0.2)
                    self.count(f"video_{state}")
                    if state == "done":
                        c.get(f"/jobs/{job}/result")
                    c.delete(f"/jobs/{job}")
                except httpx.HTTPError as e:
                    self.count(f"video_{type(e).__name__}")


# ---- the run ---------------------------------------------------------------------------------------------------


def run_soak(cfg: SoakConfig, workdir: Path) -> dict[str, Any]:
    """Run the soak; returns ``{"config", "samples", "load", "verdict"}``."""
    server = start_server(
        workdir, cfg.model, cfg.dtype, (cfg.stream_size, cfg.stream_fps, cfg.streams, "soak"), 1.0, cfg.extra_env
    )
    proc, base, tmp, job_clip = server.proc, server.base, server.tmp, server.job_clip
    samples: list[dict[str, Any]] = []
    load: Load | None = None
    try:
        wait_ready(base, proc)
        client = httpx.Client(base_url=base, timeout=10)
        ids = [s["id"] for s in client.get("/stream").json()["streams"]]
        load = Load(base, cfg, job_clip)
        load.start(ids)
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < cfg.seconds:
            s = {"t": round(t, 2), **proc_sample(proc.pid, tmp)}
            text = client.get("/metrics").text
            s["queue_depth"] = metric(text, "vsr_queue_depth")
            s["frames_total"] = metric(text, "vsr_frames_total")
            info = client.get("/stream").json()["streams"]
            s["streams_live"] = sum(1 for i in info if i["state"] == "live")
            s["stream_frames_out"] = sum(i["frames_out"] for i in info)
            p99 = [i["latency_seconds"]["p99"] for i in info if i["latency_seconds"]["p99"] is not None]
            s["stream_latency_p99_s"] = max(p99) if p99 else None
            samples.append(s)
            time.sleep(max(0.0, cfg.sample_every_s - (time.monotonic() - t0 - t)))
        load.finish()
        time.sleep(1.0)  # in-flight work settles
        end = {"t": round(time.monotonic() - t0, 2), **proc_sample(proc.pid, tmp), "after_load": True}
        end["queue_depth"] = metric(client.get("/metrics").text, "vsr_queue_depth")
        end["streams_live"] = sum(1 for i in client.get("/stream").json()["streams"] if i["state"] == "live")
        samples.append(end)
        client.close()
    finally:
        if load is not None:
            load.finish()
        code = server.stop()
    leftover = sum(1 for p in tmp.rglob("*"))
    result = {
        "config": {**cfg.__dict__, "stream_size": list(cfg.stream_size), "model": cfg.model or "tiny generated x2"},
        "samples": samples,
        "load": dict(sorted((load.counts if load else {}).items())),
        "exit_code": code,
        "temp_entries_after_exit": leftover,
    }
    result["verdict"] = verdict(result, cfg)
    return result


def verdict(result: dict[str, Any], cfg: SoakConfig) -> dict[str, Any]:
    samples = [s for s in result["samples"] if not s.get("after_load")]
    end = result["samples"][-1]
    warm = [s for s in samples if s["t"] >= cfg.seconds * cfg.warmup_frac]
    k = max(3, len(warm) // 5)
    first, last = warm[:k], warm[-k:]
    rss0 = statistics.median(s["rss_bytes"] for s in first)
    rss1 = statistics.median(s["rss_bytes"] for s in last)
    thr0 = statistics.median(s["threads"] for s in first)
    fds0 = statistics.median(s["fds"] for s in first)
    v = {
        "rss_warm_bytes": int(rss0),
        "rss_end_bytes": int(rss1),
        "rss_growth": round(rss1 / rss0 - 1, 4),
        "threads_warm": thr0,
        "threads_max": max(s["threads"] for s in warm),
        "threads_after_load": end["threads"],
        "fds_warm": fds0,
        "fds_max": max(s["fds"] for s in warm),
        "fds_after_load": end["fds"],
        "threads_end": statistics.median(s["threads"] for s in last),
        "fds_end": statistics.median(s["fds"] for s in last),
        "temp_files_max": max(s["temp_files"] for s in samples),
        "temp_files_after_load": end["temp_files"],
        "queue_depth_max": max(s["queue_depth"] for s in samples),
        "queue_depth_after_load": end["queue_depth"],
        "streams_live_min_after_warmup": min(s["streams_live"] for s in warm),
        "stream_latency_p99_max_s": max((s["stream_latency_p99_s"] or 0.0) for s in warm),
    }
    # Leaks show as a trend, not as the short-lived worker threads / sockets of a video job: compare the medians of
    # the first and last fifth after warm-up, and the state once the clients stopped.
    v["checks"] = {
        "rss_growth": v["rss_growth"] <= cfg.max_rss_growth,
        "threads": v["threads_end"] <= thr0 + 2 and v["threads_after_load"] <= thr0 + 4,
        "fds": v["fds_end"] <= fds0 + 4 and v["fds_after_load"] <= fds0 + 4,
        "temp_files": v["temp_files_after_load"] == 0 and result["temp_entries_after_exit"] == 0,
        # only the live streams' own frames (at most stream_max_pending = 2 each) may be queued at the end
        "backlog": v["queue_depth_after_load"] <= 2 * cfg.streams
        and v["stream_latency_p99_max_s"] <= cfg.max_latency_p99_s,
        "streams_live": v["streams_live_min_after_warmup"] == cfg.streams,
        "clean_exit": result["exit_code"] == 0,
    }
    v["ok"] = all(v["checks"].values())
    return v


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = [x for x in result["samples"] if not x.get("after_load")]
    t = [x["t"] for x in s]
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=110)
    ax.plot(t, [x["rss_bytes"] / 2**20 for x in s], label="RSS (MiB)", color="tab:blue")
    ax.axvline(result["config"]["seconds"] * result["config"]["warmup_frac"], color="grey", ls=":", label="warm-up end")
    ax.set_xlabel("seconds")
    ax.set_ylabel("RSS (MiB)")
    ax2 = ax.twinx()
    ax2.plot(t, [x["threads"] for x in s], color="tab:orange", label="threads", lw=1)
    ax2.plot(t, [x["fds"] for x in s], color="tab:green", label="open fds", lw=1)
    ax2.set_ylabel("threads / fds")
    v, c = result["verdict"], result["config"]
    ax.set_title(
        f"vsr soak: {c['seconds']:.0f} s, {c['streams']} streams + {c['image_rps']} img/s; "
        f"RSS growth after warm-up {100 * v['rss_growth']:+.1f}%",
        fontsize=9,
    )
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=600.0)
    p.add_argument("--streams", type=int, default=2)
    p.add_argument("--image-rps", type=float, default=5.0)
    p.add_argument("--video-every", type=float, default=60.0, help="seconds between video jobs (0 = none)")
    p.add_argument("--sample-every", type=float, default=2.0)
    p.add_argument("--stream-size", default="160x90", help="WxH of the synthetic camera clips")
    p.add_argument("--model", default=None, help="artifact name or path (default: a tiny generated x2)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "soak.json")
    p.add_argument("--plot", type=Path, default=REPO / "docs" / "soak_rss.png")
    a = p.parse_args(argv)
    w, h = (int(x) for x in a.stream_size.split("x"))
    cfg = SoakConfig(
        seconds=a.seconds,
        streams=a.streams,
        image_rps=a.image_rps,
        video_every_s=a.video_every,
        sample_every_s=a.sample_every,
        stream_size=(w, h),
        model=a.model,
        dtype=a.dtype,
    )
    with tempfile.TemporaryDirectory(prefix="vsr-soak-") as d:
        result = run_soak(cfg, Path(d))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    plot(result, a.plot)
    print(json.dumps({"verdict": result["verdict"], "load": result["load"]}, indent=1))  # noqa: T201
    return 0 if result["verdict"]["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
