"""Limits at the HTTP layer, on the real server (uvicorn + the guarded protocol, loopback):

- body limits on every route, JSON included: a declared length over the cap is answered 413 before a byte of the
  body is sent; a chunked body is cut at the cap;
- slow clients (slowloris): headers trickled, a connection that says nothing, a body that stalls — closed at their
  timeouts, while the health check answers meanwhile (also with the worker held inside a batch);
- pipelined requests whose client hangs up: logged at info, no traceback.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support.checks import error_body_ok, report
from tests.support.live import Server, hold_worker
from tests.support.media import png
from tests.support.timing import stretch

FIGURES: dict[str, dict] = {}


@pytest.fixture(scope="module", autouse=True)
def write_figures() -> Iterator[None]:
    yield
    if FIGURES:
        report("http_limits", FIGURES)


def raw(srv: Server) -> socket.socket:
    host, port = srv.base.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=5)
    return s


def read_response(s: socket.socket, timeout: float = 5.0) -> bytes:
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        while chunk := s.recv(65536):
            del chunk
        return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_declared_body_over_the_cap_is_refused_before_it_is_sent(live_server: Callable[..., Server]) -> None:
    srv = live_server(max_json_bytes=4096, max_upload_bytes=64 * 1024)
    for path, ctype, declared in [
        ("/stream", "application/json", 300_000_000),
        ("/upscale", "image/png", 10_000_000),
        ("/jobs/x", "application/json", 5000),  # a route that takes no body still has a cap
    ]:
        s = raw(srv)
        t0 = time.monotonic()
        head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {declared}\r\n"
        s.sendall(head.encode() + b"Expect: 100-continue\r\n\r\n")  # and not one byte of the body
        resp = read_response(s)
        took = time.monotonic() - t0
        assert resp.startswith(b"HTTP/1.1 413"), resp[:200]
        assert b"connection: close" in resp.lower() and b"100 continue" not in resp.lower()
        assert closed_by_server(s, stretch(2.0))  # at once; a kept-alive connection would wait forever
        s.close()
        FIGURES.setdefault("declared", {})[path] = {"declared_bytes": declared, "answer_s": round(took, 4)}
    assert srv.sample("vsr_rejected_total", {"reason": "too_large"}) >= 3


def test_chunked_json_body_is_cut_at_the_cap(live_server: Callable[..., Server]) -> None:
    srv = live_server(max_json_bytes=4096)
    sent = 0

    def endless() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"url": "rtsp://10.0.0.1/x", "name": "'
        while sent < 50_000_000:
            sent += 65536
            yield b"a" * 65536

    r = httpx.post(f"{srv.base}/stream", content=endless(), headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 413 and error_body_ok(r), r.text[:200]
    assert sent < 20_000_000  # the rest never left the client (loopback buffers hold a few MB)
    ok = srv.client.post("/stream", json={"url": "ftp://10.0.0.1/x"})
    assert ok.status_code in (400, 403, 422) and error_body_ok(ok)  # a small body still reaches the route
    FIGURES["chunked_json"] = {"cap_bytes": 4096, "client_sent_bytes_before_413": sent}


def slow_connection(srv: Server, i: int, body: bytes) -> socket.socket:
    """One of three kinds of slow client: headers never finished, a body that stalls, or nothing said at all."""
    s = raw(srv)
    if i % 3 == 0:
        s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    elif i % 3 == 1:
        s.sendall(b"POST /upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n")
        s.sendall(f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])  # the body stalls
    return s  # i % 3 == 2: connects and says nothing


def test_slow_clients_are_closed_and_health_answers_meanwhile(live_server: Callable[..., Server]) -> None:
    """60 slow connections while the worker is held inside a batch: the health check (a new connection each time,
    as a load balancer probes) answers 200 several times before any slow connection could have timed out, i.e.
    it waits neither for the slow clients nor for the worker; then the server closes every slow connection.

    "Before the timeout" is an event, not a speed: the timeouts start when the connections are made (after
    ``t0``), so nothing a slow client holds is freed before ``t0 + timeout``. The timeout itself is an idle
    machine's 1 s stretched by the contention now, so a loaded machine keeps room for a few probes; the probes'
    latency is a figure (speed targets are the benchmarks')."""
    timeout_s = stretch(1.0)
    srv = live_server(http_header_timeout_s=timeout_s, http_body_timeout_s=timeout_s)
    release = threading.Event()
    blocked = hold_worker(srv, until=release)
    body = png()
    # a probe that waits as long as the slow clients' timeout has waited for them (or for the worker): it fails
    probe = httpx.Client(base_url=srv.base, timeout=timeout_s, limits=httpx.Limits(max_keepalive_connections=0))
    socks: list[socket.socket] = []
    with ThreadPoolExecutor(1) as pool, probe:
        held = pool.submit(srv.client.post, "/upscale", content=body, headers={"content-type": "image/png"})
        try:
            assert blocked.wait(30), "the upload never reached the worker"
            t0 = time.monotonic()
            socks = [slow_connection(srv, i, body) for i in range(60)]
            answered: list[tuple[float, float]] = []  # (finished at, latency) of each health probe
            while (t := time.monotonic()) < t0 + 0.9 * timeout_s:
                assert probe.get("/v2/health/ready").status_code == 200
                answered.append((time.monotonic(), time.monotonic() - t))
            in_time = [lat for done, lat in answered if done < t0 + timeout_s]
            end = t0 + timeout_s + stretch(2.0)
            closed = [closed_by_server(s, max(end - time.monotonic(), 0.01)) for s in socks]
            took = time.monotonic() - t0
        finally:
            for s in socks:
                s.close()
            release.set()
        assert held.result(30).status_code == 200
    assert len(in_time) >= 3, f"{len(in_time)} health answers while {len(socks)} slow clients held connections"
    assert all(closed), f"{closed.count(False)} slow connections still open after {took:.1f} s"
    lat = sorted(in_time)
    FIGURES["slowloris_ci"] = {
        "connections": len(socks),
        "timeouts_s": round(timeout_s, 2),
        "all_closed_within_s": round(took, 2),
        "health_requests": len(lat),
        "health_p99_s": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 4),
    }


def test_a_slow_but_moving_body_is_not_cut(live_server: Callable[..., Server]) -> None:
    timeout_s = stretch(0.6)  # an idle machine's bound; the gaps below keep half of it as room on a loaded one
    srv = live_server(http_header_timeout_s=2 * timeout_s, http_body_timeout_s=timeout_s)
    body = png()

    def trickle() -> Iterator[bytes]:
        for i in range(0, len(body), len(body) // 4 + 1):
            time.sleep(timeout_s / 2)  # 4 pieces: twice the body timeout in total, never idle half as long
            yield body[i : i + len(body) // 4 + 1]

    r = httpx.post(f"{srv.base}/upscale", content=trickle(), headers={"content-type": "image/png"}, timeout=10)
    assert r.status_code == 200


def test_pipelined_requests_then_hang_up_log_no_traceback(
    live_server: Callable[..., Server], caplog: pytest.LogCaptureFixture
) -> None:
    srv = live_server(max_batch_size=1)
    body = png()
    one = b"POST /upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(body)
    caplog.set_level(logging.INFO)
    for linger in (False, True):
        for _ in range(3):
            s = raw(srv)
            if linger:  # close with RST instead of FIN
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.sendall((one + body) * 4)
            s.close()
    time.sleep(stretch(1.0))  # room for the hang-ups to be handled (and logged, if they log a traceback)
    assert srv.client.post("/upscale", content=body, headers={"content-type": "image/png"}).status_code == 200
    bad = [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert not bad, [(r.name, r.getMessage()) for r in bad]
