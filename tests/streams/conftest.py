"""Fixtures for the stream/video tests: a real loopback RTSP server (gst-rtsp-server under Debian's python3) and
the real service on uvicorn in a thread (real sockets: MJPEG back-pressure and the browser test need them).

The RTSP server needs Debian packages (installed by ``.ci/run``); without them these tests skip locally and FAIL
in CI (``CI=true``).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from tests.conftest import require_or_skip

REPO = Path(__file__).resolve().parents[2]
SERVER_SCRIPT = REPO / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on one thread: on this shared 2-core box (training jobs beside the tests) two OpenMP threads
    make a 160x90 frame take ~300 ms instead of ~7 ms, which would turn every live test into a load test."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rtsp_server_available() -> tuple[bool, str]:
    if not Path(SYSTEM_PYTHON).exists():
        return False, f"{SYSTEM_PYTHON} missing"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
        "('videotestsrc', 'x264enc', 'rtph264pay')) else 3)"
    )
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return False, "gst-rtsp-server / GStreamer plugins missing (see APT_PKGS in .ci/run): " + r.stderr[-300:]
    return True, ""


class RtspServer:
    """One ``tests/rtsp_server.py`` process on a fixed port; ``stop()`` kills it, ``start()`` brings it back."""

    def __init__(self, width: int = 160, height: int = 90, fps: int = 15) -> None:
        self.port = free_port()
        self.args = ["--width", str(width), "--height", str(height), "--fps", str(fps)]
        self.proc: subprocess.Popen[str] | None = None
        self.url = f"rtsp://127.0.0.1:{self.port}/test"

    def start(self, timeout: float = 15.0) -> None:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        done = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.append(line)
                if line.startswith(("READY", "FAILED")):
                    break
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(timeout) or not lines or not lines[-1].startswith("READY"):
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"RTSP server did not start: {lines} {err[-500:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # like a camera losing power: no RTSP TEARDOWN
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def rtsp_server_factory() -> Iterator[Callable[..., RtspServer]]:
    ok, why = rtsp_server_available()
    require_or_skip(ok, why)
    servers: list[RtspServer] = []

    def make(**kw: Any) -> RtspServer:
        srv = RtspServer(**kw)
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()


@pytest.fixture
def rtsp_server(rtsp_server_factory: Callable[..., RtspServer]) -> RtspServer:
    return rtsp_server_factory()


@dataclass
class LiveService:
    base: str
    app: Any
    client: httpx.Client

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.app.state.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else float(v)

    def wait_stream(self, sid: str, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        end = time.monotonic() + timeout
        info: dict[str, Any] = {}
        while time.monotonic() < end:
            info = self.client.get(f"/stream/{sid}").json()
            if pred(info):
                return info
            time.sleep(0.05)
        raise AssertionError(f"stream {sid} never matched; last: {info}")


def stream_settings(artifact: Path, **overrides: Any) -> Settings:
    kw: dict[str, Any] = {
        "models": [str(artifact)],
        "device": "cpu",
        "dtype": "fp32",
        "warmup": False,
        "max_batch_delay_ms": 10.0,
        "stream_allow_cidrs": ["127.0.0.0/8"],  # the tests' RTSP server lives on loopback
        "stream_open_timeout_s": 2.0,
        "stream_read_timeout_s": 1.0,
        "stream_backoff_base_s": 0.1,
        "stream_backoff_max_s": 0.5,
        "stream_max_frame_age_s": 2.0,
    }
    kw.update(overrides)
    return Settings(**kw)


@pytest.fixture
def live_service_factory(tiny_artifact: dict[str, Path]) -> Iterator[Callable[..., LiveService]]:
    """``make(**settings)`` -> the service on a free loopback port (uvicorn in a thread), stopped afterwards."""
    started: list[tuple[uvicorn.Server, threading.Thread, httpx.Client]] = []

    def make(**overrides: Any) -> LiveService:
        app = create_app(stream_settings(tiny_artifact["x2"], **overrides), registry=CollectorRegistry())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=1, lifespan="on")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        base = f"http://127.0.0.1:{port}"
        client = httpx.Client(base_url=base, timeout=10)
        started.append((server, thread, client))
        end = time.monotonic() + 20
        while time.monotonic() < end:
            try:
                if client.get("/v2/health/ready").status_code == 200:
                    return LiveService(base, app, client)
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("service did not start")

    yield make
    for server, thread, client in started:
        client.close()
        server.should_exit = True
        thread.join(15)


@pytest.fixture
def live_service(live_service_factory: Callable[..., LiveService]) -> LiveService:
    return live_service_factory()


def read_mjpeg(base: str, sid: str, n: int, timeout: float = 10.0) -> list[bytes]:
    """The first ``n`` JPEG parts of ``/stream/{sid}/mjpeg`` (parsed by their Content-Length headers)."""
    frames: list[bytes] = []
    buf = b""
    end = time.monotonic() + timeout
    with httpx.stream("GET", f"{base}/stream/{sid}/mjpeg", timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        for chunk in r.iter_bytes():
            buf += chunk
            while (i := buf.find(b"\r\n\r\n")) >= 0:
                head = buf[:i].decode("latin-1").lower()
                length = int(head.split("content-length:")[1].split("\r\n")[0])
                if len(buf) < i + 4 + length:
                    break
                frames.append(buf[i + 4 : i + 4 + length])
                buf = buf[i + 4 + length :]
                if len(frames) >= n:
                    return frames
            if time.monotonic() > end:
                break
    raise AssertionError(f"only {len(frames)} of {n} MJPEG frames in {timeout} s")
