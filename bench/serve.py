"""What the service and stream benchmarks share: the real service in a subprocess, /metrics parsing, CPU accounting.

The service runs as ``vsr serve`` in its own process, exactly as a user starts it (default settings unless the caller
passes ``VSR_*`` overrides), so its CPU time can be read from ``/proc`` apart from the load generator's.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request would drown the results


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, proc: subprocess.Popen[Any], timeout: float = 120.0) -> None:
    """Poll ``GET /v2/health/ready`` of a ``vsr serve`` process until 200; RuntimeError if it exits or times out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"vsr serve exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"vsr serve was not ready within {timeout} s")


@dataclass
class ServiceProcess:
    """``vsr serve`` on a free loopback port. ``env`` adds ``VSR_*`` settings on top of the inherited environment."""

    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 120.0) -> ServiceProcess:
        cmd = [
            sys.executable,
            "-m",
            "vsr_cli",
            "--log-level",
            "WARNING",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=os.environ | self.env, stdout=subprocess.DEVNULL)
        try:
            wait_ready(self.base, self.proc, timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def scrape(base: str) -> dict[str, float]:
    """``/metrics`` as {sample name: value summed over label sets} (enough for totals, sums and counts)."""
    out: dict[str, float] = {}
    for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        try:
            out[name] = out.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
        except ValueError:
            continue
    return out


def delta(after: dict[str, float], before: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


class CpuMeter:
    """CPU seconds of named processes (threads included) and of the whole machine over a window."""

    def __init__(self, pids: dict[str, Iterable[int]]) -> None:
        self.procs = {k: [psutil.Process(p) for p in v] for k, v in pids.items()}
        self.procs["bench client"] = [psutil.Process()]
        self._start: dict[str, float] = {}
        self._t0 = 0.0
        self._machine0: Any = None

    def _cpu(self) -> dict[str, float]:
        res = {}
        for k, procs in self.procs.items():
            total = 0.0
            for p in procs:
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            res[k] = total
        return res

    def start(self) -> None:
        self._start, self._t0, self._machine0 = self._cpu(), time.monotonic(), psutil.cpu_times()

    def stop(self) -> dict[str, Any]:
        """Cores busy on average per process group (1.0 = one core), the machine's total and what else ran."""
        wall = time.monotonic() - self._t0
        now, m1 = self._cpu(), psutil.cpu_times()
        m0 = self._machine0
        busy = sum(getattr(m1, f) - getattr(m0, f) for f in ("user", "nice", "system", "irq", "softirq", "steal"))
        groups = {k: round((now[k] - self._start[k]) / wall, 3) for k in now}
        total = round(busy / wall, 3)
        return {
            "wall_s": round(wall, 2),
            "cores": psutil.cpu_count(),
            "cores_busy": groups,
            "machine_cores_busy": total,
            "other_cores_busy": round(max(total - sum(groups.values()), 0.0), 3),
            "steal_cores": round((m1.steal - m0.steal) / wall, 3),  # taken by the VM's host: a noisy neighbour
        }


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]
