"""``POST /stream/{id}/record``: a live (looping file) stream's source frames land in the clips folder as an MP4 whose
frames are the source's (PSNR against the decoded source), of the asked length, within the folder's disk cap; a
full folder refuses (507) and a recording stops at the cap."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np

from tests.support.checks import assert_error
from tests.support.live import Server, wait_until
from tests.support.media import make_clip


def frames_of(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(float) - b.astype(float)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def start(srv: Server, clip: Path) -> str:
    r = srv.client.post("/stream", json={"url": f"file://{clip}", "name": "gate-1"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    srv.wait_stream(sid, lambda s: s["frames_in"] > 0, 20)
    return str(sid)


def finished(srv: Server, sid: str) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal last
        last = srv.client.get(f"/stream/{sid}/record").json()
        return last["state"] != "recording"

    assert wait_until(ended, 30), last
    return last


def test_record_writes_the_source_frames(live_server: Callable[..., Server], tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "src.mp4", w=64, h=48, fps=20, n=20, audio=None)
    source = frames_of(clip)
    clips = tmp_path / "clips"
    srv = live_server(stream_allow_file=True, clips_dir=str(clips))
    sid = start(srv, clip)
    assert srv.client.get(f"/stream/{sid}/record").status_code == 404  # nothing recorded yet
    r = srv.client.post(f"/stream/{sid}/record", json={"seconds": 1.5})
    assert r.status_code == 202, r.text
    assert r.json()["state"] == "recording" and r.json()["file"].startswith("gate-1-")
    assert_error(srv.client.post(f"/stream/{sid}/record", json={"seconds": 1}), 409, "recording")
    done = finished(srv, sid)
    assert done["state"] == "done" and done["frames"] == 30, done  # 1.5 s at the source's 20 fps
    files = list(clips.iterdir())
    assert [p.name for p in files] == [done["file"]] and files[0].suffix == ".mp4"  # no .part left
    recorded = frames_of(files[0])
    assert len(recorded) == 30 and recorded[0].shape == source[0].shape
    for f in recorded[::7]:  # each recorded frame is one of the source's (the file loops), re-encoded at CRF 18
        assert max(psnr(f, s) for s in source) > 35
    for bad in ({"seconds": 0}, {"seconds": 99999}, {"seconds": 1, "path": "/etc"}):
        assert_error(srv.client.post(f"/stream/{sid}/record", json=bad), 422)
    assert srv.client.post("/stream/nope/record", json={"seconds": 1}).status_code == 404


def test_record_keeps_to_the_disk_cap(live_server: Callable[..., Server], tmp_path: Path) -> None:
    clip = tmp_path / "noise.mp4"
    with av.open(str(clip), "w") as c:  # noise compresses badly: every frame is tens of kB
        s = c.add_stream("libx264", rate=20)
        s.width, s.height, s.pix_fmt = 320, 240, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(20):
            c.mux(s.encode(av.VideoFrame.from_ndarray(rng.integers(0, 256, (240, 320, 3), np.uint8), format="rgb24")))
        c.mux(s.encode(None))
    clips = tmp_path / "clips"
    clips.mkdir()
    cap = 1 << 20
    (clips / "old.mp4").write_bytes(b"\0" * (cap - 100_000))  # room for a few frames only
    srv = live_server(stream_allow_file=True, clips_dir=str(clips), clips_max_mb=1)
    sid = start(srv, clip)
    assert srv.client.post(f"/stream/{sid}/record", json={"seconds": 60}).status_code == 202
    done = finished(srv, sid)
    assert done["state"] == "capped" and 0 < done["frames"] < 60 * 20, done
    total = sum(p.stat().st_size for p in clips.iterdir())
    assert cap <= total < cap + 320 * 240 * 3  # stopped within one frame of the cap
    assert_error(srv.client.post(f"/stream/{sid}/record", json={"seconds": 1}), 507, "clips_full")


def test_record_is_off_without_a_clips_folder(live_server: Callable[..., Server], tmp_path: Path) -> None:
    srv = live_server(stream_allow_file=True)
    sid = start(srv, make_clip(tmp_path / "src.mp4", n=5, audio=None))
    assert_error(srv.client.post(f"/stream/{sid}/record", json={"seconds": 1}), 409, "recording_off")
