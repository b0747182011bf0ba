"""Stream faults on the real service: a source that dies and returns (RTSP), stalls mid-stream (HTTP: sends, then
keeps the connection open and silent), sends corrupt packets, or changes resolution mid-stream; MJPEG viewers that
vanish mid-frame. Each time a healthy stream beside it keeps producing frames and ``POST /upscale`` keeps working.

Sources are local: a loopback HTTP server that plays MPEG-TS at real time in an endless loop, and the loopback
RTSP server of ``tests/streams`` (Debian packages; skipped locally, failing in CI, when missing).
Figures (recovery times, drops, reconnects) go to ``$VSR_RELIABILITY_DIR/stream_faults.json`` when set.
"""

from __future__ import annotations

import http.server
import io
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.checks import report
from tests.support.env import require_or_skip
from tests.support.live import Server, read_mjpeg, wait_until
from tests.support.media import make_video, png
from tests.support.procs import open_fds
from tests.support.rtsp import RtspServer, rtsp_server_available
from tests.support.threads import Checked
from tests.support.timing import contention, stretch

FIGURES: dict[str, Any] = {}
TS_PKT = 188


@pytest.fixture(scope="module", autouse=True)
def write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        report("stream_faults", FIGURES)


# ---- a loopback MPEG-TS "camera" over HTTP ---------------------------------------------------------------------


@dataclass
class Clip:
    data: bytes
    seconds: float


def garble(ts: bytes, every: int, seed: int = 0) -> bytes:
    """Overwrite the payload of every ``every``-th video packet with noise (TS headers kept: the demuxer goes on)."""
    b = bytearray(ts)
    rng = np.random.default_rng(seed)
    k = 0
    for off in range(0, len(b) - TS_PKT + 1, TS_PKT):
        pid = ((b[off + 1] & 0x1F) << 8) | b[off + 2]
        if pid == 0x100:
            k += 1
            if k % every == 0:
                b[off + 4 : off + TS_PKT] = rng.integers(0, 256, TS_PKT - 4, dtype=np.uint8).tobytes()
    return bytes(b)


class TsCamera:
    """``/{name}`` plays the named clips in a loop at real time; ``stall_after`` seconds then silence (kept open)."""

    def __init__(self, clips: dict[str, list[Clip]], stall_after: dict[str, float] | None = None) -> None:
        self.clips, self.stall_after = clips, stall_after or {}
        self.stop = threading.Event()
        self.connections = 0
        self.stalled_at: dict[str, float] = {}
        cam = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                name = self.path.lstrip("/")
                if name not in cam.clips:
                    self.send_error(404)
                    return
                cam.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                t0 = time.monotonic()
                try:
                    while not cam.stop.is_set():
                        for clip in cam.clips[name]:
                            cam.play(self.wfile, clip)
                            if name in cam.stall_after and time.monotonic() - t0 >= cam.stall_after[name]:
                                cam.stalled_at.setdefault(name, time.monotonic())
                                cam.stop.wait()  # silent, connection open
                                return
                except OSError:
                    return

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def play(self, out: Any, clip: Clip) -> None:
        chunk = TS_PKT * 7
        n = max(len(clip.data) // chunk, 1)
        pause = clip.seconds / n
        for i in range(0, len(clip.data), chunk):
            if self.stop.is_set():
                return
            out.write(clip.data[i : i + chunk])
            out.flush()
            time.sleep(pause)

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def ts_clip(tmp: Path, name: str, *, width: int = 32, height: int = 24, frames: int = 24, fps: int = 12) -> Clip:
    data = make_video(tmp / f"{name}.ts", "mpegts", frames=frames, width=width, height=height, fps=fps)
    return Clip(data, frames / fps)


@pytest.fixture
def camera(tmp_path: Path) -> Iterator[Callable[..., TsCamera]]:
    made: list[TsCamera] = []

    def make(clips: dict[str, list[Clip]], **kw: Any) -> TsCamera:
        cam = TsCamera(clips, **kw)
        made.append(cam)
        return cam

    yield make
    for cam in made:
        cam.close()


# ---- helpers ---------------------------------------------------------------------------------------------------


def add(srv: Server, url: str, name: str) -> str:
    r = srv.client.post("/stream", json={"url": url, "name": name})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def info(srv: Server, sid: str) -> dict[str, Any]:
    return srv.client.get(f"/stream/{sid}").json()


def wait_info(srv: Server, sid: str, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
    last: dict[str, Any] = {}

    def check() -> bool:
        nonlocal last
        last = info(srv, sid)
        return pred(last)

    assert wait_until(check, timeout), f"stream {sid} never matched: {last}"
    return last


class Bystanders:
    """A healthy stream and an /upscale client running beside a fault; ``check()`` asserts they carried on."""

    def __init__(self, srv: Server, healthy_id: str) -> None:
        self.srv, self.sid = srv, healthy_id
        self.stop = threading.Event()
        self.upscale: list[int] = []
        self.thread = Checked(self._run, name="test-bystander")  # an exception in it reaches the test via join

    def __enter__(self) -> Bystanders:
        self.frames0 = info(self.srv, self.sid)["frames_out"]
        self.t0 = time.monotonic()
        self.thread.start()
        return self

    def _run(self) -> None:
        with httpx.Client(base_url=self.srv.base, timeout=10) as c:
            while not self.stop.is_set():
                r = c.post("/upscale", content=png(), headers={"content-type": "image/png"})
                self.upscale.append(r.status_code)
                self.stop.wait(0.1)

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join(15)

    def check(self) -> dict[str, Any]:
        i = info(self.srv, self.sid)
        gained = i["frames_out"] - self.frames0
        seconds = time.monotonic() - self.t0
        # the source plays 12 fps; 2 fps (less under CPU contention) shows the stream was not stalled by the fault
        assert i["state"] == "live" and gained >= seconds * 2 / min(contention(), 5.0), (gained, seconds, i)
        assert self.upscale and set(self.upscale) == {200}, self.upscale
        return {"healthy_stream_fps": round(gained / seconds, 1), "upscale_requests_ok": len(self.upscale)}


@pytest.fixture
def stream_server(live_server: Callable[..., Server]) -> Server:
    return live_server(
        stream_read_timeout_s=1.0, stream_open_timeout_s=5.0, stream_max_frame_age_s=2.0, max_batch_delay_ms=5.0
    )


# ---- the faults ------------------------------------------------------------------------------------------------


def test_stall_corrupt_packets_and_resolution_change_at_once(
    stream_server: Server, camera: Callable[..., TsCamera], tmp_path: Path
) -> None:
    """Three faulty HTTP sources at the same time, beside a healthy one and an /upscale client:

    - ``staller`` plays ~4 s, then keeps the connection open and silent: the read timeout (1 s) notices, the reader
      reconnects (and the source plays again);
    - ``corrupt`` has every 5th video TS packet's payload replaced by noise: frames keep coming;
    - ``flipper`` alternates 32x24 and 48x32 clips in one connection: the output follows, both sizes x2 appear.
    """
    srv = stream_server
    small = ts_clip(tmp_path, "small", width=32, height=24)
    big = ts_clip(tmp_path, "big", width=48, height=32)
    bad = Clip(garble(small.data, every=5), small.seconds)
    cam = camera(
        {"ok.ts": [small], "stall.ts": [small], "bad.ts": [bad], "flip.ts": [small, big]},
        stall_after={"stall.ts": 3.5},
    )
    healthy = add(srv, f"{cam.base}/ok.ts", "healthy")
    wait_info(srv, healthy, lambda i: i["frames_out"] > 0, 15)
    with Bystanders(srv, healthy) as bystanders:
        staller = add(srv, f"{cam.base}/stall.ts", "staller")
        corrupt = add(srv, f"{cam.base}/bad.ts", "corrupt")
        flipper = add(srv, f"{cam.base}/flip.ts", "flipper")
        sizes: set[tuple[int, int]] = set()
        end = time.monotonic() + 20
        while time.monotonic() < end and len(sizes) < 2:
            for f in read_mjpeg(srv.base, flipper, 3, timeout=10):
                sizes.add(jpeg_size(f))
        stalled = wait_info(srv, staller, lambda i: i["reconnects"] >= 1, 15)
        t_reconnect = time.monotonic() - cam.stalled_at["stall.ts"]
        bad_info = wait_info(srv, corrupt, lambda i: i["frames_out"] >= 5, 10)
        figures = bystanders.check()
    assert sizes == {(64, 48), (96, 64)}, sizes  # both resolutions, each x2
    flip_info = info(srv, flipper)
    assert (flip_info["output"]["width"], flip_info["output"]["height"]) in sizes
    assert stalled["last_error"]
    assert srv.sample("vsr_stream_reconnects_total", {"stream": "staller"}) >= 1
    assert bad_info["state"] in ("live", "backoff", "connecting")
    FIGURES["stall_mid_stream"] = {
        "stalls_after_s": 3.5,
        "read_timeout_s": 1.0,
        "silence_to_reconnect_s": round(t_reconnect, 2),
        "last_error": stalled["last_error"][:80],
    }
    FIGURES["corrupt_packets"] = {
        "garbled": "every 5th video TS packet payload",
        "frames_out": bad_info["frames_out"],
        "dropped": {k: v for k, v in bad_info["dropped"].items() if v},
        "reconnects": bad_info["reconnects"],
    }
    FIGURES["resolution_change"] = {"output_sizes_seen": sorted(sizes), "reconnects": flip_info["reconnects"]}
    FIGURES["bystanders_during_http_faults"] = figures


def jpeg_size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


def test_rtsp_source_dies_and_returns(stream_server: Server, camera: Callable[..., TsCamera], tmp_path: Path) -> None:
    ok, why = rtsp_server_available()
    require_or_skip(ok, why)
    srv = stream_server
    cam = camera({"ok.ts": [ts_clip(tmp_path, "a")]})
    rtsp = RtspServer(width=64, height=48, fps=15)
    rtsp.start()
    try:
        healthy = add(srv, f"{cam.base}/ok.ts", "healthy")
        sid = add(srv, rtsp.url, "cam")
        wait_info(srv, sid, lambda i: i["state"] == "live" and i["frames_out"] > 0, stretch(15.0))
        with Bystanders(srv, healthy) as bystanders:
            rtsp.stop()  # SIGKILL: no TEARDOWN, like a camera losing power
            t_kill = time.monotonic()
            wait_info(srv, sid, lambda i: i["state"] != "live", stretch(8.0))
            t_noticed = time.monotonic() - t_kill
            rtsp.start()
            t_back = time.monotonic()
            before = info(srv, sid)["frames_out"]
            wait_info(srv, sid, lambda i: i["state"] == "live" and i["frames_out"] > before, stretch(3.0) + 1.0)
            t_recovered = time.monotonic() - t_back
            figures = bystanders.check()
    finally:
        rtsp.stop()
    assert t_recovered < stretch(3.0) + 1.0  # the bound (3 s on an idle machine) plus polling
    FIGURES["rtsp_source_dies"] = {
        "noticed_after_s": round(t_noticed, 2),
        "frames_again_after_return_s": round(t_recovered, 2),
        "reconnects": info(srv, sid)["reconnects"],
        **figures,
    }


def test_mjpeg_viewers_vanishing_mid_frame(
    stream_server: Server, camera: Callable[..., TsCamera], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    srv = stream_server
    cam = camera({"ok.ts": [ts_clip(tmp_path, "a")]})
    sid = add(srv, f"{cam.base}/ok.ts", "watched")
    wait_info(srv, sid, lambda i: i["frames_out"] > 0, 10)
    read_mjpeg(srv.base, sid, 2)
    fds0 = open_fds()
    host, port = srv.base.removeprefix("http://").split(":")
    for k in range(20):
        s = socket.create_connection((host, int(port)), timeout=5)
        s.sendall(f"GET /stream/{sid}/mjpeg HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(200 + k * 50)  # the headers and part of a frame
        if k % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST instead of FIN
        s.close()
    frames = read_mjpeg(srv.base, sid, 10)  # the stream and other viewers go on
    assert len(frames) == 10
    assert info(srv, sid)["state"] == "live"
    assert wait_until(lambda: open_fds() <= fds0 + 3, 10), (fds0, open_fds())  # every viewer's socket closed
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    FIGURES["mjpeg_viewer_disconnects"] = {"viewers": 20, "fds_before": fds0, "fds_after": open_fds()}
