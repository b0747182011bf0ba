"""Crash recovery of the real ``vsr serve`` process: SIGKILL in the middle of a video job, start it again with the
same ``VSR_VIDEO_JOBS_DIR`` → the configured camera is live again within seconds of readiness, and the job resumes
after its last durable segment and finishes with every input frame once (its time, the model's output within codec
tolerance) and the input's audio.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import av
import httpx
import numpy as np

from tests.support.checks import report
from tests.support.env import REPO
from tests.support.live import free_port, wait_ready, wait_until
from tests.support.media import make_clip, make_video
from tests.support.timing import stretch
from vsr.engine import Engine

FRAMES, FPS, SEGMENT_S = 90, 15, 1.0  # 15-frame segments
HOLD_AFTER = 40  # the worker stops (until the kill) at the 41st frame of the job: segments 1 and 2 are durable
CAMERA_LIVE_S = 20.0  # the bound, from readiness

# `vsr serve` whose engine stops answering after HOLD_AFTER frames of the job's size (camera frames are smaller), and
# says so in HOLD_DIR/held: the kill then lands mid-job however fast or slow this machine is.
SERVE_HOLDING = """
import os, sys, time
from pathlib import Path
import service.engine as se
from vsr_cli.main import main

gate = Path(os.environ["VSR_TEST_HOLD_DIR"])
after = int(os.environ["VSR_TEST_HOLD_AFTER"])
height = int(os.environ["VSR_TEST_HOLD_HEIGHT"])
seen = 0
load = se.Engine.load.__func__

def hold(model, frames):
    global seen
    if frames.shape[1] != height:
        return
    seen += len(frames)
    if seen > after:
        (gate / "held").write_text(str(seen))
        time.sleep(3600)  # until SIGKILL

def load_holding(cls, *args, **kwargs):
    engine = load(cls, *args, **kwargs)
    engine.fault_hook = hold
    return engine

se.Engine.load = classmethod(load_holding)
sys.exit(main(sys.argv[1:]))
"""


def start(artifact: Path, port: int, env: dict[str, str], log: Path, *, holding: bool) -> subprocess.Popen[str]:
    code = SERVE_HOLDING if holding else "import sys; from vsr_cli.main import main; sys.exit(main(sys.argv[1:]))"
    cmd = [sys.executable, "-c", code, "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--models", str(artifact), "--device", "cpu"]
    with log.open("a") as out:  # a file, not a pipe: a full pipe would block the server's logging
        return subprocess.Popen(cmd, cwd=REPO, env=os.environ | env, stdout=out, stderr=subprocess.STDOUT, text=True)


def segments_in_store(jobs: Path) -> list[dict]:
    db = sqlite3.connect(f"file:{jobs / 'jobs.sqlite3'}?mode=ro", uri=True)
    try:
        docs = [json.loads(d) for (d,) in db.execute("SELECT doc FROM jobs")]
    finally:
        db.close()
    return [s for d in docs for s in d.get("segments", [])]


def decoded(path: Path) -> list[tuple[int, np.ndarray]]:
    """(pts in the stream's time base, RGB) of every frame."""
    with av.open(str(path)) as c:
        return [(int(f.pts), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(f.samples for f in c.decode(audio=0))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def test_sigkill_mid_job_then_restart_resumes_it_and_the_camera(tiny_artifact: dict[str, Path], tmp_path: Path) -> None:
    jobs, gate, log = tmp_path / "jobs", tmp_path / "gate", tmp_path / "serve.log"
    gate.mkdir()
    camera = tmp_path / "cam.mp4"
    make_video(camera, "mp4", frames=48)  # 32x24
    clip = make_clip(tmp_path / "in.mp4", w=48, h=32, fps=FPS, n=FRAMES, audio="aac")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        "VSR_STREAM_ALLOW_FILE": "true",
        "VSR_STREAMS": json.dumps([{"url": f"file://{camera}", "name": "cam"}]),
        "VSR_DTYPE": "fp32",
        "VSR_TILE_SIZE": "0",
        "VSR_VIDEO_JOBS_DIR": str(jobs),
        "VSR_VIDEO_SEGMENT_S": str(SEGMENT_S),
        "VSR_TEST_HOLD_DIR": str(gate),
        "VSR_TEST_HOLD_AFTER": str(HOLD_AFTER),
        "VSR_TEST_HOLD_HEIGHT": "32",
    }
    proc = start(tiny_artifact["x2"], port, env, log, holding=True)
    try:
        wait_ready(base, alive=lambda: proc.poll() is None, describe=log.read_text)
        r = httpx.post(f"{base}/upscale/video", content=clip.read_bytes(), headers={"content-type": "video/mp4"})
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        assert wait_until(lambda: (gate / "held").exists(), 120), log.read_text()[-3000:]
        durable = segments_in_store(jobs)
        assert [s["frames"] for s in durable] == [15, 15], durable  # the event the kill waits for
        proc.send_signal(signal.SIGKILL)  # no shutdown code runs: like a power cut
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)

    proc = start(tiny_artifact["x2"], port, env, log, holding=False)
    try:
        wait_ready(base, alive=lambda: proc.poll() is None, describe=log.read_text)
        ready = time.monotonic()

        def camera_live() -> bool:
            return [s["state"] for s in httpx.get(f"{base}/stream").json()["streams"]] == ["live"]

        live_bound = stretch(CAMERA_LIVE_S)
        assert wait_until(camera_live, live_bound), httpx.get(f"{base}/stream").json()
        live_after_s = time.monotonic() - ready

        def job() -> dict:
            return httpx.get(f"{base}/jobs/{job_id}").json()

        assert wait_until(lambda: job()["state"] in ("done", "failed"), 120), job()
        info = job()
        assert info["state"] == "done", info
        assert "resumed after a restart at frame 30" in info["notes"] and info["frames_done"] == FRAMES
        result = tmp_path / "out.mp4"
        result.write_bytes(httpx.get(f"{base}/jobs/{job_id}/result", timeout=30).content)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)

    out, src = decoded(result), decoded(clip)
    assert len(out) == FRAMES and [t for t, _ in out] == [t for t, _ in src]  # every frame once, in order
    engine = Engine.open([str(tiny_artifact["x2"])], device="cpu", dtype="fp32")
    picks = [0, 14, 15, 29, 30, 31, FRAMES - 1]  # both sides of each segment boundary, the resume point, the end
    want = engine.run(engine.names[0], np.stack([src[i][1] for i in picks]))
    shifted = engine.run(engine.names[0], np.stack([src[i + 3 if i < FRAMES - 3 else i - 3][1] for i in picks]))
    quality = [psnr(out[i][1], w) for i, w in zip(picks, want, strict=True)]
    wrong = [psnr(out[i][1], w) for i, w in zip(picks, shifted, strict=True)]
    # the model's output of that very frame (x264 CRF 18 in between), clearly closer than to that of a frame 3 away
    assert min(quality) > 27 and all(q > w + 3 for q, w in zip(quality, wrong, strict=True)), (quality, wrong)
    assert audio_samples(result) == audio_samples(clip) > 0
    left = [p.name for p in jobs.iterdir() if not p.name.startswith("jobs.sqlite3")]
    assert len(left) == 1 and ".seg" not in left[0], left  # the result only: no upload, no segment
    report(
        "crash_resume",
        {
            "frames": FRAMES,
            "segment_frames": int(SEGMENT_S * FPS),
            "durable_before_kill": 30,
            "camera_live_after_ready_s": round(live_after_s, 2),
            "min_psnr_vs_model_db": round(min(quality), 1),
            "max_psnr_vs_neighbour_db": round(max(wrong), 1),
        },
    )
    assert live_after_s <= live_bound
