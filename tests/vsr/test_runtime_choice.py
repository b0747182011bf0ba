"""The runtime choice among candidates: fastest on the probe, and candidates close there timed again on a larger
frame (a tie on the small probe is per-call work, not what a camera frame costs). Candidates are fakes whose "time"
is a formula of the frame size, so the choice is checked without timing anything."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import torch

from vsr import runner as vr
from vsr.runner import CLOSE, PROBE_SIZE, REFINE_SIZE, choose_runtime


class FakeKernel:
    """ms = fixed + per_kpx x thousands of input pixels."""

    channels = 3
    dtype = torch.float32

    def __init__(self, fixed: float, per_kpx: float) -> None:
        self.fixed, self.per_kpx = fixed, per_kpx

    def ms(self, frames: np.ndarray) -> float:
        return self.fixed + self.per_kpx * frames.shape[1] * frames.shape[2] / 1000

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        return frames.repeat(2, axis=1).repeat(2, axis=2)


def _choose(monkeypatch: pytest.MonkeyPatch, fakes: dict[str, FakeKernel]):
    monkeypatch.setattr(vr, "candidates", lambda *a: [tuple(k.split("/")) for k in fakes])
    monkeypatch.setattr(vr._Builder, "__call__", lambda self, rt, p, rgb=True: fakes[f"{rt}/{p}"])

    def fake_time(fn: partial, repeat: int = 3) -> float:
        return fn.func.ms(fn.args[0]) / 1000  # type: ignore[attr-defined]

    monkeypatch.setattr(vr, "time_call", fake_time)
    return choose_runtime(torch.nn.Conv2d(3, 3, 1), scale=2, device=torch.device("cpu"))


def test_a_tie_on_the_probe_is_decided_on_a_larger_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    probe_kpx = PROBE_SIZE[0] * PROBE_SIZE[1] / 1000
    # bf16: cheaper per call, dearer per pixel; equal on the probe (what x2-camera-lite showed on an AMX Xeon)
    fakes = {
        "torch/fp32": FakeKernel(5.0, 0.5),
        "openvino/bf16": FakeKernel(0.2, 0.060),
        "openvino/int8": FakeKernel(0.2 + 0.02 * probe_kpx, 0.040),
    }
    kernel, info = _choose(monkeypatch, fakes)
    assert info.dtype_ms["openvino/bf16"] == pytest.approx(info.dtype_ms["openvino/int8"], rel=0.05)
    assert kernel is fakes["openvino/int8"] and (info.runtime, info.precision) == ("openvino", "int8")
    refine_kpx = REFINE_SIZE[0] * REFINE_SIZE[1] / 1000
    assert info.refine_ms == pytest.approx(
        {k: fakes[k].fixed + fakes[k].per_kpx * refine_kpx for k in ("openvino/bf16", "openvino/int8")}, abs=0.01
    )  # torch/fp32, far behind on the probe, is not timed again
    assert info.ms == info.dtype_ms["openvino/int8"]  # the cost model starts from the chosen one's probe time


def test_no_close_candidate_keeps_the_probe_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    fakes = {"torch/fp32": FakeKernel(2.0 * CLOSE, 0.001), "openvino/int8": FakeKernel(1.0, 0.001)}
    kernel, info = _choose(monkeypatch, fakes)
    assert kernel is fakes["openvino/int8"] and info.refine_ms == {}
