"""Graceful shutdown of the real ``vsr serve`` process (uvicorn, 127.0.0.1, a tiny model): SIGTERM while requests
are in flight, a video job is running and an MJPEG viewer watches a live stream → every in-flight request
completes, the viewer's response ends, the partial job output is removed, the process exits 0 within a bound,
and nothing is left in its temporary directory.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import REPO
from tests.reliability.conftest import free_port, png, report
from tests.reliability.test_hostile_inputs import make_video

EXIT_BOUND_S = 30.0
IN_FLIGHT = 4


def start_server(artifact: Path, port: int, tmp: Path, camera: Path) -> subprocess.Popen[str]:
    env = os.environ | {
        "VSR_STREAM_ALLOW_FILE": "true",
        "VSR_STREAMS": json.dumps([{"url": f"file://{camera}", "name": "cam"}]),
        "VSR_DTYPE": "fp32",
        "VSR_MAX_BATCH_SIZE": "1",  # in-flight requests run one after another: some are surely mid-way at SIGTERM
        "VSR_TILE_SIZE": "0",
        "TMPDIR": str(tmp),
    }
    cmd = [sys.executable, "-m", "vsr_cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--models", str(artifact), "--device", "cpu"]
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_ready(base: str, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("vsr serve did not become ready")


def test_sigterm_drains_in_flight_work_and_exits_0(tiny_artifact: dict[str, Path], tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    camera = tmp_path / "cam.mp4"
    make_video(camera, "mp4", frames=48)
    proc = start_server(tiny_artifact["x2"], port, tmp, camera)
    viewer_frames = 0
    viewer_done = threading.Event()

    def viewer() -> None:  # an MJPEG viewer that would read forever
        nonlocal viewer_frames
        try:
            with httpx.stream("GET", f"{base}/stream/{sid}/mjpeg", timeout=30) as r:
                for chunk in r.iter_bytes():
                    viewer_frames += chunk.count(b"Content-Type: image/jpeg")
        except httpx.HTTPError:
            pass
        viewer_done.set()

    try:
        wait_ready(base, proc)
        sid = httpx.get(f"{base}/stream").json()["streams"][0]["id"]
        threading.Thread(target=viewer, daemon=True).start()
        video = make_video(tmp_path / "v.mp4", "mp4", frames=120)
        job = httpx.post(f"{base}/upscale/video", content=video, headers={"content-type": "video/mp4"}, timeout=10)
        assert job.status_code == 202, job.text
        assert any(tmp.iterdir())  # the job folder

        big = png(512, 512)
        results: list[tuple[int, float]] = []

        def one() -> None:
            r = httpx.post(f"{base}/upscale", content=big, headers={"content-type": "image/png"}, timeout=60)
            results.append((r.status_code, time.monotonic()))

        threads = [threading.Thread(target=one) for _ in range(IN_FLIGHT)]
        for t in threads:
            t.start()
        time.sleep(0.5)  # uploaded and queued / running
        assert viewer_frames > 0 and not viewer_done.is_set()
        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(EXIT_BOUND_S)
        code = proc.wait(EXIT_BOUND_S)
        t_exit = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    log = proc.stdout.read() if proc.stdout else ""
    assert code == 0, log[-3000:]
    assert [s for s, _ in results] == [200] * IN_FLIGHT, (results, log[-3000:])
    finished_after_term = sum(1 for _, t in results if t > t_term)
    assert finished_after_term >= 1, "no request was in flight at SIGTERM; the test proved nothing"
    assert not list(tmp.iterdir()), list(tmp.rglob("*"))  # the unfinished job's files are gone
    assert "Traceback" not in log, log[-3000:]
    assert viewer_done.is_set()  # the MJPEG response was ended, not left hanging
    report(
        "shutdown",
        {
            "in_flight_requests": IN_FLIGHT,
            "completed_after_sigterm": finished_after_term,
            "statuses": sorted({s for s, _ in results}),
            "sigterm_to_exit_s": round(t_exit - t_term, 3),
            "exit_code": code,
            "temp_files_left": 0,
            "mjpeg_viewer_ended": True,
        },
    )
