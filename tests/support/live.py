"""The real service on a real loopback socket (uvicorn in a thread of this process, so its state is inspectable),
the one wait-until-ready helper (for in-process servers, TestClients and ``vsr serve`` subprocesses alike), polling,
and an MJPEG reader.

Every server binds 127.0.0.1 on a free port, so two test runs can share the machine.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
import uvicorn
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.httpserver import guarded_protocol
from service.settings import Settings

READY_PATH = "/v2/health/ready"
ClientFactory = Callable[..., Any]  # tests/service's make_client: (**settings) -> a started TestClient


class _Getter(Protocol):
    def get(self, url: str) -> Any: ...


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` s pass; returns its last value (assert on it)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def wait_ready(
    target: str | _Getter,
    *,
    path: str = READY_PATH,
    timeout: float = 60.0,
    alive: Callable[[], bool] | None = None,
    describe: Callable[[], str] = lambda: "",
) -> None:
    """Wait until ``GET /v2/health/ready`` (or ``path``) answers 200. ``target``: a base URL (``http://127.0.0.1:PORT``) or a
    client with ``get(path)`` (httpx.Client with a base_url, FastAPI's TestClient). ``alive``: fail at once when the
    server is gone (a dead thread or process); ``describe``: what to add to the failure (e.g. the process's log)."""

    def status() -> int:
        try:
            if isinstance(target, str):
                return httpx.get(target.rstrip("/") + path, timeout=2).status_code
            return int(target.get(path).status_code)
        except httpx.TransportError:
            return 0

    end = time.monotonic() + timeout
    while True:
        if status() == 200:
            return
        if alive is not None and not alive():
            raise AssertionError(f"the server stopped before {path} was ready {describe()}")
        if time.monotonic() > end:
            raise AssertionError(f"{path} was not ready within {timeout} s {describe()}")
        time.sleep(0.02)


def base_settings(artifact: Path, **overrides: Any) -> Settings:
    """fp32 (deterministic), no warm-up wait, short batch delay, quick stream reconnects; streams may reach loopback
    (the tests' sources)."""
    kw: dict[str, Any] = {
        "models": [str(artifact)],
        "device": "cpu",
        "dtype": "fp32",
        "warmup": False,
        "max_batch_delay_ms": 2.0,
        "stream_allow_cidrs": ["127.0.0.0/8"],
        "stream_open_timeout_s": 2.0,
        "stream_read_timeout_s": 1.0,
        "stream_backoff_base_s": 0.1,
        "stream_backoff_max_s": 0.5,
        "stream_max_frame_age_s": 2.0,  # a loaded test machine can hold a frame past 1 s; not a failure here
    }
    kw.update(overrides)
    return Settings(**kw)


@dataclass
class Server:
    """The app served by uvicorn on a loopback port, in this process."""

    base: str
    app: Any
    client: httpx.Client

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return sample(self, name, labels)

    def wait_stream(self, sid: str, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """Poll ``GET /stream/{sid}`` until ``pred(info)``; returns that info."""
        last: dict[str, Any] = {}

        def check() -> bool:
            nonlocal last
            last = self.client.get(f"/stream/{sid}").json()
            return pred(last)

        assert wait_until(check, timeout), f"stream {sid} never matched; last: {last}"
        return last


def wait_job(srv: Server, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll ``GET /jobs/{job_id}`` until the video job ends (done, failed or cancelled); returns its last state."""
    last: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal last
        last = srv.client.get(f"/jobs/{job_id}").json()
        return last["state"] in ("done", "failed", "cancelled")

    assert wait_until(ended, timeout), f"job {job_id} did not finish: {last}"
    return last


def sample(holder: Any, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's current value in the registry of ``holder.app`` (a Server or a TestClient); 0 when absent."""
    value = holder.app.state.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else float(value)


@contextmanager
def serve(settings: Settings, *, ready_timeout: float = 60.0, graceful_s: float = 2.0) -> Iterator[Server]:
    """Run ``create_app(settings)`` on a free 127.0.0.1 port until the block ends (then a graceful stop)."""
    app = create_app(settings, registry=CollectorRegistry())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    http = guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s)  # as `vsr serve` runs
    config = uvicorn.Config(
        app, log_config=None, timeout_graceful_shutdown=graceful_s, lifespan="on", access_log=False, http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=30)
    try:
        wait_ready(client, timeout=ready_timeout, alive=thread.is_alive)
        yield Server(base, app, client)
    finally:
        client.close()
        server.should_exit = True
        thread.join(20)
        sock.close()


def hold_worker(holder: Any, *, until: threading.Event, timeout: float = 60.0) -> threading.Event:
    """Make the worker's next batch block (the engine's fault hook) until ``until`` is set; returns an event that is
    set once it blocks. ``holder``: a Server or a TestClient. Makes "work in flight" certain instead of timed."""
    engine = holder.app.state.engine
    blocked = threading.Event()

    def hook(model: str, frames: np.ndarray) -> None:
        if not blocked.is_set():
            blocked.set()
            until.wait(timeout)

    engine.fault_hook = hook
    return blocked


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
