"""Staying live, unit level: the pending slot (newest wins), the in-flight cap, stale/overloaded/late/error drops,
backoff, and the shared newest-frame output. A fake batcher hands out futures the test completes by hand."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.batcher import DeadlineExceeded, QueueFull
from service.metrics import Metrics
from service.streams.capture import backoff_delay
from service.streams.config import StreamOptions, StreamSpec, load_stream_specs
from service.streams.output import EncodedFrame, FrameBroadcast
from service.streams.pipeline import Stream, StreamDeps, StreamSetup
from service.urlpolicy import CheckedUrl
from tests.support.live import wait_until

WAIT_S = 20.0  # an upper bound for a condition to come true; a loaded machine may need more than a quiet one


class FakeBatcher:
    def __init__(self) -> None:
        self.calls: list[tuple[np.ndarray, dict]] = []
        self.futures: list[Future[np.ndarray]] = []
        self.full = False
        self.lock = threading.Lock()

    def submit(self, frame: np.ndarray, **kw) -> Future[np.ndarray]:
        if self.full:
            raise QueueFull(1)
        fut: Future[np.ndarray] = Future()
        with self.lock:
            self.calls.append((frame, kw))
            self.futures.append(fut)
        return fut


@pytest.fixture
def rig():
    batcher = FakeBatcher()
    metrics = Metrics(CollectorRegistry())
    src = CheckedUrl("rtsp://h/x", "rtsp://h/x", "rtsp", "h", "1.2.3.4", {}, "rtsp://h/x")
    opts = StreamOptions(max_pending=1, max_frame_age_s=0.5)
    stream = Stream(
        StreamSetup(StreamSpec(url="rtsp://h/x"), "t", "x2", 2, src=src), StreamDeps(batcher.submit, metrics, opts)
    )
    stream.pump.start()  # the reader is driven by hand: stream.sink.offer() as the capture thread would
    yield stream, batcher, metrics
    stream.stop()
    stream.join(2)


def frame(v: int) -> np.ndarray:
    return np.full((4, 6, 3), v, np.uint8)


def test_newest_wins_and_cap(rig) -> None:
    stream, batcher, metrics = rig
    stream.sink.offer(frame(1), time.monotonic())
    assert wait_until(lambda: len(batcher.calls) == 1, WAIT_S, step=0.005)
    for v in (2, 3, 4):  # the cap (1) is reached: these wait in the slot, each replacing the previous
        stream.sink.offer(frame(v), time.monotonic())
    time.sleep(0.05)
    assert len(batcher.calls) == 1 and stream.stats.dropped["queue_full"] == 2
    assert batcher.calls[0][1] == {
        "model": "x2",
        "source": "stream:t",
        "deadline": pytest.approx(time.monotonic(), abs=1),
    }

    batcher.futures[0].set_result(np.full((8, 12, 3), 10, np.uint8))
    assert wait_until(lambda: len(batcher.calls) == 2, WAIT_S, step=0.005)
    assert batcher.calls[1][0][0, 0, 0] == 4  # the newest frame went next
    assert wait_until(lambda: stream.stats.frames_out == 1, WAIT_S, step=0.005)
    out = stream.output.latest
    assert out is not None and (out.width, out.height) == (12, 8) and out.jpeg[:2] == b"\xff\xd8"
    assert (
        metrics.registry.get_sample_value("vsr_stream_dropped_frames_total", {"stream": "t", "reason": "queue_full"})
        == 2
    )


def test_jpeg_only_while_watched_and_once_for_all_viewers(rig) -> None:
    stream, batcher, _ = rig
    stream.sink.offer(frame(1), time.monotonic())
    assert wait_until(lambda: len(batcher.calls) == 1, WAIT_S, step=0.005)
    batcher.futures[0].set_result(np.full((8, 12, 3), 10, np.uint8))
    assert wait_until(lambda: stream.stats.frames_out == 1, WAIT_S, step=0.005)
    unwatched = stream.output.latest
    assert unwatched is not None and not unwatched.encoded  # nobody watching: no JPEG was made
    with stream.output.watching(), stream.output.watching():  # two viewers
        assert stream.output.viewers == 2
        stream.sink.offer(frame(2), time.monotonic())
        assert wait_until(lambda: len(batcher.calls) == 2, WAIT_S, step=0.005)
        batcher.futures[1].set_result(np.full((8, 12, 3), 20, np.uint8))
        assert wait_until(lambda: stream.stats.frames_out == 2, WAIT_S, step=0.005)
        watched = stream.output.latest
        assert watched is not None and watched.seq > unwatched.seq and watched.encoded  # made by the pump
        assert watched.jpeg is watched.jpeg  # one encoding shared by every viewer
    assert stream.output.viewers == 0
    assert unwatched.jpeg[:2] == b"\xff\xd8" and unwatched.encoded  # asked for later (frame.jpg): encoded then


def test_stale_overloaded_error_and_late(rig) -> None:
    stream, batcher, _ = rig
    stream.sink.offer(frame(1), time.monotonic() - 1.0)  # older than max_frame_age_s: never submitted
    assert wait_until(lambda: stream.stats.dropped["stale"] == 1, WAIT_S, step=0.005)
    assert batcher.calls == []

    batcher.full = True
    stream.sink.offer(frame(2), time.monotonic())
    assert wait_until(lambda: stream.stats.dropped["overloaded"] == 1, WAIT_S, step=0.005)
    batcher.full = False

    stream.sink.offer(frame(3), time.monotonic())
    assert wait_until(lambda: len(batcher.futures) == 1, WAIT_S, step=0.005)
    batcher.futures[0].set_exception(DeadlineExceeded("late"))
    assert wait_until(lambda: stream.stats.dropped["stale"] == 2, WAIT_S, step=0.005)

    stream.sink.offer(frame(4), time.monotonic())
    assert wait_until(lambda: len(batcher.futures) == 2, WAIT_S, step=0.005)
    batcher.futures[1].set_exception(RuntimeError("boom"))
    assert wait_until(lambda: stream.stats.dropped["error"] == 1, WAIT_S, step=0.005)
    assert "boom" in stream.stats.last_error


def test_out_of_order_result_is_dropped_as_late() -> None:
    batcher = FakeBatcher()
    src = CheckedUrl("rtsp://h/x", "rtsp://h/x", "rtsp", "h", "1.2.3.4", {}, "rtsp://h/x")
    stream = Stream(
        StreamSetup(StreamSpec(url="rtsp://h/x"), "o", "x2", 2, src=src),
        StreamDeps(batcher.submit, Metrics(CollectorRegistry()), StreamOptions(max_pending=2)),
    )
    stream.pump.start()
    try:
        stream.sink.offer(frame(1), time.monotonic())
        assert wait_until(lambda: len(batcher.calls) == 1, WAIT_S, step=0.005)
        stream.sink.offer(frame(2), time.monotonic())
        assert wait_until(lambda: len(batcher.calls) == 2, WAIT_S, step=0.005)
        batcher.futures[1].set_result(np.zeros((8, 12, 3), np.uint8))
        assert wait_until(lambda: stream.stats.frames_out == 1, WAIT_S, step=0.005)
        batcher.futures[0].set_result(np.zeros((8, 12, 3), np.uint8))
        assert wait_until(lambda: stream.stats.dropped["late"] == 1, WAIT_S, step=0.005)
        assert stream.output.latest.seq == 2
    finally:
        stream.stop()


def test_backoff_grows_with_jitter_and_caps() -> None:
    opts = StreamOptions(backoff_base_s=0.5, backoff_max_s=4.0)
    rng = random.Random(0)
    delays = [backoff_delay(n, opts, rng) for n in range(1, 8)]
    caps = [0.5, 1, 2, 4, 4, 4, 4]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True))
    assert len({round(d, 6) for d in delays[3:]}) > 1  # jittered, not lock-step


def test_broadcast_wakes_async_and_sync_viewers() -> None:
    out = FrameBroadcast()

    async def viewer() -> list[int]:
        seen, seq = [], 0
        while len(seen) < 2:
            f = await out.wait_newer(seq, 2.0)
            assert f is not None
            seen.append(f.seq)
            seq = f.seq
        return seen

    def publisher() -> None:
        for i in (1, 2):
            time.sleep(0.05)
            out.publish(EncodedFrame(i, b"j", 1, 1, time.monotonic()))

    threading.Thread(target=publisher).start()
    assert asyncio.run(viewer()) == [1, 2]
    assert out.wait_newer_sync(1, 0.1).seq == 2 and out.wait_newer_sync(2, 0.05) is None
    out.close()
    assert asyncio.run(out.wait_newer(2, 1.0)) is None


def test_stream_specs_from_json_and_yaml(tmp_path) -> None:
    f = tmp_path / "cams.yml"
    f.write_text("- url: rtsp://10.0.0.2/s\n  name: b\n  transport: udp\n")
    specs = load_stream_specs('[{"url": "rtsp://10.0.0.1/s", "name": "a"}]', f)
    assert [(s.name, s.transport) for s in specs] == [("a", "tcp"), ("b", "udp")]
    with pytest.raises(ValueError):
        load_stream_specs('[{"url": "rtsp://x/", "bogus": 1}]', None)


def test_configured_stream_waits_for_its_host_to_resolve() -> None:
    """A configured camera whose name does not resolve yet (its container is starting) is kept and retried; the
    same name from the API is a 400; a name that resolves to a denied address fails without retrying."""
    from service.streams.manager import StreamManager
    from service.urlpolicy import UnresolvableHost, UrlPolicy, parse_cidrs

    answers: dict[str, list[str]] = {}
    calls: list[str] = []

    def resolver(host, port, family=0, type=0):
        calls.append(host)
        if host not in answers:
            raise OSError(-2, "Name or service not known")
        return [(2, type, 6, "", (a, port)) for a in answers[host]]

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    policy = UrlPolicy(allow_cidrs=parse_cidrs("127.0.0.0/8"), resolver=resolver)
    opts = StreamOptions(open_timeout_s=0.5, read_timeout_s=0.5, backoff_base_s=0.05, backoff_max_s=0.1)
    mgr = StreamManager(
        submit=FakeBatcher().submit, models={"x2": 2}, metrics=Metrics(CollectorRegistry()), policy=policy, opts=opts
    )
    try:
        with pytest.raises(UnresolvableHost):
            mgr.add(StreamSpec(url="rtsp://camera:1/x", name="api"))
        mgr.start_configured(
            [
                StreamSpec(url=f"rtsp://camera:{silent.getsockname()[1]}/demo", name="demo"),
                StreamSpec(url="rtsp://metadata/x", name="evil"),
            ]
        )
        demo, evil = mgr.all()
        assert wait_until(
            lambda: demo.state == "backoff" and "cannot resolve" in (demo.stats.last_error or ""), WAIT_S, step=0.005
        )
        answers["camera"] = ["127.0.0.1"]  # the camera comes up
        answers["metadata"] = ["169.254.169.254"]
        assert wait_until(
            lambda: demo.capture.src is not None and demo.capture.src.address == "127.0.0.1", WAIT_S, step=0.005
        )
        assert wait_until(lambda: evil.state == "failed", WAIT_S, step=0.005)
        assert "metadata" in (evil.stats.last_error or "")
        tries = calls.count("metadata")
        time.sleep(0.3)
        assert calls.count("metadata") == tries  # denied: no more attempts
    finally:
        mgr.close(2)
        silent.close()
