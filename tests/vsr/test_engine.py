"""The shared engine's hooks: what a host injects (the service: metrics and a fault hook) is called where the
engine says, and the engine itself needs no Prometheus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.support.media import rgb
from vsr.engine import Engine, EngineHooks, EngineOptions, load_for

pytestmark = pytest.mark.usefixtures("one_thread")


def test_hooks_see_every_attempt_and_every_oom(tiny_artifact: dict[str, Path]) -> None:
    attempts: list[int] = []
    ooms: list[int] = []

    def fail_batches(name: str, frames: np.ndarray) -> None:
        attempts.append(len(frames))
        if len(frames) > 1:  # a batch never fits; single frames do
            raise torch.cuda.OutOfMemoryError("simulated")

    hooks = EngineHooks(before_attempt=fail_batches, on_oom=lambda: ooms.append(len(attempts)))
    models = load_for([str(tiny_artifact["x2"])], torch.device("cpu"), "fp32")
    engine = Engine(models, device=torch.device("cpu"), dtype="fp32", options=EngineOptions(hooks=hooks))
    frames = np.stack([rgb(seed=i) for i in range(4)])
    out = engine.run("x2", frames)
    assert attempts == [4, 2, 1, 1, 2, 1, 1]  # split in halves until each attempt fits
    assert ooms == [1, 2, 5]  # one call per OOM, after the attempt that raised it
    plain = Engine(models, device=torch.device("cpu"), dtype="fp32")  # no hooks: the same frames out
    np.testing.assert_array_equal(out, plain.run("x2", frames))
