"""Recorded video through the service: the POST /upscale/video job API (jobs, results, rejections, cleanup)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.jobstore import JobsDirUnusable
from service.videojobs import CHANGED, MISSING, JobManager, JobOptions
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


def test_a_full_job_table_refuses_an_upload_before_storing_it(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    """With the table full, a 20 MB upload is answered 429 after its first 64 KiB, nothing written to the jobs
    folder (it used to be stored whole, then refused: the client had to send all of it to get the answer)."""
    svc = live_server(video_max_jobs=1)
    clip = make_clip(tmp_path / "in.mp4")
    r = svc.client.post("/upscale/video", content=clip.read_bytes(), headers={"content-type": "video/mp4"})
    assert r.status_code == 202, r.text
    assert wait_job(svc, r.json()["id"])["state"] == "done"  # its files settled (segments come and go while it runs)
    jobs_dir = svc.app.state.video_jobs.dir
    before = sorted(jobs_dir.iterdir())
    host, port = svc.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        head = (
            f"POST /upscale/video HTTP/1.1\r\nHost: x\r\nContent-Type: video/mp4\r\nContent-Length: {20 << 20}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"\0" * (64 << 10))  # and no more: the answer must come without the rest
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 429"), answer
    assert '"too_many_jobs"' in answer and "retry-after: 10" in answer.lower()
    assert sorted(jobs_dir.iterdir()) == before  # no upload file was created
    assert svc.client.delete(f"/jobs/{r.json()['id']}").status_code == 204  # a free slot takes uploads again
    again = svc.client.post("/upscale/video", content=clip.read_bytes(), headers={"content-type": "video/mp4"})
    assert again.status_code == 202, again.text


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


class Crash(BaseException):
    """Ends a job's worker thread the way a kill ends the process: no except clause, no clean-up."""


def upscale2x(frame: np.ndarray) -> np.ndarray:
    return np.repeat(np.repeat(frame, 2, 0), 2, 1)


def answering(calls: list[int], crash_after: int | None = None) -> Callable[..., Future[np.ndarray]]:
    """A batcher stand-in: nearest-neighbour x2, counting frames; past ``crash_after`` frames its worker "dies"."""

    def submit(frame: np.ndarray, **_: object) -> Future[np.ndarray]:
        fut: Future[np.ndarray] = Future()
        if crash_after is not None and len(calls) >= crash_after:
            fut.set_exception(Crash())
        else:
            calls.append(1)
            fut.set_result(upscale2x(frame))
        return fut

    return submit


def crash_mid_job(tmp_path: Path, n: int = 40) -> tuple[JobManager, str, Path]:
    """A job on a 40-frame clip (8-frame segments) whose worker dies at frame 13: one segment is durable."""
    opts = JobOptions(jobs_dir=str(tmp_path / "jobs"), segment_s=0.5)  # 15 fps: 8 frames a segment
    first = JobManager(answering([], crash_after=12), opts)
    upload = first.new_file(".mp4")
    make_clip(upload, n=n, audio="aac")
    job = first.create(upload, probe(upload), model="x2", scale=2)
    assert wait_until(lambda: not first._threads[0].is_alive(), 30)  # the "process" died mid-job
    (doc,) = first.store.load()
    assert doc["state"] == "running" and [s["frames"] for s in doc["segments"]] == [8]
    return first, job.id, upload


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_crashed_job_resumes_after_its_last_segment(tmp_path: Path) -> None:
    first, job_id, upload = crash_mid_job(tmp_path)
    reference, samples = decoded(upload), audio_samples(upload)
    calls: list[int] = []
    second = JobManager(answering(calls), JobOptions(jobs_dir=str(tmp_path / "jobs"), segment_s=0.5))
    job = second.get(job_id)
    assert job is not None and wait_until(lambda: job.state in ("done", "failed"), 30), job.describe()
    assert job.state == "done", job.error
    assert len(calls) == 40 - 8  # the durable segment's frames were not upscaled again
    assert "resumed after a restart at frame 8" in job.notes and job.frames_done == 40
    out = decoded(job.out_path)
    assert [t for t, _ in out] == [t for t, _ in reference]  # every frame once, at its input time
    for (_, got), (_, src) in zip(out, reference, strict=True):  # the model's output, within codec tolerance
        assert psnr(got, upscale2x(src)) > 30
    assert audio_samples(job.out_path) == samples > 0
    assert files(second) == [job.out_path.name]  # the upload and the segments are gone
    first.close()
    second.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_job_whose_upload_changed_or_went_fails_with_the_reason(tmp_path: Path) -> None:
    first, job_id, upload = crash_mid_job(tmp_path / "changed")
    with upload.open("r+b") as f:  # one flipped byte in the middle: disk corruption
        f.seek(upload.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    second = JobManager(answering([]), JobOptions(jobs_dir=str(tmp_path / "changed" / "jobs")))
    job = second.get(job_id)
    assert job is not None and wait_until(lambda: job.state == "failed", 30), job.describe()
    assert job.error == CHANGED
    assert files(second) == []
    for m in (first, second):
        m.close()

    first, job_id, upload = crash_mid_job(tmp_path / "gone")
    upload.unlink()
    second = JobManager(answering([]), JobOptions(jobs_dir=str(tmp_path / "gone" / "jobs")))
    job = second.get(job_id)
    assert job is not None and job.state == "failed" and job.error == MISSING
    assert files(second) == []
    for m in (first, second):
        m.close()
    expiring = JobManager(answering([]), JobOptions(jobs_dir=str(tmp_path / "gone" / "jobs"), ttl_s=1e-6))
    assert expiring.get(job_id) is None and expiring.store.load() == []  # TTL cleanup as before
    expiring.close()


def test_an_unusable_jobs_folder_fails_before_the_worker_starts(tiny_artifact: dict[str, Path], tmp_path: Path) -> None:
    """In the lifespan too (not only ``vsr serve``'s check): no inference worker is left running the model into
    interpreter shutdown, which aborted the process (SIGABRT) after the error line."""
    (tmp_path / "a-file").write_text("")
    settings = base_settings(tiny_artifact["x2"], video_jobs_dir=str(tmp_path / "a-file"), warmup=True)
    workers_before = {t for t in threading.enumerate() if t.name == "vsr-worker"}
    with (
        pytest.raises(JobsDirUnusable, match="VSR_VIDEO_JOBS_DIR"),
        TestClient(create_app(settings, registry=CollectorRegistry())),
    ):
        pass
    assert {t for t in threading.enumerate() if t.name == "vsr-worker" and t.is_alive()} <= workers_before


def files(jobs: JobManager) -> list[str]:
    return sorted(p.name for p in jobs.dir.iterdir() if not p.name.startswith("jobs.sqlite3"))


def decoded(path: Path) -> list[tuple[float, np.ndarray]]:
    with av.open(str(path)) as c:
        tb = c.streams.video[0].time_base
        return [(float(f.pts * tb), f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(f.samples for f in c.decode(audio=0))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_a_worker_that_outlives_the_shutdown_wait_writes_nothing(tmp_path: Path) -> None:
    """The job store after close (a worker that outlived ``JobManager.close``'s join on a slow machine): saves and
    deletes are dropped, no "closed database" error in the worker, and what was recorded before stays."""
    from service.jobstore import JobStore

    path = tmp_path / "jobs.sqlite"
    store = JobStore(path)
    store.save({"id": "a", "state": "running"})
    store.close()
    store.save({"id": "a", "state": "done"})  # raised sqlite3.ProgrammingError before
    store.delete("a")
    again = JobStore(path)
    assert again.load() == [{"id": "a", "state": "running"}]
    again.close()
