"""The stream model ``auto``: the best camera model that fits the frame budget of all live streams (fake costs)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.streams.auto import PROBE_AFTER_S, AutoModel, Load, choose
from service.streams.config import StreamOptions, StreamSpec
from service.streams.manager import PROBE_SOURCE, StreamManager
from service.urlpolicy import UrlPolicy, parse_cidrs
from tests.service.streams.test_pipeline import WAIT_S, FakeBatcher
from tests.support.live import wait_until

# ms per 640x360 frame: "big" is the better camera model, "small" the cheaper one, "x2" a model a stream may name
COST = {"big": 40.0, "small": 15.0, "x2": 20.0}


def cost(model: str, h: int, w: int) -> float:
    return COST[model] * h * w / (360 * 640)


CAM = Load(None, 360, 640, 30.0)  # an auto stream: 30 fps 640x360


def test_one_camera_gets_the_best_model_that_fits() -> None:
    c = choose(["big", "small"], [CAM], cost, budget_ms=1500)
    assert c.model == "big" and c.load == pytest.approx(1200 / 1500, abs=1e-3) and "fits" in c.reason


def test_over_budget_picks_the_cheaper_model() -> None:
    assert choose(["big", "small"], [CAM], cost, budget_ms=750).model == "small"  # 1200 ms/s of 750: too much
    two = choose(["big", "small"], [CAM, CAM], cost, budget_ms=1500)  # two cameras: 2400 with big, 900 with small
    assert two.model == "small" and two.load == pytest.approx(0.6)


def test_named_streams_count_first_and_none_fitting_gives_the_cheapest() -> None:
    named = Load("x2", 360, 640, 30.0)  # 600 ms/s whatever auto decides
    c = choose(["big", "small"], [named, CAM], cost, budget_ms=1000)
    assert c.model == "small" and c.load > 1 and "no camera model fits" in c.reason


def test_unknown_sizes_cost_nothing_until_the_source_reports() -> None:
    assert choose(["big", "small"], [Load(None, None, None, None)] * 3, cost, budget_ms=100).model == "big"


def test_a_costlier_model_comes_back_only_with_margin() -> None:
    budget = 1250.0  # big needs 1200: fits, but not within 90 % of the budget
    assert choose(["big", "small"], [CAM], cost, budget_ms=budget).model == "big"
    assert choose(["big", "small"], [CAM], cost, budget_ms=budget, current="small").model == "small"
    assert choose(["big", "small"], [CAM], cost, budget_ms=1400, current="small").model == "big"


@pytest.fixture
def manager() -> Iterator[tuple[StreamManager, FakeBatcher, Metrics]]:
    silent = socket.socket()  # accepts and never speaks: the streams stay "connecting", fed by hand
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    metrics = Metrics(CollectorRegistry())
    batcher = FakeBatcher()
    auto = AutoModel(["big", "small"], cost, budget=1.5, on_choice=lambda c: metrics.stream_budget.set(c.load))
    mgr = StreamManager(
        submit=batcher.submit,
        models={"big": 2, "small": 2, "x2": 2},
        metrics=metrics,
        policy=UrlPolicy(allow_cidrs=parse_cidrs("127.0.0.0/8")),
        opts=StreamOptions(open_timeout_s=0.5, read_timeout_s=0.5, backoff_base_s=0.05, backoff_max_s=0.1),
        default_model="big",
        auto=auto,
    )
    mgr.url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/cam"  # type: ignore[attr-defined]
    yield mgr, batcher, metrics
    mgr.close()
    silent.close()


def test_streams_switch_as_cameras_come_and_go(manager: tuple[StreamManager, FakeBatcher, Metrics]) -> None:
    mgr, batcher, metrics = manager
    url = mgr.url  # type: ignore[attr-defined]
    first = mgr.add(StreamSpec(url=url, name="a"))
    named = mgr.add(StreamSpec(url=url, name="n", model="x2"))
    first.sink.set_source(640, 360, 30.0)  # what the reader reports once connected (its sink)
    named.sink.set_source(640, 360, 30.0)
    mgr.decide()  # 1200 + 600 ms/s of a 1500 budget: big does not fit
    assert (first.model, named.model) == ("small", "x2")
    assert first.info().model_choice.mode == "auto" and named.info().model_choice.mode == "named"
    first.sink.offer(np.zeros((4, 6, 3), np.uint8), time.monotonic())
    assert wait_until(lambda: len(batcher.calls) == 1, WAIT_S, step=0.005)
    assert batcher.calls[0][1]["model"] == "small"

    mgr.remove(named.id)  # the budget frees: the auto stream goes back to the better model, same connection
    assert first.model == "big" and "fits" in first.info().model_choice.reason
    assert first.stats.reconnects == 0
    batcher.futures[0].set_result(np.zeros((8, 12, 3), np.uint8))
    first.sink.offer(np.zeros((4, 6, 3), np.uint8), time.monotonic())
    assert wait_until(lambda: len(batcher.calls) == 2, WAIT_S, step=0.005)
    assert batcher.calls[1][1]["model"] == "big"
    r = metrics.registry
    assert r.get_sample_value("vsr_stream_model", {"stream": "a", "model": "big"}) == 1
    assert r.get_sample_value("vsr_stream_model", {"stream": "a", "model": "small"}) is None
    assert r.get_sample_value("vsr_stream_budget_ratio") == pytest.approx(0.8)


class _Stream:
    """What the chooser reads and sets on a stream (the AutoStream protocol), without a pipeline."""

    def __init__(self, load: Load, auto: bool = True) -> None:
        self.name, self.auto, self.model, self._load = "s", auto, "", load

    def load(self) -> Load:
        return self._load

    def switch_model(self, model: str, reason: str) -> None:
        self.model = model


def test_an_idle_better_candidate_is_re_timed_and_taken_back() -> None:
    """The better model's figure was taken under a load that has gone: it is probed on the stream's frame size
    (not more often than PROBE_AFTER_S), and once the probe has re-timed it, it fits again."""
    costs = dict(COST, big=60.0)  # big looked dear when it last ran (1800 ms/s of a 1500 budget)
    ages = {"big": 0.0, "small": 0.0}
    now = [0.0]
    auto = AutoModel(
        ["big", "small"],
        lambda m, h, w: costs[m] * h * w / (360 * 640),
        budget=1.5,
        age=ages.__getitem__,
        clock=lambda: now[0],
    )
    cams = [
        _Stream(Load(None, 360, 640, 30.0)),
        _Stream(Load(None, 180, 320, 30.0)),
        _Stream(Load("x2", 180, 320, 30.0), auto=False),
    ]
    assert auto.decide(cams).model == "small"
    assert auto.probe(cams) is None  # big's figure is fresh
    ages["big"] = PROBE_AFTER_S + 1
    assert auto.probe(cams) == ("big", 360, 640)  # the largest auto stream's size
    assert auto.probe(cams) is None  # asked for already: not again before PROBE_AFTER_S
    now[0] += PROBE_AFTER_S + 1
    assert auto.probe(cams) == ("big", 360, 640)  # the first probe got lost (queue full): ask again
    costs["big"], ages["big"] = 30.0, 0.0  # what the probe measured: 900 + 225 + 150 ms/s now
    assert auto.decide(cams).model == "big"
    assert auto.probe(cams) is None  # the best candidate runs: nothing to re-time
    assert AutoModel(["big", "small"], cost).probe(cams) is None  # no ages: never probes


def test_the_manager_sends_probe_frames_through_the_worker(manager: tuple[StreamManager, FakeBatcher, Metrics]) -> None:
    mgr, batcher, _ = manager
    assert mgr.auto is not None
    mgr.auto.age = lambda m: 1e9  # every figure is old
    a = mgr.add(StreamSpec(url=mgr.url, name="a"))  # type: ignore[attr-defined]
    b = mgr.add(StreamSpec(url=mgr.url, name="b"))  # type: ignore[attr-defined]
    a.sink.set_source(640, 360, 30.0)
    b.sink.set_source(640, 360, 30.0)
    mgr.decide()  # 2400 ms/s with big of 1500: small
    assert a.model == "small"
    mgr._probe()
    frame, kw = batcher.calls[-1]
    assert kw["model"] == "big" and kw["source"] == PROBE_SOURCE and frame.shape == (360, 640, 3)
    batcher.futures[-1].set_exception(RuntimeError("worker fault"))  # a failed probe is only a figure not taken
    n = len(batcher.calls)
    mgr._probe()  # asked for already
    assert len(batcher.calls) == n
    batcher.full = True
    mgr.auto._probed.clear()
    mgr._probe()  # a full queue: no probe, no error
    assert len(batcher.calls) == n
