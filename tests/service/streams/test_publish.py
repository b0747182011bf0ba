"""Published streams: the upscaled frames go out as H.264 to a real RTSP receiver on loopback (Debian's FFmpeg in
``-rtsp_flags listen`` mode, an independent implementation) and are decoded there at 2x the source size, >= 90 % of
the frames the source sent, each the model's output of the camera's frame (``tests.support.reference``); a dead target never stalls the stream; publish targets obey the URL policy."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import av
import pytest

from tests.support.env import require_or_skip
from tests.support.live import Server, free_port
from tests.support.reference import assert_model_output
from tests.support.rtsp import STATIC_PATTERN, RtspServer, grab_frames

FPS = 15


def listening(port: int) -> bool:
    """A TCP socket LISTENs on ``port`` (read from /proc: connecting would use up the receiver's one client)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{port:04X}") and fields[3] == "0A":
            return True
    return False


def start_receiver(port: int, out: Path) -> subprocess.Popen[bytes]:
    ffmpeg = shutil.which("ffmpeg")
    require_or_skip(ffmpeg is not None, "Debian `ffmpeg` not installed (see .ci/run)")
    assert ffmpeg is not None
    url = f"rtsp://127.0.0.1:{port}/out"
    args = [ffmpeg, "-hide_banner", "-loglevel", "error", "-rtsp_flags", "listen", "-timeout", "30", "-i", url]
    proc = subprocess.Popen([*args, "-c", "copy", "-y", str(out)], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    end = time.monotonic() + 15
    while not listening(port):
        assert proc.poll() is None and time.monotonic() < end, "the RTSP receiver did not start"
        time.sleep(0.05)
    return proc


def received_frames(receiver: subprocess.Popen[bytes], out: Path) -> list[av.VideoFrame]:
    """Once the stream is removed (RTSP TEARDOWN): the receiver exits cleanly, and the frames it wrote, decoded."""
    try:
        assert receiver.wait(30) == 0, receiver.stderr.read() if receiver.stderr else ""
    finally:
        if receiver.poll() is None:
            receiver.kill()
    with av.open(str(out)) as c:
        return list(c.decode(video=0))


def test_published_stream_reaches_an_rtsp_receiver(
    live_server: Callable[..., Server],
    rtsp_server_factory: Callable[..., RtspServer],
    tmp_path: Path,
    tiny_artifact: dict[str, Path],
) -> None:
    rtsp_server = rtsp_server_factory(pattern=STATIC_PATTERN)
    (camera,) = grab_frames(rtsp_server.url)  # what the camera sends, decoded outside the service
    svc = live_server()
    port, out = free_port(), tmp_path / "received.mkv"
    receiver = start_receiver(port, out)
    spec = {
        "url": rtsp_server.url,
        "name": "pub",
        "publish": f"rtsp://127.0.0.1:{port}/out",
        "publish_options": {"encoder": "libx264", "preset": "ultrafast", "gop": FPS},
    }
    r = svc.client.post("/stream", json=spec)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    info = svc.wait_stream(sid, lambda i: (i["publish"] or {}).get("frames", 0) >= 4 * FPS, timeout=30)
    assert info["publish"]["state"] == "live" and info["publish"]["encoder"] == "libx264"
    assert svc.sample("vsr_stream_frames_total", {"stream": "pub", "direction": "published"}) > 0
    stream = svc.app.state.streams.get(sid)
    svc.app.state.streams.remove(sid, join_timeout=10)  # stops reader, pump and publisher (TEARDOWN)
    frames = received_frames(receiver, out)
    sent_in = stream.stats.frames_in
    print(f"published: {len(frames)} frames received of {sent_in} decoded, {frames[0].width}x{frames[0].height}")
    assert (frames[0].width, frames[0].height) == (320, 180)  # the 160x90 camera, upscaled x2
    assert len(frames) >= 0.9 * sent_in, (len(frames), sent_in, stream.info())
    assert stream.publisher is not None and stream.publisher.stats.frames == len(frames)
    for f in frames[-3:]:  # the model's output of the camera's frame, within two H.264 passes' error
        assert_model_output(f.to_ndarray(format="rgb24"), camera, tiny_artifact["x2"], tol=12.0)


def test_a_dead_target_never_stalls_the_stream(live_server: Callable[..., Server], rtsp_server: RtspServer) -> None:
    svc = live_server()
    spec = {"url": rtsp_server.url, "name": "nobody", "publish": f"rtsp://127.0.0.1:{free_port()}/out"}
    sid = svc.client.post("/stream", json=spec).json()["id"]
    info = svc.wait_stream(sid, lambda i: i["frames_out"] >= 2 * FPS, timeout=30)
    assert info["state"] == "live"
    assert info["publish"]["state"] in ("backoff", "connecting") and info["publish"]["frames"] == 0
    assert "refused" in (info["publish"]["last_error"] or "").lower(), info["publish"]


@pytest.mark.parametrize(
    ("target", "status", "code"),
    [
        ("rtsp://10.1.2.3/out", 403, "url_denied"),  # private: only 127.0.0.0/8 is allowed in these tests
        ("rtsp://169.254.169.254/out", 403, "url_denied"),
        ("http://127.0.0.1:8080/out", 400, "unsupported_url"),
        ("file:///tmp/out.mp4", 400, "unsupported_url"),
        ("srt://127.0.0.1/out", 400, "bad_url"),  # SRT needs a port
    ],
)
def test_publish_targets_obey_the_url_policy(
    live_server: Callable[..., Server], target: str, status: int, code: str
) -> None:
    svc = live_server()
    spec = {"url": "rtsp://127.0.0.1:9/cam", "publish": target}
    r = svc.client.post("/stream", json=spec)
    assert r.status_code == status and r.json()["error"]["code"] == code, r.text
    assert svc.client.get("/stream").json()["streams"] == []
