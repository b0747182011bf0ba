"""Caps counted while decoding, not trusted from headers (CI sizes; ``scripts/attack.py`` runs the full ones):
every decoded frame of a video job or a stream is checked against the pixel cap, and a job's duration, frame count
and frame rate are counted from its frames. Each job that is accepted ends ``done`` or ``failed`` with a reason;
nothing is left in the job folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts.attack_media import h264_mkv, mjpeg_mkv, patch_mkv_duration
from tests.support.checks import error_body_ok, report
from tests.support.live import Server, wait_job
from tests.support.timing import stretch
from vsr.frames import CapExceeded, FrameCaps, FrameCounter

FIGURES: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def write_figures() -> None:
    yield
    if FIGURES:
        report("caps", FIGURES)


def post_mkv(srv: Server, path: Path) -> dict:
    r = srv.client.post("/upscale/video", content=path.read_bytes(), headers={"content-type": "video/x-matroska"})
    if r.status_code != 202:
        assert error_body_ok(r), r.text
        return {"status": r.status_code, "code": r.json()["error"]["code"]}
    job = wait_job(srv, r.json()["id"], timeout=60)
    return {"status": 202, "state": job["state"], "error": job["error"], "frames_total": job["frames_total"]}


def test_video_frames_over_the_pixel_cap_fail_the_job(live_server: Callable[..., Server], tmp_path: Path) -> None:
    srv = live_server(max_input_pixels=64 * 64)
    path = mjpeg_mkv(tmp_path / "grow.mkv", [(32, 32)] * 3 + [(200, 200)] * 2)  # the header says 32x32
    out = post_mkv(srv, path)
    assert out["status"] == 202 and out["state"] == "failed", out
    assert "200x200" in out["error"] and "over the cap" in out["error"], out
    assert not list(srv.app.state.video_jobs.dir.glob("*.upload"))
    FIGURES["video_growing_frames"] = out


def test_stream_frames_over_the_pixel_cap_fail_the_stream(live_server: Callable[..., Server], tmp_path: Path) -> None:
    srv = live_server(max_input_pixels=64 * 64, stream_allow_file=True)
    src = mjpeg_mkv(tmp_path / "cam.mkv", [(200, 200)] * 10, fps=10)
    s = srv.client.post("/stream", json={"url": f"file://{src}", "name": "big"})
    assert s.status_code == 201, s.text
    end = time.monotonic() + stretch(10.0)
    while time.monotonic() < end and (info := srv.client.get(f"/stream/{s.json()['id']}").json())["state"] != "failed":
        time.sleep(0.05)
    assert info["state"] == "failed" and "200x200" in (info["last_error"] or ""), info
    assert info["frames_out"] == 0
    FIGURES["stream_big_frames"] = {"state": info["state"], "last_error": info["last_error"]}


def test_duration_and_frame_count_are_counted(live_server: Callable[..., Server], tmp_path: Path) -> None:
    srv = live_server(video_max_seconds=10, video_max_frames=40)
    lie = patch_mkv_duration(h264_mkv(tmp_path / "long.mkv", 30, fps=Fraction(1)), 1.0)  # 29 s, header says 1 s
    out = post_mkv(srv, lie)
    assert out["status"] == 202 and out["state"] == "failed" and "longer than 10 s" in out["error"], out
    FIGURES["duration_lie"] = out
    negative = patch_mkv_duration(h264_mkv(tmp_path / "neg.mkv", 5, fps=Fraction(10)), -125.0)
    out = post_mkv(srv, negative)
    assert out == {"status": 400, "code": "invalid_video"}, out
    FIGURES["negative_duration"] = out
    many = h264_mkv(tmp_path / "many.mkv", 60, fps=Fraction(25))  # Matroska has no frame count in its header
    out = post_mkv(srv, many)
    assert out["status"] == 202 and out["state"] == "failed" and "more than 40 frames" in out["error"], out
    FIGURES["frame_count"] = out
    fine = h264_mkv(tmp_path / "fine.mkv", 20, fps=Fraction(25))
    assert post_mkv(srv, fine)["state"] == "done"
    assert not list(srv.app.state.video_jobs.dir.glob("*.upload"))


def test_frame_rate_in_the_header_is_refused(live_server: Callable[..., Server], tmp_path: Path) -> None:
    srv = live_server()
    out = post_mkv(srv, h264_mkv(tmp_path / "flood.mkv", 300, fps=Fraction(10000)))
    assert out == {"status": 413, "code": "frame_rate_too_high"}, out
    FIGURES["frame_flood"] = out


def frame(w: int, h: int, pts: int) -> SimpleNamespace:
    return SimpleNamespace(width=w, height=h, pts=pts)


def test_frame_counter_counts_what_arrives() -> None:
    c = FrameCounter(FrameCaps(max_fps=240, max_seconds=5), Fraction(1, 10_000))
    with pytest.raises(CapExceeded, match="frame-rate cap"):
        for i in range(3000):  # 3000 frames in 0.3 s, whatever a header said
            c.check(frame(16, 16, i))  # type: ignore[arg-type]
    assert c.frames < 300  # stopped within the first second's burst allowance
    ok = FrameCounter(FrameCaps(max_fps=240, max_seconds=5), Fraction(1, 60))
    for i in range(300):  # 60 fps for 5 s: fine
        ok.check(frame(16, 16, i))  # type: ignore[arg-type]
    with pytest.raises(CapExceeded, match="longer than 5 s"):
        ok.check(frame(16, 16, 301))  # type: ignore[arg-type]
    no_pts = FrameCounter(FrameCaps(max_frames=3, max_pixels=100), None)
    with pytest.raises(CapExceeded, match="11x10"):
        no_pts.check(frame(11, 10, None))  # type: ignore[arg-type]
