"""Other sources, no RTSP server needed: a development file source listed in VSR_STREAMS_FILE (started with the
service, played at its frame rate in a loop) and an HTTP MJPEG source (the service's own MJPEG output)."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import yaml
from PIL import Image

from tests.support.live import Server, read_mjpeg, wait_until
from tests.support.media import decode, make_clip
from tests.support.reference import assert_model_output, best_match, decode_rgb
from tests.support.timing import contention, stretch


def test_configured_file_stream_and_http_mjpeg_source(live_server, tmp_path: Path, tiny_artifact: dict) -> None:
    clip = make_clip(tmp_path / "cam.mp4", n=10, audio=None)  # 32x24, 15 fps, 0.67 s: loops several times
    source = decode(clip)  # the frames the service reads, decoded here
    cameras = tmp_path / "cameras.yml"
    cameras.write_text(yaml.safe_dump({"streams": [{"url": f"file://{clip}", "name": "lobby"}]}))
    svc = live_server(stream_allow_file=True, streams_file=str(cameras))

    (lobby,) = svc.client.get("/stream").json()["streams"]  # started with the service
    assert lobby["name"] == "lobby" and lobby["url"] == f"file://{clip}"
    info = svc.wait_stream(lobby["id"], lambda i: i["frames_in"] > 15, stretch(5.0))  # looped past the 10 frames
    assert info["state"] == "live" and info["reconnects"] == 0
    # paced at its own 15 fps, not decoded as fast as possible (a loaded machine may decode slower, never faster)
    assert 8 / min(contention(), 4.0) < info["input_fps"] < 25
    for f in [*read_mjpeg(svc.base, lobby["id"], 3), svc.client.get(lobby["frame_url"]).content]:
        out = decode_rgb(f)  # the model's output of one of the clip's frames (which one is not known), within JPEG's
        i, _ = best_match(out, source, tiny_artifact["x2"])
        assert_model_output(out, source[i], tiny_artifact["x2"], tol=12.0)

    port = svc.base.rsplit(":", 1)[1]
    r = svc.client.post("/stream", json={"url": f"http://localhost:{port}{lobby['mjpeg_url']}", "name": "chained"})
    assert r.status_code == 201, r.text
    chained = r.json()
    assert chained["url"].startswith("http://localhost:")
    svc.wait_stream(chained["id"], lambda i: i["state"] == "live" and i["frames_out"] > 0, 10)
    frames = read_mjpeg(svc.base, chained["id"], 3)
    assert Image.open(io.BytesIO(frames[-1])).size == (128, 96)  # 32x24 -> x2 -> x2


def test_delete_removes_every_label_set_of_the_stream(live_server: Callable[..., Server], tmp_path: Path) -> None:
    """No metric keeps a deleted stream's name: the stream's own series and ``vsr_frames_total{source=...}``."""
    clip = make_clip(tmp_path / "cam.mp4", n=10, audio=None)
    svc = live_server(stream_allow_file=True)
    r = svc.client.post("/stream", json={"url": f"file://{clip}", "name": "gone"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    svc.wait_stream(sid, lambda i: i["frames_out"] > 0, 30)
    assert svc.sample("vsr_frames_total", {"source": "stream:gone"}) > 0
    assert svc.sample("vsr_stream_frames_total", {"stream": "gone", "direction": "out"}) > 0

    def leftovers() -> list[str]:
        return [
            s.name
            for metric in svc.app.state.registry.collect()
            for s in metric.samples
            if s.labels.get("stream") == "gone" or s.labels.get("source") == "stream:gone"
        ]

    assert svc.client.delete(f"/stream/{sid}").status_code == 204
    assert wait_until(lambda: not leftovers(), 30), leftovers()  # removed by the reaper thread, off the request
    assert 'source="stream:gone"' not in svc.client.get("/metrics").text
