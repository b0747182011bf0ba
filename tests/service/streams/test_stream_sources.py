"""Other sources, no RTSP server needed: a development file source listed in VSR_STREAMS_FILE (started with the
service, played at its frame rate in a loop) and an HTTP MJPEG source (the service's own MJPEG output)."""

from __future__ import annotations

import io
from pathlib import Path

import yaml
from PIL import Image

from tests.support.live import read_mjpeg
from tests.support.media import make_clip


def test_configured_file_stream_and_http_mjpeg_source(live_server, tmp_path: Path) -> None:
    clip = make_clip(tmp_path / "cam.mp4", n=10, audio=None)  # 32x24, 15 fps, 0.67 s: loops several times
    cameras = tmp_path / "cameras.yml"
    cameras.write_text(yaml.safe_dump({"streams": [{"url": f"file://{clip}", "name": "lobby"}]}))
    svc = live_server(stream_allow_file=True, streams_file=str(cameras))

    (lobby,) = svc.client.get("/stream").json()["streams"]  # started with the service
    assert lobby["name"] == "lobby" and lobby["url"] == f"file://{clip}"
    info = svc.wait_stream(lobby["id"], lambda i: i["frames_in"] > 15, 5)  # looped past the 10 frames
    assert info["state"] == "live" and info["reconnects"] == 0
    assert 8 < info["input_fps"] < 25  # paced at its own 15 fps, not decoded as fast as possible

    port = svc.base.rsplit(":", 1)[1]
    r = svc.client.post("/stream", json={"url": f"http://localhost:{port}{lobby['mjpeg_url']}", "name": "chained"})
    assert r.status_code == 201, r.text
    chained = r.json()
    assert chained["url"].startswith("http://localhost:")
    svc.wait_stream(chained["id"], lambda i: i["state"] == "live" and i["frames_out"] > 0, 10)
    frames = read_mjpeg(svc.base, chained["id"], 3)
    assert Image.open(io.BytesIO(frames[-1])).size == (128, 96)  # 32x24 -> x2 -> x2
