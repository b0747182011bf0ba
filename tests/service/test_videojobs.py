"""Recorded video through the service: the POST /upscale/video job API (jobs, results, rejections, cleanup)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from service.videojobs import JobManager, JobOptions
from tests.support.live import Server, base_settings, serve, wait_job, wait_until
from tests.support.media import count_frames, decode, make_clip
from tests.support.reference import assert_model_output
from vsr.video import probe

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on one torch thread


@pytest.mark.parametrize("mode", ["multipart", "raw"])
def test_video_job_round_trip(
    live_server: Callable[..., Server], tmp_path: Path, mode: str, tiny_artifact: dict[str, Path]
) -> None:
    svc = live_server()
    clip = make_clip(tmp_path / "in.mp4", audio="aac" if mode == "multipart" else None)
    data = clip.read_bytes()
    if mode == "multipart":
        r = svc.client.post("/upscale/video", files={"file": ("in.mp4", data, "video/mp4")})
    else:
        r = svc.client.post("/upscale/video", content=data, headers={"content-type": "video/mp4"})
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/jobs/{job['id']}" and job["state"] in ("queued", "running", "done")
    assert job["frames_total"] == 20 and job["output"] == {"width": 64, "height": 48}
    assert svc.client.get(f"/jobs/{job['id']}/result").status_code in (200, 409)

    done = wait_job(svc, job["id"])
    assert done["state"] == "done" and done["progress"] == 1.0 and done["frames_done"] == 20
    res = svc.client.get(f"/jobs/{job['id']}/result")
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    out = tmp_path / "out.mp4"
    out.write_bytes(res.content)
    info = probe(out)
    assert (info.width, info.height) == (64, 48) and info.fps == 15 and count_frames(out)[0] == 20
    assert info.audio_codec == ("aac" if mode == "multipart" else None)
    assert svc.sample("vsr_frames_total", {"source": "video"}) >= 20
    for lr, sr in zip(decode(clip), decode(out), strict=True):  # every frame is the model's, within H.264's error
        assert_model_output(sr, lr, tiny_artifact["x2"], tol=12.0)

    jobs = svc.app.state.video_jobs
    files = sorted(p.name for p in jobs.dir.iterdir())
    assert len(files) == 1 and files[0].endswith(".mp4")  # the upload is gone once the job finished
    assert (jobs.dir.stat().st_mode & 0o777) == 0o700 and ((jobs.dir / files[0]).stat().st_mode & 0o777) == 0o600
    assert svc.client.delete(f"/jobs/{job['id']}").status_code == 204
    assert list(jobs.dir.iterdir()) == []
    assert svc.client.get(f"/jobs/{job['id']}").status_code == 404


def test_video_rejections(live_server: Callable[..., Server], tmp_path: Path) -> None:
    svc = live_server(video_max_bytes=20_000, video_max_seconds=1.0)
    client = svc.client
    r = client.post("/upscale/video", content=b"not a video", headers={"content-type": "video/mp4"})
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_video"
    r = client.post("/upscale/video", content=b"x", headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/upscale/video", content=b"\0" * 30_000, headers={"content-type": "video/mp4"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    long_clip = make_clip(tmp_path / "long.mp4", n=30, audio=None)  # 2 s > the 1 s cap
    r = client.post("/upscale/video", content=long_clip.read_bytes(), headers={"content-type": "video/mp4"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_long"
    r = client.post("/upscale/video", files={"other": ("a.mp4", b"x", "video/mp4")})
    assert r.status_code == 422
    assert list(svc.app.state.video_jobs.dir.iterdir()) == []  # nothing left behind
    assert client.get("/jobs/nope").status_code == 404


# ---- jobs on disk (VSR_VIDEO_JOBS_DIR): a restart keeps finished results, fails unfinished jobs with the reason ----


def test_finished_jobs_survive_a_restart(tiny_artifact: dict[str, Path], tmp_path: Path) -> None:
    settings = base_settings(tiny_artifact["x2"], video_jobs_dir=str(tmp_path / "jobs"))
    clip = make_clip(tmp_path / "in.mp4")
    with serve(settings) as svc:
        r = svc.client.post("/upscale/video", content=clip.read_bytes(), headers={"content-type": "video/mp4"})
        job_id = r.json()["id"]
        assert wait_job(svc, job_id)["state"] == "done"
        result = svc.client.get(f"/jobs/{job_id}/result").content
    assert (tmp_path / "jobs" / "jobs.sqlite3").is_file()  # state on disk, not in the process
    with serve(settings) as svc:  # a new process-equivalent: new app, engine, job manager
        again = svc.client.get(f"/jobs/{job_id}").json()
        assert again["state"] == "done" and again["frames_done"] == 20
        assert svc.client.get(f"/jobs/{job_id}/result").content == result
        assert svc.client.delete(f"/jobs/{job_id}").status_code == 204
    with serve(settings) as svc:
        assert svc.client.get(f"/jobs/{job_id}").status_code == 404
        assert not [p for p in (tmp_path / "jobs").iterdir() if p.suffix == ".mp4"]


def test_unfinished_jobs_fail_with_a_reason_after_a_crash(tmp_path: Path) -> None:
    pending: list[Future[np.ndarray]] = []

    def never(frame: np.ndarray, **_: object) -> Future[np.ndarray]:  # a worker that never answers
        pending.append(Future())
        return pending[-1]

    opts = JobOptions(jobs_dir=str(tmp_path / "jobs"))
    first = JobManager(never, opts)
    upload = first.new_file(".mp4")
    make_clip(upload)
    job = first.create(upload, probe(upload), model="x2", scale=2)
    assert wait_until(lambda: job.state == "running" and bool(pending), 20)
    # the process dies here (no close()); the next start opens the same folder
    second = JobManager(never, opts)
    restored = second.get(job.id)
    assert restored is not None and restored.state == "failed" and "restarted" in (restored.error or "")
    assert not restored.in_path.exists() and not restored.out_path.exists()
    for f in pending:  # let the first manager's worker end
        f.cancel()
    first.close()
    second.close()
    expiring = JobManager(never, JobOptions(jobs_dir=str(tmp_path / "jobs"), ttl_s=1e-6))  # TTL cleanup as before
    assert expiring.get(job.id) is None and expiring.store.load() == []
    expiring.close()
