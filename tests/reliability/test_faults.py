"""Injected faults on the real server: an exception inside the model for one batch, CUDA out-of-memory simulated on
CPU (both through the engine's ``fault_hook``), and clients that disconnect in the middle of an upload.

Each: the affected request fails as documented (JSON envelope), every other request carries on, the metrics count
it, the worker survives, and the time until the next successful request is measured (``recovery``).
Figures go to ``$VSR_RELIABILITY_DIR/faults.json`` when set.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from tests.support.checks import error_body_ok, report
from tests.support.live import Server, wait_until
from tests.support.media import png
from tests.support.timing import stretch

FIGURES: dict[str, dict] = {}


def post(srv: Server, body: bytes) -> httpx.Response:
    return httpx.post(f"{srv.base}/upscale", content=body, headers={"content-type": "image/png"}, timeout=20)


def recovery_s(srv: Server, since: float) -> float:
    """Seconds from ``since`` until a request succeeds."""
    while post(srv, png()).status_code != 200:
        time.sleep(0.01)
    return time.monotonic() - since


@pytest.fixture(scope="module", autouse=True)
def write_figures() -> None:
    yield
    if FIGURES:
        report("faults", FIGURES)


def test_exception_in_one_batch_fails_only_its_requests(live_server: Callable[..., Server]) -> None:
    srv = live_server(max_batch_size=8, max_batch_delay_ms=50)
    fired = threading.Event()

    def fail_tall(_m: str, frames: np.ndarray) -> None:
        if frames.shape[1] == 30:  # only the 30-pixel-tall frames' batch
            fired.set()
            raise RuntimeError("simulated fault inside the model")

    srv.app.state.engine.fault_hook = fail_tall
    bodies = [png(30, 32, seed=i) for i in range(3)] + [png(24, 32, seed=i) for i in range(5)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: post(srv, b), bodies))
    t_fault = time.monotonic()
    assert fired.is_set()
    for r in responses[:3]:
        assert r.status_code == 500 and error_body_ok(r) and r.json()["error"]["code"] == "inference_failed"
    assert [r.status_code for r in responses[3:]] == [200] * 5
    assert srv.sample("vsr_batch_errors_total", {"model": "x2"}) >= 1
    assert srv.app.state.batcher.alive
    FIGURES["model_exception"] = {
        "failed_requests": 3,
        "other_requests_ok": 5,
        "batch_errors_total": srv.sample("vsr_batch_errors_total", {"model": "x2"}),
        "recovery_s": round(recovery_s(srv, t_fault), 4),
    }


def test_simulated_oom_splits_the_batch_and_counts(live_server: Callable[..., Server]) -> None:
    srv = live_server(max_batch_size=8, max_batch_delay_ms=100)
    sizes: list[int] = []

    def oom_above_one(_m: str, frames: np.ndarray) -> None:
        sizes.append(len(frames))
        if len(frames) > 1:
            raise torch.cuda.OutOfMemoryError("simulated CUDA out of memory")

    srv.app.state.engine.fault_hook = oom_above_one
    bodies = [png(seed=i) for i in range(6)]
    with ThreadPoolExecutor(len(bodies)) as pool:
        responses = list(pool.map(lambda b: post(srv, b), bodies))
    assert [r.status_code for r in responses] == [200] * 6  # every request still succeeds
    assert max(sizes) > 1, "no batch formed; the split path was not exercised"
    ooms = srv.sample("vsr_oom_retries_total")
    assert ooms == sum(1 for s in sizes if s > 1)
    # and the results equal the unfaulted ones
    srv.app.state.engine.fault_hook = None
    assert [post(srv, b).content for b in bodies] == [r.content for r in responses]
    FIGURES["oom_split"] = {"attempt_sizes": sizes, "oom_retries_total": ooms, "requests_ok": 6}


def test_oom_on_a_single_frame_gives_up_cleanly(live_server: Callable[..., Server]) -> None:
    srv = live_server(max_batch_size=1, tile_size=256, tile_overlap=8)

    def always_oom(_m: str, frames: np.ndarray) -> None:
        if frames.shape[1] == 300:
            raise torch.cuda.OutOfMemoryError("simulated CUDA out of memory")

    srv.app.state.engine.fault_hook = always_oom
    t0 = time.monotonic()
    r = post(srv, png(300, 32))
    assert r.status_code == 500 and error_body_ok(r)
    assert srv.sample("vsr_oom_retries_total") >= 2  # the frame was retried with smaller tiles before giving up
    assert post(srv, png()).status_code == 200
    FIGURES["oom_single_frame"] = {
        "status": 500,
        "oom_retries_total": srv.sample("vsr_oom_retries_total"),
        "recovery_s": round(recovery_s(srv, t0), 4),
    }


def send_partial(base: str, path: str, headers: dict[str, str], body: bytes) -> None:
    """Open a raw connection, send headers and part of the body, then vanish."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as s:
        head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        s.sendall(head.encode() + b"\r\n" + body)
        time.sleep(0.05)


@pytest.mark.parametrize("route", ["/upscale", "/upscale/video"])
def test_client_disconnects_mid_upload(
    live_server: Callable[..., Server], route: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    srv = live_server()
    jobs_dir: Path = srv.app.state.video_jobs.dir
    raw_type = "image/png" if route == "/upscale" else "video/mp4"
    for _ in range(5):
        send_partial(srv.base, route, {"Content-Type": raw_type, "Content-Length": "1000000"}, png()[:500])
        boundary = "b0undary"
        part = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x"\r\n'
            f"Content-Type: {raw_type}\r\n\r\n"
        ).encode() + b"\0" * 5000
        send_partial(
            srv.base,
            route,
            {"Content-Type": f"multipart/form-data; boundary={boundary}", "Content-Length": "1000000"},
            part,
        )
        send_partial(
            srv.base, route, {"Content-Type": raw_type, "Transfer-Encoding": "chunked"}, b"1f4\r\n" + b"x" * 100
        )
    took = recovery_s(srv, time.monotonic())
    assert srv.app.state.batcher.alive
    # the handlers noticed: nothing half-written is left in the job folder, no 500 was logged
    assert wait_until(lambda: not list(jobs_dir.iterdir()), stretch(5.0)), list(jobs_dir.iterdir())
    assert srv.app.state.batcher.qsize() == 0
    assert not [r for r in caplog.records if "unhandled" in r.getMessage()]
    statuses = srv.app.state.registry.get_sample_value
    assert not statuses("vsr_http_requests_total", {"route": route, "method": "POST", "status": "500"})
    FIGURES[f"disconnect_mid_upload{route.replace('/', '_')}"] = {"disconnects": 15, "recovery_s": round(took, 4)}
