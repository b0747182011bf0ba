"""Overload and deadlines on the real server over loopback.

A bounded load generator (a fixed number of client threads sending back to back for a fixed time) drives the
service past its capacity — the model is slowed to a known batch time with the engine's fault hook, so capacity is
the same on every machine. Asserted:

- the queue never exceeds ``queue_limit`` (sampled every millisecond);
- every response is 200, 503 with ``Retry-After`` (overloaded) or 504 (deadline) — all with the JSON envelope;
- some requests are admitted and served, and every 503 is counted;
- once the load stops the service answers at once (recovery time measured).

The deadline is an idle machine's 0.5 s stretched by the contention measured at the start, so that a loaded machine
still admits work (at 0.5 s a starved test process answered every admitted request 504). How fast admitted requests
come back is a figure, not asserted: latency targets are the benchmarks' (``bench/service.py``); that a request
waiting on the worker gets its 504 at the deadline, not after the batch, is the second test's event. The figures
(throughput held, p50/p99 of admitted requests, status counts, recovery) are printed and written to
``$VSR_RELIABILITY_DIR/overload.json`` when set.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from tests.support.checks import error_body_ok, report
from tests.support.env import REPO
from tests.support.live import Server, hold_worker, wait_until
from tests.support.media import png
from tests.support.threads import Checked
from tests.support.timing import stretch

BATCH_S = 0.02  # simulated model time per batch
MAX_BATCH = 4
QUEUE_LIMIT = 8
DEADLINE_S = 0.5  # on an idle machine; stretched by the contention at the start
CLIENTS = 24
LOAD_S = 3.0


def slow_model(_model: str, _frames: np.ndarray) -> None:
    time.sleep(BATCH_S)


def test_overload_sheds_load_meets_deadlines_and_recovers(live_server: Callable[..., Server], tmp_path: Path) -> None:
    deadline_s = round(stretch(DEADLINE_S), 2)
    srv = live_server(
        max_batch_size=MAX_BATCH, max_batch_delay_ms=2.0, queue_limit=QUEUE_LIMIT, request_timeout_s=deadline_s
    )
    srv.app.state.engine.fault_hook = slow_model
    batcher = srv.app.state.batcher
    image = tmp_path / "in.png"
    image.write_bytes(png())
    body = image.read_bytes()
    stop = threading.Event()
    max_depth = 0

    def sample_depth() -> None:
        nonlocal max_depth
        while not stop.is_set():
            max_depth = max(max_depth, batcher.qsize())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample_depth)
    sampler.start()
    cmd = [sys.executable, "-m", "tests.reliability.loadgen", "--url", f"{srv.base}/upscale", "--image", str(image)]
    cmd += ["--concurrency", str(CLIENTS), "--seconds", str(LOAD_S)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=LOAD_S + stretch(30), cwd=REPO)
    finally:
        stop.set()
        sampler.join()
    t_stop = time.monotonic()
    assert proc.returncode == 0, proc.stderr[-2000:]
    load = json.loads(proc.stdout)
    results = [(s, t, ra, ok) for s, t, ra, ok, _ in load["results"]]
    elapsed = load["elapsed_s"]

    # recovery: the first request after the load finishes at once
    recovery = []
    for _ in range(5):
        t0 = time.monotonic()
        r = srv.client.post("/upscale", content=body, headers={"content-type": "image/png"})
        recovery.append((r.status_code, time.monotonic() - t0))
    recovered_s = time.monotonic() - t_stop

    statuses = Counter(s for s, *_ in results)
    admitted = sorted(t for s, t, *_ in results if s == 200)
    assert set(statuses) <= {200, 503, 504}, statuses
    assert all(ok for *_, ok in results), "an error without the JSON envelope"
    assert all(ra is not None and int(ra) >= 1 for s, _, ra, _ in results if s == 503)
    assert statuses[503] > 0, f"the load did not exceed capacity: {statuses}"
    assert statuses[200] > 0, f"nothing admitted: {statuses}"
    assert max_depth <= QUEUE_LIMIT
    assert all(s == 200 for s, _ in recovery) and recovery[0][1] < stretch(0.5), recovery
    assert batcher.qsize() == 0 and batcher.alive
    assert srv.sample("vsr_rejected_total", {"reason": "queue_full"}) == statuses[503]

    report(
        "overload",
        {
            "clients": CLIENTS,
            "seconds": round(elapsed, 2),
            "simulated_batch_s": BATCH_S,
            "max_batch_size": MAX_BATCH,
            "capacity_rps": round(MAX_BATCH / BATCH_S),
            "queue_limit": QUEUE_LIMIT,
            "deadline_s": deadline_s,
            "requests": len(results),
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "admitted_rps": round(statuses[200] / elapsed, 1),
            "admitted_p50_s": round(float(np.percentile(admitted, 50)), 4),
            "admitted_p99_s": round(float(np.percentile(admitted, 99)), 4),
            "admitted_max_s": round(admitted[-1], 4),
            "max_queue_depth": max_depth,
            "batches": int(srv.sample("vsr_batch_size_count")),
            "mean_batch_size": round(srv.sample("vsr_batch_size_sum") / max(srv.sample("vsr_batch_size_count"), 1), 2),
            "worker_busy_frac": round(srv.sample("vsr_batch_compute_seconds_sum") / elapsed, 3),
            "first_request_after_load_s": round(recovery[0][1], 4),
            "recovered_within_s": round(recovered_s, 3),
        },
    )


def test_deadline_504_when_the_worker_is_stuck(live_server: Callable[..., Server]) -> None:
    """A batch that runs past every deadline: the requests waiting on it get 504 at their deadline — while the batch
    is still held, not after it ends (an event, so a loaded machine cannot blur it) and not before the deadline —
    and the service serves again as soon as the batch ends."""
    deadline_s = 0.3
    srv = live_server(max_batch_size=1, request_timeout_s=deadline_s)
    release = threading.Event()
    blocked = hold_worker(srv, until=release)  # the first batch is held until the test releases it
    results: list[tuple[int, float]] = []

    def one() -> None:
        t0 = time.monotonic()
        r = httpx.post(f"{srv.base}/upscale", content=png(), headers={"content-type": "image/png"}, timeout=60)
        assert error_body_ok(r)
        results.append((r.status_code, time.monotonic() - t0))

    threads = [Checked(one, name=f"client-{i}") for i in range(4)]
    for t in threads:
        t.start()
    try:
        assert blocked.wait(30), "no request reached the worker"
        # all four answered while the batch is still held: a 504 that waited for the batch would never come here
        assert wait_until(lambda: len(results) == 4, stretch(10.0)), f"{len(results)} of 4 answered"
    finally:
        srv.app.state.engine.fault_hook = None
        release.set()
    for t in threads:
        t.join(30)
    assert [s for s, _ in results] == [504] * 4
    assert min(t for _, t in results) >= deadline_s  # and not before the deadline (client time includes it all)
    assert wait_ok(srv, stretch(5.0))


def wait_ok(srv: Server, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if srv.client.post("/upscale", content=png(), headers={"content-type": "image/png"}).status_code == 200:
            return True
        time.sleep(0.02)
    return False


def test_a_full_queue_refuses_uploads_before_reading_them(live_server: Callable[..., Server]) -> None:
    """With the queue full for its source, a 10 MB upload to ``/upscale`` or OIP is answered 503 + Retry-After after
    its first 64 KiB: it used to be read whole (up to the 25 MB cap) first, by every overloaded request at once."""
    srv = live_server(queue_limit=1, max_batch_size=1, max_batch_delay_ms=0)
    small = {
        "/upscale": (png(24, 32), "image/png"),
        "/v2/models/x2/infer": (json.dumps(_oip_tensor()).encode(), "application/json"),
    }
    host, port = srv.base.removeprefix("http://").split(":")
    for path, (body, ctype) in small.items():
        release = threading.Event()
        blocked = hold_worker(srv, until=release)
        with ThreadPoolExecutor(2) as pool:  # one request runs (held), one waits: the source's queue is full
            running = pool.submit(srv.client.post, path, content=body, headers={"content-type": ctype})
            assert blocked.wait(30)
            queued = pool.submit(srv.client.post, path, content=body, headers={"content-type": ctype})
            assert wait_until(lambda: srv.app.state.batcher.qsize() == 1, 30)
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nContent-Length: {10 << 20}\r\n\r\n"
                sock.sendall(head.encode() + b"\0" * (64 << 10))  # and no more
                answer = sock.recv(4096).decode(errors="replace")
            release.set()
            assert running.result(30).status_code == 200 and queued.result(30).status_code == 200
        assert answer.startswith("HTTP/1.1 503"), (path, answer)
        assert "retry-after: 1" in answer.lower() and "overloaded" in answer, answer
    assert srv.sample("vsr_rejected_total", {"reason": "queue_full"}) == 2


def _oip_tensor() -> dict[str, object]:
    return {"inputs": [{"name": "image", "shape": [2, 2, 3], "datatype": "UINT8", "data": list(range(12))}]}
