"""Recorded video through the service: the POST /upscale/video job API (jobs, results, rejections, cleanup)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.live import Server, wait_job
from tests.support.media import count_frames, make_clip
from vsr.video import probe

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on one torch thread


@pytest.mark.parametrize("mode", ["multipart", "raw"])
def test_video_job_round_trip(live_server: Callable[..., Server], tmp_path: Path, mode: str) -> None:
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
