"""What ``scripts/attack.py`` measures around each attack: the server's memory (``/proc``), its health latency
(a prober thread), its metrics, and waits for readiness / the end of its work."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Prober(threading.Thread):
    """GET /v2/health/ready every 20 ms on its own keep-alive connection; latencies in seconds."""

    def __init__(self, base: str) -> None:
        super().__init__(daemon=True)
        self.base, self.stop, self.lat = base, threading.Event(), []  # type: list[float]
        self.failures = 0

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=5) as c:
            while not self.stop.is_set():
                t = time.monotonic()
                try:
                    ok = c.get("/v2/health/ready").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.lat.append(time.monotonic() - t)
                self.failures += not ok
                self.stop.wait(0.02)

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.lat) or [0.0]
        pick = lambda q: round(lat[min(len(lat) - 1, int(len(lat) * q))], 4)  # noqa: E731
        return {"n": len(self.lat), "p50_s": pick(0.5), "p99_s": pick(0.99), "max_s": round(lat[-1], 4),
                "failures": self.failures}  # fmt: skip


def wait_job(c: httpx.Client, job_id: str, timeout: float = 300) -> dict[str, Any]:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        j = c.get(f"/jobs/{job_id}").json()
        if j["state"] in ("done", "failed", "cancelled"):
            return {"state": j["state"], "error": j["error"], "frames_done": j["frames_done"]}
        time.sleep(0.2)
    return {"state": "timeout"}


def metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    return next((float(x.split()[-1]) for x in text.splitlines() if x.startswith(name + " ")), 0.0)


def settle(base: str, timeout: float = 60.0) -> None:
    """Wait until the inference queue is empty and no batch ran for 2 s: RSS "after" is then the resident size
    once the attack's work is over, not while its last frames still run."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        batches = metric(base, "vsr_batch_compute_seconds_count")
        time.sleep(2.0)
        if metric(base, "vsr_queue_depth") == 0 and metric(base, "vsr_batch_compute_seconds_count") == batches:
            return


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"vsr serve exited with {proc.returncode}")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("vsr serve did not become ready")
