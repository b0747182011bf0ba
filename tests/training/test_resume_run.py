"""A run stopped by SIGTERM writes its checkpoint and leaves; ``vsr distill --resume RUN`` finishes it with exactly
the weights of a run that was never stopped (weights, optimiser, schedule, EMA, RNG and crop-pool position)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.support.training import tiny_config, tiny_workdir

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tiny_workdir(tmp_path)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ck = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)
    return {f"{part}.{k}": v for part in ("model", "ema") for k, v in (ck[part] or {}).items()}


def test_sigterm_then_resume_equals_an_unbroken_run(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import training.run as run_mod
    from vsr_cli.main import main

    kw: dict[str, Any] = dict(steps=8, batch=4, ema=0.9, eval_every=4, ckpt_every=4)
    whole = run_mod.train(tiny_config(workdir, name="whole", **kw), progress=False)
    assert whole["steps"] == 8

    real_step = run_mod.train_step

    def step_then_sigterm_at_3(state: Any, *a: Any) -> dict[str, float]:
        out = real_step(state, *a)
        if state.step == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a container stop would
        return out

    monkeypatch.setattr(run_mod, "train_step", step_then_sigterm_at_3)
    stopped = run_mod.train(tiny_config(workdir, name="broken", **kw), progress=False)
    run = workdir / "runs" / "broken"
    assert stopped == {"stopped": True, "steps": 3, "run": str(run)}
    assert torch.load(run / "checkpoint.pt", weights_only=False)["step"] == 3  # not the periodic one (4)
    monkeypatch.setattr(run_mod, "train_step", real_step)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)

    assert main(["--log-level", "WARNING", "distill", "--resume", str(run)]) == 0
    a, b = _weights(workdir / "runs" / "whole"), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((run / "config.json").read_text())["name"] == "broken"


def test_resume_needs_a_checkpoint(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vsr_cli.main import main

    (workdir / "runs" / "empty").mkdir(parents=True)
    assert main(["distill", "--resume", str(workdir / "runs" / "empty")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no checkpoint to resume")
