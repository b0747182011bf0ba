"""Fixtures for the reliability tests: the real app on a real loopback socket (uvicorn in a thread), tiny images,
process-resource sampling from ``/proc`` (threads, open fds, RSS) and a leak check on temporary files.

Every server here binds 127.0.0.1 only; images are tiny (32x24) and the model is the session's tiny artifact, so
the suite stays inside its CI budget on 2 cores.
"""

from __future__ import annotations

import io
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.httpserver import guarded_protocol
from service.settings import Settings
from tests.conftest import synthetic_image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def png(height: int = 24, width: int = 32, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(np.random.default_rng(seed), height, width)).save(buf, format="PNG")
    return buf.getvalue()


def base_settings(artifact: Path, **overrides: Any) -> Settings:
    """fp32 (deterministic), no warm-up wait, short batch delay; streams may reach loopback (test sources)."""
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
    }
    kw.update(overrides)
    return Settings(**kw)


@dataclass
class Server:
    """The app served by uvicorn on a loopback port, in this process (its state is inspectable)."""

    base: str
    app: Any
    client: httpx.Client

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.app.state.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else float(v)


@contextmanager
def serve(settings: Settings, *, ready_timeout: float = 20.0) -> Iterator[Server]:
    """Run ``create_app(settings)`` on a free 127.0.0.1 port until the block ends (then a graceful stop)."""
    app = create_app(settings, registry=CollectorRegistry())
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    http = guarded_protocol(settings.http_header_timeout_s, settings.http_body_timeout_s)  # as `vsr serve` runs
    config = uvicorn.Config(
        app, log_config=None, timeout_graceful_shutdown=2, lifespan="on", access_log=False, http=http
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=base, timeout=30)
    try:
        end = time.monotonic() + ready_timeout
        while True:
            try:
                if client.get("/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > end or not thread.is_alive():
                raise RuntimeError("service did not become ready")
            time.sleep(0.02)
        yield Server(base, app, client)
    finally:
        client.close()
        server.should_exit = True
        thread.join(20)
        sock.close()


@pytest.fixture
def server_factory(tiny_artifact: dict[str, Path]) -> Iterator[Callable[..., Server]]:
    """``make(**settings)`` -> a started :class:`Server` on the tiny x2 artifact, stopped after the test."""
    stack: list[Any] = []

    def make(**overrides: Any) -> Server:
        cm = serve(base_settings(tiny_artifact["x2"], **overrides))
        srv = cm.__enter__()
        stack.append(cm)
        return srv

    yield make
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


# ---- process resources -----------------------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def temp_entries() -> set[str]:
    """Names in the temporary directory (uploads, spooled multipart parts and video jobs live there)."""
    return set(os.listdir(tempfile.gettempdir()))


@dataclass
class Resources:
    rss: int
    fds: int
    threads: int

    @classmethod
    def now(cls, pid: int | str = "self") -> Resources:
        return cls(rss_bytes(pid), open_fds(pid), thread_count(pid))


def wait_until(pred: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def error_body_ok(response: Any) -> bool:
    """An error response carries the one JSON envelope (httpx, requests or schemathesis responses)."""
    ctype = response.headers.get("content-type", "")
    if isinstance(ctype, list):  # schemathesis: header -> list of values
        ctype = ctype[0] if ctype else ""
    if not ctype.startswith("application/json"):
        return False
    try:
        body = json.loads(response.content)
    except ValueError:
        return False
    if urlsplit(str(response.request.url)).path.startswith("/v2"):  # the Open Inference Protocol's own error shape
        return isinstance(body, dict) and set(body) == {"error"} and isinstance(body["error"], str)
    return (
        isinstance(body, dict)
        and set(body) == {"error"}
        and isinstance(body["error"], dict)
        and set(body["error"]) == {"code", "message"}
    )


def report(name: str, data: dict) -> None:
    """Print a figure set and write it to ``$VSR_RELIABILITY_DIR/<name>.json`` (docs/reliability.md quotes them)."""
    print(f"\n{name}:", json.dumps(data))
    if out := os.environ.get("VSR_RELIABILITY_DIR"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / f"{name}.json").write_text(json.dumps(data, indent=1))
