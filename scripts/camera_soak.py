"""Camera soak (and past-capacity check): ``vsr serve`` in a subprocess with N looping cameras, image uploads, a
health probe and now and then a video job, for a given time; every few seconds the server's RSS, threads and open
fds, each stream's output fps and p99 latency, and the inference worker's load (busy, overloaded, shares) are
sampled. Writes the samples, a summary and a verdict as JSON, and a plot (PNG with matplotlib, else SVG).

    python scripts/camera_soak.py                       # the target run: 30 min, 3 cameras -> docs/camera_soak.json
    python scripts/camera_soak.py --seconds 60 --cameras 2 --label smoke --out docs/camera_soak_smoke.json
    # past capacity (the fairness check): four 640x360 30 fps cameras on the camera model
    python scripts/camera_soak.py --seconds 30 --cameras 4 --stream-size 640x360 --fps 30 --model x2-camera \\
        --video-every 0 --label fairness-smoke --out docs/fairness_smoke.json

Cameras are file sources (``file://``, played at their frame rate and looped, like a camera that never stops).
Verdict (issue 22): RSS growth after warm-up <= 5 %, threads and fds flat, every camera live; the fairness summary
reports the slowest/fastest stream fps ratio (target >= 0.7), each stream's p99 latency (<= 1 s), health p99
(<= 100 ms) and the slowest upload answer (200, or 503 with Retry-After, in <= 10 s).
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.serve import wait_ready  # noqa: E402
from scripts.soak import Load, SoakConfig, png_bytes, proc_sample  # noqa: E402
from scripts.soak_server import start_server  # noqa: E402


@dataclass
class CameraSoakConfig:
    seconds: float = 1800.0
    cameras: int = 3
    stream_size: tuple[int, int] = (320, 180)
    fps: int = 15
    image_rps: float = 2.0
    video_every_s: float = 120.0  # a short video job this often (0 = never)
    sample_every_s: float = 5.0
    warmup_frac: float = 0.2
    model: str | None = None  # an artifact name/path; None = a tiny generated one (resource behaviour, not speed)
    dtype: str = "auto"
    label: str = "target"  # "smoke" for a short proof-of-running, never to be read as the target run


class Probes:
    """Uploads (status + answer time) and a health probe (answer time) beside the cameras."""

    def __init__(self, base: str, image_rps: float) -> None:
        self.base, self.period = base, 1.0 / image_rps if image_rps > 0 else 0.0
        self.stop = threading.Event()
        self.uploads: list[tuple[float, int, bool]] = []  # (seconds, status, retry-after present)
        self.health: list[float] = []
        self.threads = [threading.Thread(target=self._health, daemon=True)]
        if self.period:
            self.threads.append(threading.Thread(target=self._uploads, daemon=True))

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _uploads(self) -> None:
        body = png_bytes()
        with httpx.Client(base_url=self.base, timeout=30) as c:
            while not self.stop.wait(self.period):
                t = time.monotonic()
                try:
                    r = c.post("/upscale", content=body, headers={"content-type": "image/png"})
                    self.uploads.append((time.monotonic() - t, r.status_code, "retry-after" in r.headers))
                except httpx.HTTPError:
                    self.uploads.append((time.monotonic() - t, 0, False))

    def _health(self) -> None:
        with httpx.Client(base_url=self.base, timeout=10) as c:
            while not self.stop.wait(0.25):
                t = time.monotonic()
                try:
                    ok = c.get("/v2/health/ready").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.health.append(time.monotonic() - t if ok else float("inf"))


def sample(client: httpx.Client, pid: int, tmp: Path, t: float, last: dict[str, tuple[float, int]]) -> dict[str, Any]:
    """One sample: process resources, each stream's fps since the last sample and p99, the worker's load."""
    body = client.get("/stream").json()
    now = time.monotonic()
    streams = {}
    for s in body["streams"]:
        t0, n0 = last.get(s["name"], (now, s["frames_out"]))
        fps = (s["frames_out"] - n0) / (now - t0) if now > t0 else None
        last[s["name"]] = (now, s["frames_out"])
        streams[s["name"]] = {
            "state": s["state"],
            "fps": None if fps is None else round(fps, 2),
            "latency_p99_s": s["latency_seconds"]["p99"],
            "worker_share": s.get("worker_share"),
            "dropped": sum(s["dropped"].values()),
        }
    return {"t": round(t, 2), **proc_sample(pid, tmp), "streams": streams, "worker": body.get("worker")}


def run(cfg: CameraSoakConfig, workdir: Path) -> dict[str, Any]:
    server = start_server(workdir, cfg.model, cfg.dtype, (cfg.stream_size, cfg.fps, cfg.cameras, "cam"), 2.0)
    proc, base, tmp, job_clip = server.proc, server.base, server.tmp, server.job_clip
    samples: list[dict[str, Any]] = []
    sample_errors: list[dict[str, Any]] = []
    probes = Probes(base, cfg.image_rps)
    videos = Load(base, SoakConfig(video_every_s=cfg.video_every_s), job_clip)  # its video-job loop only
    try:
        wait_ready(base, proc)
        # no keep-alive: a sample every few seconds would race uvicorn's 5 s idle timeout (a reset now and then that
        # says nothing about the service); with a fresh connection each time, a failed sample is the server's fault
        client = httpx.Client(base_url=base, timeout=10, limits=httpx.Limits(max_keepalive_connections=0))
        probes.start()
        if cfg.video_every_s > 0:
            videos.threads.append(threading.Thread(target=videos.videos, daemon=True))
            videos.threads[-1].start()
        last: dict[str, tuple[float, int]] = {}
        t0 = time.monotonic()
        while (t := time.monotonic() - t0) < cfg.seconds:
            try:
                samples.append(sample(client, proc.pid, tmp, t, last))
            except httpx.HTTPError as e:
                # counted (a check fails on any); a dead server ends the run, its log tail goes into the JSON
                sample_errors.append({"t": round(t, 2), "error": f"{type(e).__name__}: {e}"})
                if proc.poll() is not None:
                    break
            time.sleep(max(0.0, cfg.sample_every_s - (time.monotonic() - t0 - t)))
        client.close()
    finally:
        probes.finish()
        videos.finish()
        code = server.stop()
    log_tail = (workdir / "server.log").read_text(errors="replace").splitlines()[-40:]
    result: dict[str, Any] = {
        "config": {**asdict(cfg), "model": cfg.model or "tiny generated x2"},
        "machine": machine(),
        "samples": samples,
        "videos": dict(sorted(videos.counts.items())),
        "exit_code": code,
        "sample_errors": sample_errors,
        "server_log_tail": log_tail if code not in (0, None) or sample_errors else [],
    }
    result["summary"] = summarize(result, cfg, probes)
    return result


def p99(xs: list[float]) -> float | None:
    return round(sorted(xs)[min(len(xs) - 1, int(0.99 * len(xs)))], 4) if xs else None


def summarize(result: dict[str, Any], cfg: CameraSoakConfig, probes: Probes) -> dict[str, Any]:
    warm = [s for s in result["samples"] if s["t"] >= cfg.seconds * cfg.warmup_frac] or result["samples"]
    k = max(1, len(warm) // 5)
    rss0 = statistics.median(s["rss_bytes"] for s in warm[:k])
    rss1 = statistics.median(s["rss_bytes"] for s in warm[-k:])
    names = sorted({n for s in warm for n in s["streams"]})
    fps = {n: statistics.mean(s["streams"][n]["fps"] or 0.0 for s in warm if n in s["streams"]) for n in names}
    lat = {n: max((s["streams"][n]["latency_p99_s"] or 0.0) for s in warm if n in s["streams"]) for n in names}
    uploads = probes.uploads
    statuses = sorted({st for _, st, _ in uploads})
    summary = {
        "rss_warm_bytes": int(rss0),
        "rss_end_bytes": int(rss1),
        "rss_growth": round(rss1 / rss0 - 1, 4),
        # leaks show as a trend, not as a video job's short-lived codec threads: medians of the first and last fifth
        "threads": [
            statistics.median(s["threads"] for s in warm[:k]),
            statistics.median(s["threads"] for s in warm[-k:]),
        ],
        "fds": [statistics.median(s["fds"] for s in warm[:k]), statistics.median(s["fds"] for s in warm[-k:])],
        "stream_fps": {n: round(v, 2) for n, v in fps.items()},
        "slowest_to_fastest_fps": round(min(fps.values()) / max(fps.values()), 3)
        if fps and max(fps.values())
        else None,
        "stream_latency_p99_max_s": lat,
        "overloaded_fraction": round(sum(bool((s["worker"] or {}).get("overloaded")) for s in warm) / len(warm), 3),
        "health_p99_s": p99(probes.health),
        "uploads": {
            "count": len(uploads),
            "statuses": statuses,
            "max_s": round(max((d for d, *_ in uploads), default=0), 3),
        },
        "uploads_503_without_retry_after": sum(1 for _, st, ra in uploads if st == 503 and not ra),
    }
    summary["checks"] = {
        "rss_growth_le_5pct": summary["rss_growth"] <= 0.05,
        "threads_flat": summary["threads"][1] - summary["threads"][0] <= 2,
        "fds_flat": summary["fds"][1] - summary["fds"][0] <= 4,
        "cameras_live": all(s["state"] == "live" for x in warm for s in x["streams"].values()),
        "fair_fps_ratio_ge_0.7": (summary["slowest_to_fastest_fps"] or 0) >= 0.7,
        "stream_p99_le_1s": all(v <= 1.0 for v in lat.values()),
        "health_p99_le_100ms": (summary["health_p99_s"] or float("inf")) <= 0.1,
        "uploads_answered_le_10s": summary["uploads"]["max_s"] <= 10
        and set(statuses) <= {200, 503}
        and summary["uploads_503_without_retry_after"] == 0,
        "clean_exit": result["exit_code"] == 0,
        "every_sample_answered": not result["sample_errors"],
    }
    return summary


def machine() -> dict[str, Any]:
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("model name")), "?")  # fmt: skip
    return {"cpu": model, "cores": os.cpu_count(), "loadavg_at_end": os.getloadavg()}


# ---- the plot: PNG with matplotlib, else a small hand-written SVG ----------------------------------------------


def series(result: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    out: dict[str, list[tuple[float, float]]] = {"RSS (MiB)": [], "threads": [], "open fds": []}
    for s in result["samples"]:
        out["RSS (MiB)"].append((s["t"], s["rss_bytes"] / 2**20))
        out["threads"].append((s["t"], s["threads"]))
        out["open fds"].append((s["t"], s["fds"]))
        for n, st in s["streams"].items():
            if st["fps"] is not None:
                out.setdefault(f"{n} fps", []).append((s["t"], st["fps"]))
            if st["latency_p99_s"] is not None:
                out.setdefault(f"{n} p99 ms", []).append((s["t"], 1000 * st["latency_p99_s"]))
    return out


def title(result: dict[str, Any]) -> str:
    c, s = result["config"], result["summary"]
    return (
        f"vsr camera soak [{c['label']}]: {c['seconds']:.0f} s, {c['cameras']} cameras "
        f"{c['stream_size'][0]}x{c['stream_size'][1]}@{c['fps']}; RSS growth {100 * s['rss_growth']:+.1f}%"
    )


def plot(result: dict[str, Any], path: Path) -> Path:
    data = series(result)
    panels = [("resources", ["RSS (MiB)", "threads", "open fds"]), ("fps", [k for k in data if k.endswith(" fps")])]
    panels.append(("p99 latency (ms)", [k for k in data if k.endswith(" p99 ms")]))
    try:
        import matplotlib
    except ImportError:
        return svg(data, panels, title(result), path.with_suffix(".svg"))
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 7), dpi=100, sharex=True)
    for ax, (name, keys) in zip(axes, panels, strict=True):
        for k in keys:
            ax.plot([t for t, _ in data[k]], [v for _, v in data[k]], label=k, lw=1)
        ax.set_ylabel(name, fontsize=8)
        ax.legend(fontsize=7, loc="upper right")
    axes[0].set_title(title(result), fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def svg(data: dict[str, list[tuple[float, float]]], panels: list[tuple[str, list[str]]], head: str, path: Path) -> Path:
    w, ph, colors = 800, 200, ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{30 + ph * len(panels)}" font-size="10">']
    parts.append(f'<text x="10" y="18">{head}</text>')
    tmax = max((t for v in data.values() for t, _ in v), default=1.0) or 1.0
    for i, (name, keys) in enumerate(panels):
        y0 = 30 + i * ph
        vmax = max((v for k in keys for _, v in data[k]), default=1.0) or 1.0
        parts.append(f'<text x="10" y="{y0 + 12}">{name} (max {vmax:.1f})</text>')
        for j, k in enumerate(keys):
            pts = " ".join(
                f"{50 + (w - 60) * t / tmax:.1f},{y0 + ph - 20 - (ph - 40) * v / vmax:.1f}" for t, v in data[k]
            )
            parts.append(f'<polyline fill="none" stroke="{colors[j % 6]}" points="{pts}"><title>{k}</title></polyline>')
    path.write_text("\n".join([*parts, "</svg>"]))
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=1800.0)
    p.add_argument("--cameras", type=int, default=3)
    p.add_argument("--stream-size", default="320x180", help="WxH of the synthetic camera clip")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--image-rps", type=float, default=2.0)
    p.add_argument("--video-every", type=float, default=120.0, help="seconds between video jobs (0 = none)")
    p.add_argument("--sample-every", type=float, default=5.0)
    p.add_argument("--warmup-frac", type=float, default=0.2, help="the first part of the run left out of the summary")
    p.add_argument("--model", default=None, help="artifact name or path (default: a tiny generated x2)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--label", default="target", help='"smoke" for a short run that only proves the script works')
    p.add_argument("--out", type=Path, default=REPO / "docs" / "camera_soak.json")
    a = p.parse_args(argv)
    w, h = (int(x) for x in a.stream_size.split("x"))
    cfg = CameraSoakConfig(a.seconds, a.cameras, (w, h), a.fps, a.image_rps, a.video_every, a.sample_every)
    cfg.model, cfg.dtype, cfg.label, cfg.warmup_frac = a.model, a.dtype, a.label, a.warmup_frac
    with tempfile.TemporaryDirectory(prefix="vsr-camera-soak-") as d:
        result = run(cfg, Path(d))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1))
    figure = plot(result, a.out.with_suffix(".png"))
    print(json.dumps({"summary": result["summary"], "plot": str(figure)}, indent=1))  # noqa: T201
    return 0 if all(result["summary"]["checks"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
