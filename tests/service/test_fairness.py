"""Past capacity: every source gets a fair share of the worker, a flood cannot turn the cameras away, the overload
state is reported, and health and uploads stay responsive (200 or 503 + Retry-After, never a hang)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

import httpx
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.batcher import Batcher, QueueFull
from service.metrics import Metrics
from service.workload import WorkerShare
from tests.support.live import Server, wait_until
from tests.support.media import make_video, png
from tests.support.timing import stretch

TIMEOUT = 30.0


class SlowEngine:
    """Takes ``per_pixel_s`` x pixels per frame (a sleep): far slower than the sources below submit."""

    names = ("m",)

    def __init__(self, per_pixel_s: float = 2e-5) -> None:
        self.per_pixel_s = per_pixel_s
        self.served = 0

    def frame_bytes(self, model: str, shape: tuple[int, ...]) -> int:
        return int(np.prod(shape))  # never asked: these batchers have no memory budget

    def run(self, model: str, frames: np.ndarray) -> np.ndarray:
        time.sleep(self.per_pixel_s * frames.shape[0] * frames.shape[1] * frames.shape[2])
        self.served += len(frames)
        return frames


class Source(threading.Thread):
    """A camera faster than the worker, as the stream pipeline drives the batcher: ``pending`` frames in it, the next
    sent the moment one comes back (from the future's callback, so this thread's scheduling plays no part).
    ``pending=0``: a flood (a large OIP batch) that submits as fast as it can and retries at once on 503."""

    def __init__(self, b: Batcher, name: str, stop: threading.Event, *, side: int = 10, pending: int = 2) -> None:
        super().__init__(name=name, daemon=True)
        self.b, self.stop, self.pending = b, stop, pending
        self.frame = np.zeros((side, side, 3), np.uint8)
        self.served = self.refused = 0
        self.owed = 0  # frames refused (503) that the camera still has to send
        self.lock = threading.Lock()

    def send(self) -> bool:
        try:
            self.b.submit(self.frame, model="m", source=self.name).add_done_callback(self.done)
            return True
        except QueueFull:
            with self.lock:
                self.refused += 1
                self.owed += 1
            return False

    def done(self, fut: Future[np.ndarray]) -> None:
        if fut.cancelled() or fut.exception() is not None:
            return  # failed at close: not served
        with self.lock:
            self.served += 1
        if not self.stop.is_set():
            self.send()

    def run(self) -> None:
        for _ in range(self.pending):
            self.send()
        while not self.stop.is_set():
            if self.pending == 0:
                self.send()
            elif self.owed:
                with self.lock:
                    self.owed -= 1
                if not self.send():
                    time.sleep(0.001)
            else:
                time.sleep(0.001)


def run_sources(b: Batcher, engine: SlowEngine, sources: list[Source], frames: int) -> None:
    for s in sources:
        s.start()
    assert wait_until(lambda: engine.served >= frames, TIMEOUT)
    sources[0].stop.set()
    for s in sources:
        s.join(TIMEOUT)


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


def test_four_streams_and_a_flood_share_the_worker(metrics: Metrics) -> None:
    # The share is charged in measured worker time, so a stall of the worker thread (a loaded machine, another
    # thread holding the GIL) counts against the frame it hit: 12 ms frames and ~80 a source keep a 0.1-0.2 s stall
    # well inside the 0.7 ratio below (at 6 ms and ~60 a source, one such stall broke it on a loaded 2-core box).
    engine = SlowEngine(per_pixel_s=4e-5)
    b = Batcher(engine, max_batch_size=1, queue_limit=16, metrics=metrics).start()
    stop = threading.Event()
    streams = [Source(b, f"stream:cam{i}", stop) for i in range(4)]
    flood = Source(b, "oip", stop, pending=0)  # e.g. a large OIP batch: as much as the queue takes
    run_sources(b, engine, [*streams, flood], 400)
    b.close(drain=False, timeout=TIMEOUT)
    served = [s.served for s in streams]
    assert min(served) >= 0.7 * max(served), served  # no camera starves
    # the flood fills the queue (and is refused) but gets one share, like each camera: it cannot keep them out
    assert flood.refused > 0 and min(served) >= 0.7 * flood.served, (flood.served, served)
    seconds = [metrics.registry.get_sample_value("vsr_worker_seconds_total", {"source": s.name}) for s in streams]
    assert all(t is not None and t > 0 for t in seconds) and min(seconds) >= 0.7 * max(seconds), seconds  # type: ignore[operator,type-var]


def test_the_share_is_worker_time_not_frames() -> None:
    engine = SlowEngine(per_pixel_s=1e-4)  # 20 ms a small frame: the sources' polling is no bottleneck
    b = Batcher(engine, max_batch_size=1, queue_limit=16).start()
    stop = threading.Event()
    small = Source(b, "stream:small", stop, side=8, pending=4)
    big = Source(b, "stream:big", stop, side=16, pending=4)  # 4x the pixels
    run_sources(b, engine, [small, big], 100)
    shares = b.load().shares
    b.close(drain=False, timeout=TIMEOUT)
    assert shares["stream:small"] >= 0.7 * shares["stream:big"] and shares["stream:big"] >= 0.7 * shares["stream:small"]
    assert small.served >= 2.5 * big.served, (small.served, big.served)  # so the small camera gets more frames


def test_overload_needs_a_busy_worker_and_waiting_work() -> None:
    now = [0.0]
    share = WorkerShare(window_s=10.0, clock=lambda: now[0])
    for _ in range(10):  # busy all the time, work always waiting: overloaded
        now[0] += 1.0
        share.record({"stream:a": 100, "stream:b": 100}, 1.0, backlog=True)
    load = share.load()
    assert load.overloaded and load.busy == 1.0 and load.shares == {"stream:a": 0.5, "stream:b": 0.5}
    for _ in range(10):  # busy, but each batch took all there was (one camera that fits): not overloaded
        now[0] += 1.0
        share.record({"stream:a": 100}, 1.0, backlog=False)
    assert not share.load().overloaded and share.load().shares == {"stream:a": 1.0}
    for _ in range(10):  # waiting work but an idle worker half the time: not overloaded
        now[0] += 1.0
        share.record({"stream:a": 100}, 0.5, backlog=True)
    assert not share.load().overloaded and share.load().busy == 0.5
    now[0] += 20.0
    assert share.load() == type(share.load())(0.0, False, {})  # the window forgets


def test_an_idle_source_comes_back_level_not_with_credit() -> None:
    share = WorkerShare()
    share.arrive("a")
    share.record({"a": 1}, 100.0, backlog=False)  # a ran alone for a long time
    share.arrive("b")  # b was idle: it starts level with the least-served waiting source...
    share.settle(["a", "b"])
    share.record({"b": 1}, 1.0, backlog=True)
    share.arrive("c")  # ...so a newcomer cannot starve b with a credit of 100 s either
    share.settle(["b", "c"])
    assert share.order(["a", "c", "b"]) == ["c", "b", "a"]
    assert share.served["c"] == share.vtime


def test_upload_and_health_answer_while_cameras_overload_the_worker(
    live_server: Callable[..., Server], tmp_path: Path
) -> None:
    camera = tmp_path / "cam.mp4"
    make_video(camera, "mp4", frames=60, width=64, height=48, fps=30)
    streams = [{"url": f"file://{camera}", "name": f"cam{i}"} for i in range(4)]
    svc = live_server(streams=streams, stream_allow_file=True, queue_limit=4, request_timeout_s=5.0)

    def slow(model: str, frames: np.ndarray) -> None:  # the worker carries ~one 30 fps camera, not four
        time.sleep(0.03)

    svc.app.state.engine.fault_hook = slow

    def worker() -> dict:
        return svc.client.get("/stream").json()["worker"]

    assert wait_until(lambda: worker()["overloaded"], TIMEOUT), worker()
    for _ in range(3):  # "never a hang": answered within an idle machine's 10 s stretched by the contention now
        bound = stretch(10.0)
        t = time.monotonic()
        assert httpx.get(f"{svc.base}/v2/health/ready", timeout=bound / 2).status_code == 200
        r = httpx.post(f"{svc.base}/upscale", content=png(), headers={"content-type": "image/png"}, timeout=bound)
        assert r.status_code == 200 or (r.status_code == 503 and int(r.headers["retry-after"]) >= 1), r.text
        assert time.monotonic() - t < bound
    body = svc.client.get("/stream").json()
    shares = [s["worker_share"] for s in body["streams"]]
    assert len(shares) == 4 and min(shares) >= 0.7 * max(shares) > 0, body["worker"]
    assert svc.sample("vsr_overloaded") == 1.0
    page = svc.client.get("/static/app.js").text
    assert "worker share" in page and "OVERLOADED" in page
