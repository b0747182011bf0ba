"""The runner's cost figure (what ``auto`` budgets with): a moving average that restarts after a gap."""

from __future__ import annotations

import pytest

from vsr.runner import Cost

MP = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_fresh_calls_are_a_plain_mean_then_a_moving_average() -> None:
    clock = Clock()
    cost = Cost(5.0, MP, clock=clock)  # the probe's figure: 5 ms/MP, replaced by the first call
    assert cost.age_s() == float("inf")
    cost.observe(MP, 0.100)
    assert cost.ms_per_megapixel == pytest.approx(100.0)
    cost.observe(MP, 0.200)
    assert cost.ms_per_megapixel == pytest.approx(150.0)  # mean of two
    for _ in range(30):
        cost.observe(MP, 0.150)
    assert cost.ms_per_megapixel == pytest.approx(150.0, abs=0.5)
    cost.observe(MP, 1.150)  # one slow call among many moves it by WEIGHT only
    assert cost.ms_per_megapixel == pytest.approx(150.0 + Cost.WEIGHT * 1000.0, abs=0.5)
    assert cost.calls == 33


def test_a_stale_figure_restarts_with_the_next_call() -> None:
    clock = Clock()
    cost = Cost(None, MP, clock=clock)
    for _ in range(20):
        cost.observe(MP, 0.300)  # taken under a load that goes away
    clock.t += 5.0
    assert cost.age_s() == pytest.approx(5.0)
    cost.observe(MP, 0.100)
    assert cost.ms_per_megapixel == pytest.approx(300.0 - Cost.WEIGHT * 200.0)  # recent: averaged in
    clock.t += Cost.STALE_S + 1
    cost.observe(MP, 0.100)
    assert cost.ms_per_megapixel == pytest.approx(100.0)  # stale: one probe frame re-times the model
    assert cost.age_s() == 0.0


def test_a_calibration_counts_as_one_fresh_call() -> None:
    clock = Clock()
    cost = Cost(None, MP, clock=clock)
    cost.set(MP // 2, 0.050)
    assert cost.ms_per_megapixel == pytest.approx(100.0) and cost.age_s() == 0.0
    cost.observe(MP, 0.200)
    assert cost.ms_per_megapixel == pytest.approx(150.0)
