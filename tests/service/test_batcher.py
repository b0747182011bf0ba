"""The batcher on a fake engine: batch formation, deadlines, backpressure, failure isolation, fairness, shutdown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.batcher import QUEUE_SHARE, Batcher, BatcherClosed, DeadlineExceeded, QueueFull
from service.metrics import Metrics
from service.oip_tensors import TensorLimits
from tests.support.timing import stretch

TIMEOUT = 5.0


class FakeEngine:
    """Doubles each pixel value (mod 256) and records every batch; ``gate`` (if set) blocks a batch until set."""

    names = ("m", "other")

    def __init__(self) -> None:
        self.batches: list[tuple[str, list[int]]] = []  # (model, the frames' first pixel values)
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_if: Callable[[np.ndarray], bool] = lambda frames: False

    def frame_bytes(self, model: str, shape: tuple[int, ...]) -> int:
        return int(np.prod(shape))  # never asked: these batchers have no memory budget

    def run(self, model: str, frames: np.ndarray) -> np.ndarray:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(TIMEOUT)
        self.batches.append((model, [int(f[0, 0, 0]) for f in frames]))
        if self.fail_if(frames):
            raise RuntimeError("boom")
        return (frames.astype(np.uint16) * 2 % 256).astype(np.uint8)


def frame(value: int, h: int = 4, w: int = 4) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def make(engine: FakeEngine, metrics: Metrics) -> Iterator[Callable[..., Batcher]]:
    made: list[Batcher] = []

    def factory(**kw: object) -> Batcher:
        opts: dict[str, object] = {"max_batch_size": 4, "max_batch_delay_s": 0.05, "queue_limit": 16}
        opts.update(kw)
        b = Batcher(engine, metrics=metrics, **opts).start()  # type: ignore[arg-type]
        made.append(b)
        return b

    yield factory
    for b in made:
        b.close(drain=False, timeout=TIMEOUT)


def value(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    return metrics.registry.get_sample_value(name, labels or {}) or 0.0


def test_results_match_inputs_and_batch_closes_at_max_size(make: Callable[..., Batcher], engine: FakeEngine) -> None:
    b = make(max_batch_size=4, max_batch_delay_s=10.0)  # only the size can close these batches quickly
    futures = [b.submit(frame(i), model="m", source="s") for i in range(8)]
    for i, f in enumerate(futures):
        assert f.result(TIMEOUT)[0, 0, 0] == i * 2
    assert [len(v) for _, v in engine.batches] == [4, 4]


def test_delay_clock_starts_at_first_item(make: Callable[..., Batcher], engine: FakeEngine) -> None:
    # Wide margins, so a loaded machine (a late sleep, a late wake-up) cannot change the outcome: the second item
    # comes half-way into the window; a clock restarted by it would close the batch half a window late. The window
    # is an idle machine's 2 s stretched by the contention now, so the margin grows with the load.
    delay = stretch(2.0)
    b = make(max_batch_size=8, max_batch_delay_s=delay)
    t0 = time.monotonic()
    first = b.submit(frame(1), model="m", source="s")
    time.sleep(delay / 2)  # the margin below: a loaded machine may run the batch late, but not half a window late
    t1 = time.monotonic()
    second = b.submit(frame(2), model="m", source="s")
    assert t1 < t0 + delay  # it did arrive inside the first item's window
    first.result(delay + TIMEOUT)  # the stretched window can be longer than TIMEOUT on its own
    second.result(TIMEOUT)
    took = time.monotonic() - t0
    assert engine.batches == [("m", [1, 2])]
    assert delay <= took < delay + (t1 - t0)  # closed by the first item's clock, not restarted by the second


def test_only_same_model_and_shape_share_a_batch(make: Callable[..., Batcher], engine: FakeEngine) -> None:
    b = make(max_batch_size=8, max_batch_delay_s=0.05)
    fs = [
        b.submit(frame(1), model="m", source="s"),
        b.submit(frame(2, 6, 4), model="m", source="s"),
        b.submit(frame(3), model="other", source="s"),
        b.submit(frame(4), model="m", source="s"),
    ]
    assert [f.result(TIMEOUT).shape for f in fs] == [(4, 4, 3), (6, 4, 3), (4, 4, 3), (4, 4, 3)]
    assert sorted(engine.batches) == [("m", [1, 4]), ("m", [2]), ("other", [3])]


def test_queue_full_raises_at_once_and_counts(
    make: Callable[..., Batcher], engine: FakeEngine, metrics: Metrics
) -> None:
    engine.gate = threading.Event()
    b = make(queue_limit=2, max_batch_size=1, max_batch_delay_s=0.0)
    running = b.submit(frame(0), model="m", source="s")
    assert engine.entered.wait(TIMEOUT)  # the worker holds frame 0; the queue is empty again
    queued = [b.submit(frame(i), model="m", source="s") for i in (1, 2)]
    t0 = time.monotonic()
    with pytest.raises(QueueFull) as e:
        b.submit(frame(3), model="m", source="s")
    # "at once": a submit that waited for room would wait for the gated worker, i.e. forever; 5 s only ends that
    assert time.monotonic() - t0 < 5.0 and e.value.retry_after_s >= 1
    assert value(metrics, "vsr_rejected_total", {"reason": "queue_full"}) == 1
    assert value(metrics, "vsr_queue_depth") == 2
    engine.gate.set()
    for f in (running, *queued):
        f.result(TIMEOUT)
    assert value(metrics, "vsr_queue_depth") == 0


def test_expired_work_fails_and_is_not_run(make: Callable[..., Batcher], engine: FakeEngine, metrics: Metrics) -> None:
    engine.gate = threading.Event()
    b = make(max_batch_size=1, max_batch_delay_s=0.0)
    running = b.submit(frame(0), model="m", source="s")
    assert engine.entered.wait(TIMEOUT)
    late = b.submit(frame(1), model="m", source="s", deadline=time.monotonic() + 0.05)
    fine = b.submit(frame(2), model="m", source="s", deadline=time.monotonic() + 60)
    time.sleep(0.1)
    engine.gate.set()
    with pytest.raises(DeadlineExceeded):
        late.result(TIMEOUT)
    assert fine.result(TIMEOUT)[0, 0, 0] == 4 and running.result(TIMEOUT)[0, 0, 0] == 0
    assert [v for _, v in engine.batches] == [[0], [2]]  # frame 1 never ran
    assert value(metrics, "vsr_rejected_total", {"reason": "deadline"}) == 1


def test_a_failing_batch_fails_only_its_futures(
    make: Callable[..., Batcher], engine: FakeEngine, metrics: Metrics
) -> None:
    engine.fail_if = lambda frames: frames.shape[1] == 6  # the 6-row frames' batch raises
    b = make(max_batch_size=8, max_batch_delay_s=0.05)
    bad = [b.submit(frame(i, 6, 4), model="m", source="s") for i in range(2)]
    good = [b.submit(frame(i), model="m", source="s") for i in range(2)]
    for f in bad:
        with pytest.raises(RuntimeError, match="boom"):
            f.result(TIMEOUT)
    assert [f.result(TIMEOUT)[0, 0, 0] for f in good] == [0, 2]
    assert b.submit(frame(7), model="m", source="s").result(TIMEOUT)[0, 0, 0] == 14  # the worker lives on
    assert value(metrics, "vsr_batch_errors_total", {"model": "m"}) == 1


def test_output_count_mismatch_fails_loudly(make: Callable[..., Batcher], engine: FakeEngine) -> None:
    engine.run = lambda model, frames: frames[:1]  # type: ignore[method-assign]
    b = make(max_batch_size=2, max_batch_delay_s=1.0)
    fs = [b.submit(frame(i), model="m", source="s") for i in range(2)]
    for f in fs:
        with pytest.raises(RuntimeError, match="1 outputs for 2 inputs"):
            f.result(TIMEOUT)


def test_sources_are_served_round_robin(make: Callable[..., Batcher], engine: FakeEngine) -> None:
    engine.gate = threading.Event()
    b = make(max_batch_size=3, max_batch_delay_s=0.0)
    blocker = b.submit(frame(99, 2, 2), model="m", source="z")
    assert engine.entered.wait(TIMEOUT)
    busy = [b.submit(frame(i), model="m", source="busy") for i in range(6)]  # a busy source queues first
    quiet = [b.submit(frame(50 + i), model="m", source=f"q{i}") for i in range(2)]
    engine.gate.set()
    for f in (blocker, *busy, *quiet):
        f.result(TIMEOUT)
    first_batch = engine.batches[1][1]
    assert sorted(first_batch) == [0, 50, 51]  # one per source, not three from the busy one


def test_cancelled_work_is_skipped(make: Callable[..., Batcher], engine: FakeEngine) -> None:
    engine.gate = threading.Event()
    b = make(max_batch_size=1, max_batch_delay_s=0.0)
    running = b.submit(frame(0), model="m", source="s")
    assert engine.entered.wait(TIMEOUT)
    gone = b.submit(frame(1), model="m", source="s")
    assert gone.cancel()
    engine.gate.set()
    running.result(TIMEOUT)
    assert b.submit(frame(2), model="m", source="s").result(TIMEOUT)[0, 0, 0] == 4
    assert [v for _, v in engine.batches] == [[0], [2]]


def test_close_drains_in_flight_work(engine: FakeEngine, metrics: Metrics) -> None:
    engine.gate = threading.Event()
    b = Batcher(engine, max_batch_size=2, max_batch_delay_s=0.0, metrics=metrics).start()
    fs = [b.submit(frame(i), model="m", source="s") for i in range(5)]
    assert engine.entered.wait(TIMEOUT)
    threading.Timer(0.05, engine.gate.set).start()
    b.close(drain=True, timeout=TIMEOUT)
    assert [f.result(0)[0, 0, 0] for f in fs] == [0, 2, 4, 6, 8]
    assert not b.alive
    with pytest.raises(BatcherClosed):
        b.submit(frame(1), model="m", source="s")


def test_close_without_drain_fails_queued_work(engine: FakeEngine, metrics: Metrics) -> None:
    engine.gate = threading.Event()
    b = Batcher(engine, max_batch_size=1, max_batch_delay_s=0.0, metrics=metrics).start()
    running = b.submit(frame(0), model="m", source="s")
    assert engine.entered.wait(TIMEOUT)
    queued = [b.submit(frame(i), model="m", source="s") for i in (1, 2)]
    threading.Timer(0.05, engine.gate.set).start()
    b.close(drain=False, timeout=TIMEOUT)
    assert running.result(0)[0, 0, 0] == 0  # the batch in progress still completes
    for f in queued:
        with pytest.raises(BatcherClosed):
            f.result(0)


def test_metrics_move(make: Callable[..., Batcher], metrics: Metrics) -> None:
    b = make(max_batch_size=4, max_batch_delay_s=0.05)
    for f in [b.submit(frame(i), model="m", source=src) for i, src in enumerate("aab")]:
        f.result(TIMEOUT)
    assert value(metrics, "vsr_frames_total", {"source": "a"}) == 2
    assert value(metrics, "vsr_frames_total", {"source": "b"}) == 1
    assert value(metrics, "vsr_batch_size_sum") == 3 and value(metrics, "vsr_batch_size_count") == 1
    assert value(metrics, "vsr_batch_compute_seconds_count") == 1
    assert value(metrics, "vsr_queue_wait_seconds_count") == 3


def test_submit_validates_frames_and_models(make: Callable[..., Batcher]) -> None:
    b = make()
    with pytest.raises(ValueError):
        b.submit(np.zeros((4, 4), np.uint8), model="m", source="s")
    with pytest.raises(ValueError):
        b.submit(np.zeros((4, 4, 3), np.float32), model="m", source="s")
    with pytest.raises(KeyError):
        b.submit(frame(1), model="nope", source="s")


def test_retire_stops_new_work_and_waits_for_work_in_flight(make: Callable[..., Batcher], engine: FakeEngine) -> None:
    """The model repository's unload: no new frames for the model, its frames in flight finish, others go on."""
    engine.gate = threading.Event()
    b = make(max_batch_size=1, max_batch_delay_s=0.0)
    running = b.submit(frame(1), model="m", source="a")
    assert engine.entered.wait(TIMEOUT)
    queued = b.submit(frame(2), model="m", source="a")
    assert not b.gate.retire("m", timeout=0.05)  # two frames of m are still in flight
    with pytest.raises(KeyError, match="unknown model 'm'"):
        b.submit(frame(3), model="m", source="a")
    other = b.submit(frame(4), model="other", source="b")  # other models are not held up
    done = threading.Event()
    threading.Thread(target=lambda: b.gate.retire("m", timeout=TIMEOUT) and done.set()).start()
    assert not done.wait(0.05)
    engine.gate.set()
    assert done.wait(TIMEOUT)  # returned once both frames of m were done, with their results
    assert running.result(TIMEOUT)[0, 0, 0] == 2 and queued.result(TIMEOUT)[0, 0, 0] == 4
    assert other.result(TIMEOUT)[0, 0, 0] == 8
    b.gate.reinstate("m")
    assert b.submit(frame(5), model="m", source="a").result(TIMEOUT)[0, 0, 0] == 10


class PricedEngine(FakeEngine):
    """A FakeEngine with a price per frame, so the batcher keeps a memory budget (and a byte share for its queue)."""

    def frame_bytes(self, model: str, shape: tuple[int, ...]) -> int:
        return 1


@pytest.mark.parametrize(("queue_limit", "budget_frames"), [(16, 5), (3, 50), (16, 0)])
def test_capacity_is_what_the_queue_really_takes(metrics: Metrics, queue_limit: int, budget_frames: int) -> None:
    """The OIP batch capacity (a batch over it is a 413) equals the frames that submit() actually queues for one
    source behind a busy worker before QueueFull, by count or by the queue's share of the memory budget."""
    engine = PricedEngine()
    engine.gate = threading.Event()
    f = frame(1, h=8, w=8)
    budget = QUEUE_SHARE * budget_frames * f.nbytes + QUEUE_SHARE - 1 if budget_frames else None
    b = Batcher(engine, max_batch_size=1, max_batch_delay_s=0.0, queue_limit=queue_limit, memory_budget_bytes=budget)
    b.start()
    try:
        b.submit(frame(0), model="m", source="s")
        assert engine.entered.wait(TIMEOUT)  # the worker holds it: the queue is empty
        queued = 0
        with pytest.raises(QueueFull):
            for _ in range(queue_limit + 1):
                b.submit(f, model="m", source="s")
                queued += 1
        capacity = TensorLimits.for_batcher(10**9, b).batch_capacity(f.nbytes)
        assert capacity == queued == (min(queue_limit, budget_frames) if budget_frames else queue_limit)
    finally:
        engine.gate.set()
        b.close(drain=False, timeout=TIMEOUT)
