"""Recorded video: vsr.video.transcode and the POST /upscale/video job API, on clips made here with PyAV."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.streams.conftest import LiveService
from vsr.video import SAFE_INPUT_OPTIONS, VideoError, probe, transcode


def make_clip(
    path: Path,
    *,
    w: int = 32,
    h: int = 24,
    fps: int = 15,
    n: int = 20,
    audio: str | None = "aac",
    video: str = "libx264",
) -> Path:
    """A tiny clip (moving gradient; H.264 unless ``video`` says otherwise) with an optional mono sine track."""
    with av.open(str(path), "w") as c:
        v = c.add_stream(video, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = None
        if audio:
            a = c.add_stream(audio, rate=48000 if audio == "libopus" else 16000)
            a.layout = "mono"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(n):
            img = np.stack([(xx * 8 + i * 5) % 256, (yy * 10) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if a is not None:
            sr = a.rate
            pcm = (np.sin(2 * np.pi * 440 * np.arange(sr * n // fps) / sr) * 8000).astype(np.int16)
            resampler = av.AudioResampler(format=a.format.name, layout="mono", rate=sr)
            for s in range(0, len(pcm), 1024):
                af = av.AudioFrame.from_ndarray(pcm[None, s : s + 1024], format="s16", layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, s, Fraction(1, sr)
                for rf in resampler.resample(af):
                    c.mux(a.encode(rf))
            c.mux(a.encode(None))
    return path


def count_frames(path: Path) -> tuple[int, list[float]]:
    """(frames, their presentation times in seconds)."""
    with av.open(str(path)) as c:
        tb = c.streams.video[0].time_base
        times = [float(f.pts * tb) for f in c.decode(video=0)]
    return len(times), times


def nearest_x2(frames: np.ndarray) -> np.ndarray:
    return frames.repeat(2, axis=1).repeat(2, axis=2)


@pytest.mark.parametrize(
    ("src", "video", "audio"),
    [(".mp4", "libx264", "aac"), (".mkv", "libx264", "pcm_s16le"), (".webm", "libvpx-vp9", "libopus")],
)
def test_transcode_keeps_frames_timing_and_audio(tmp_path: Path, src: str, video: str, audio: str) -> None:
    clip = make_clip(tmp_path / f"in{src}", audio=audio, video=video)
    dst = ".mp4"
    out = tmp_path / f"out{dst}"
    seen: list[int] = []
    report = transcode(clip, out, nearest_x2, scale=2, progress=lambda d, t: seen.append(d))
    info = probe(out)
    assert (info.width, info.height) == (64, 48) and report.frames == 20
    assert count_frames(out)[0] == 20 and seen[-1] == 20
    assert info.audio_codec == audio.removeprefix("lib") and report.audio == "copied"
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.name == "h264" and c.streams.video[0].format.name == "yuv420p"
    if src == ".mp4":
        assert info.fps == 15
        assert count_frames(out)[1] == pytest.approx(count_frames(clip)[1], abs=1e-3)  # same timestamps


def test_audio_reencoded_when_container_refuses_it(tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "in.mp4", audio="aac")
    report = transcode(clip, tmp_path / "out.webm", nearest_x2, scale=2)
    assert report.audio == "reencoded:libopus" and report.notes
    assert probe(tmp_path / "out.webm").audio_codec == "opus"


def test_untrusted_input_is_not_a_playlist(tmp_path: Path) -> None:
    evil = tmp_path / "evil.mp4"
    evil.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n")
    with pytest.raises(VideoError):
        probe(evil, SAFE_INPUT_OPTIONS)


def wait_job(svc: LiveService, job_id: str, timeout: float = 30) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = svc.client.get(f"/jobs/{job_id}").json()
        if job["state"] in ("done", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.mark.parametrize("mode", ["multipart", "raw"])
def test_video_job_round_trip(live_service: LiveService, tmp_path: Path, mode: str) -> None:
    svc = live_service
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


def test_video_rejections(live_service_factory, tmp_path: Path) -> None:
    svc = live_service_factory(video_max_bytes=20_000, video_max_seconds=1.0)
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
