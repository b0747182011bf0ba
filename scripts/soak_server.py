"""The soak scripts' system under test: a real ``vsr serve`` subprocess with looping synthetic file cameras, started
and stopped the same way by ``scripts/soak.py`` and ``scripts/camera_soak.py``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from bench.serve import free_port

REPO = Path(__file__).resolve().parents[1]


def tiny_artifact(folder: Path) -> Path:
    import torch

    from training.export import export_artifact
    from vsr.archs.student import RepStudent

    torch.manual_seed(0)
    model = RepStudent(scale=2, channels=8, depth=1, expand=0)
    return export_artifact(model, out_dir=folder / "x2", name="x2", arch="rep_student", training={}, data={}, scores={})


def synthetic_video(path: Path, width: int, height: int, fps: int, seconds: float) -> Path:
    import av

    yy, xx = np.mgrid[0:height, 0:width]
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        s.options = {"preset": "ultrafast", "g": str(fps)}
        for i in range(int(fps * seconds)):
            rgb = np.stack([(xx + 3 * i) % 256, (yy + 2 * i) % 256, (xx + yy + i) % 256], -1).astype(np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


@dataclass
class Server:
    """A real ``vsr serve`` subprocess with looping file cameras (the soak scripts' system under test)."""

    proc: subprocess.Popen[bytes]
    base: str
    tmp: Path  # its TMPDIR: what it leaves there after exit is counted
    job_clip: Path  # a short clip for video jobs
    log: Any

    def stop(self) -> int:
        """SIGTERM, as an orchestrator would; its exit code (killed after 60 s)."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(10)
        self.log.close()
        return code


def start_server(
    workdir: Path,
    model: str | None,
    dtype: str,
    cameras: tuple[tuple[int, int], int, int, str],
    job_seconds: float,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """Start ``vsr serve`` with ``cameras`` = ((w, h), fps, count, name prefix) looping synthetic file cameras and
    ``model`` (default: a tiny generated x2); returns at once (wait with ``bench.serve.wait_ready``)."""
    tmp = workdir / "server-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    model = model or str(tiny_artifact(workdir / "artifacts"))
    (w, h), fps, count, prefix = cameras
    clip = synthetic_video(workdir / "camera.mp4", w, h, fps, 4.0)
    job_clip = synthetic_video(workdir / "job.mp4", 64, 48, 12, job_seconds)
    port = free_port()
    streams = [{"url": f"file://{clip}", "name": f"{prefix}-{i + 1}"} for i in range(count)]
    env = os.environ | {
        "VSR_DTYPE": dtype,
        "VSR_STREAM_ALLOW_FILE": "true",
        "VSR_STREAMS": json.dumps(streams),
        "TMPDIR": str(tmp),
        **(extra_env or {}),
    }
    cmd = [sys.executable, "-m", "vsr_cli", "serve", "--host", "127.0.0.1", "--port", str(port), "--models", model]
    log = (workdir / "server.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    return Server(proc, f"http://127.0.0.1:{port}", tmp, job_clip, log)
