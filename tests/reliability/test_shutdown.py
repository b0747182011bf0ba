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

from tests.support.checks import report
from tests.support.env import REPO
from tests.support.live import free_port, wait_ready, wait_until
from tests.support.media import make_video, png

EXIT_BOUND_S = 30.0
IN_FLIGHT = 2  # requests held in the worker at SIGTERM: one batch of this many frames
BIG = 512  # their frames' size: the hook holds only these (stream and video job frames are 32x24)

# `vsr serve` with the engine's fault hook set to hold the first batch of BIG x BIG frames until the test writes
# HOLD_DIR/release (after SIGTERM): so the requests are certainly in flight when the signal arrives, however fast or
# slow this machine is. It writes HOLD_DIR/held (the batch's frame count) once it holds.
SERVE_HOLDING = """
import os, sys, time
from pathlib import Path
import service.engine as se
from vsr_cli.main import main

gate = Path(os.environ["VSR_TEST_HOLD_DIR"])
big = int(os.environ["VSR_TEST_HOLD_SIZE"])
load = se.Engine.load.__func__

def hold(model, frames):
    if frames.shape[1:3] != (big, big) or (gate / "held").exists():
        return
    (gate / "held").write_text(str(len(frames)))
    end = time.monotonic() + 60
    while not (gate / "release").exists() and time.monotonic() < end:
        time.sleep(0.01)

def load_holding(cls, *args, **kwargs):
    engine = load(cls, *args, **kwargs)
    engine.fault_hook = hold
    return engine

se.Engine.load = classmethod(load_holding)
sys.exit(main(sys.argv[1:]))
"""


def start_server(artifact: Path, port: int, tmp: Path, camera: Path, gate: Path, log: Path) -> subprocess.Popen[str]:
    env = os.environ | {
        "VSR_STREAM_ALLOW_FILE": "true",
        "VSR_STREAMS": json.dumps([{"url": f"file://{camera}", "name": "cam"}]),
        "VSR_DTYPE": "fp32",
        # the IN_FLIGHT requests' frames make one batch: it closes when full (the delay only bounds a lone frame)
        "VSR_MAX_BATCH_SIZE": str(IN_FLIGHT),
        "VSR_MAX_BATCH_DELAY_MS": "10000",  # the settings maximum
        "VSR_TILE_SIZE": "0",
        "VSR_TEST_HOLD_DIR": str(gate),
        "VSR_TEST_HOLD_SIZE": str(BIG),
        "TMPDIR": str(tmp),
    }
    cmd = [sys.executable, "-c", SERVE_HOLDING, "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--models", str(artifact), "--device", "cpu"]
    with log.open("w") as out:  # a file, not a pipe: a full pipe would block the server's logging
        return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def test_sigterm_drains_in_flight_work_and_exits_0(tiny_artifact: dict[str, Path], tmp_path: Path) -> None:
    tmp, gate = tmp_path / "tmp", tmp_path / "gate"
    tmp.mkdir()
    gate.mkdir()
    log_file = tmp_path / "serve.log"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    camera = tmp_path / "cam.mp4"
    make_video(camera, "mp4", frames=48)
    proc = start_server(tiny_artifact["x2"], port, tmp, camera, gate, log_file)
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

    results: list[tuple[int, float]] = []

    def one() -> None:
        r = httpx.post(f"{base}/upscale", content=big, headers={"content-type": "image/png"}, timeout=60)
        results.append((r.status_code, time.monotonic()))

    try:
        wait_ready(base, alive=lambda: proc.poll() is None, describe=log_file.read_text)
        sid = httpx.get(f"{base}/stream").json()["streams"][0]["id"]
        threading.Thread(target=viewer, daemon=True).start()
        assert wait_until(lambda: viewer_frames > 0, 60), "the MJPEG viewer got no frame"

        big = png(BIG, BIG)
        threads = [threading.Thread(target=one) for _ in range(IN_FLIGHT)]
        for t in threads:
            t.start()
        assert wait_until(lambda: (gate / "held").exists(), 60), "the requests' batch never reached the worker"
        assert (gate / "held").read_text() == str(IN_FLIGHT)  # every request is in the held batch: in flight

        # a video job accepted now cannot finish before SIGTERM: the worker is held
        video = make_video(tmp_path / "v.mp4", "mp4", frames=120)
        job = httpx.post(f"{base}/upscale/video", content=video, headers={"content-type": "video/mp4"}, timeout=30)
        assert job.status_code == 202, job.text
        assert any(tmp.iterdir())  # the job folder
        assert not viewer_done.is_set() and not results

        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # release only once the server is shutting down, so the requests finish during the drain, not before it
        assert wait_until(lambda: "Shutting down" in log_file.read_text(), EXIT_BOUND_S), log_file.read_text()[-3000:]
        (gate / "release").touch()
        for t in threads:
            t.join(EXIT_BOUND_S)
        code = proc.wait(EXIT_BOUND_S)
        t_exit = time.monotonic()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    log = log_file.read_text()
    assert code == 0, log[-3000:]
    assert [s for s, _ in results] == [200] * IN_FLIGHT, (results, log[-3000:])
    finished_after_term = sum(1 for _, t in results if t > t_term)
    assert finished_after_term == IN_FLIGHT  # certain by construction: they were held until after the signal
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
