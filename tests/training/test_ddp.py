"""``vsr distill`` under ``torchrun --nproc_per_node=2`` on CPU (gloo on loopback): DDP keeps the ranks' weights
identical while each trains on its own shard; rank 0 alone logs and writes; a run resumes with another world size.

Costs three interpreter starts per torchrun (launcher + 2 ranks) on tiny data: a few seconds of CPU each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.support.env import REPO
from tests.support.training import tiny_config, tiny_workdir

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tiny_workdir(tmp_path)


def write_config(root: Path, **kw: object) -> Path:
    """The tiny run (tests/support/training.py) for 4 steps of batch 4 per rank, as a --config file."""
    cfg = tiny_config(root, name="ddp", steps=4, batch=4, ema=0.9, threads=1, eval_every=2, ckpt_every=2, pool=32)
    path = root / "cfg.json"
    path.write_text(json.dumps(cfg.to_dict() | kw))
    return path


def run(cmd: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env |= {"OMP_NUM_THREADS": "1", "VSR_LOG_FORMAT": "json"}
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-4000:]}"
    return r


def torchrun(n: int) -> list[str]:
    """torchrun (the launcher module, so no PATH lookup); both ranks' stdout/stderr pass through to ours."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"]


def test_ranks_hold_identical_weights_after_a_step(workdir: Path) -> None:
    cfg = write_config(workdir, alpha=1.0, teachers=[])  # the worker attaches no soft targets
    out = workdir / "out"
    out.mkdir()
    run([*torchrun(2), str(WORKER), str(cfg), str(out)], cwd=workdir)
    r0, r1 = (json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert set(r0["images"]).isdisjoint(r1["images"]) and len(r0["images"]) + len(r1["images"]) == 4  # shards
    assert r0["batch"] != r1["batch"]  # each rank its own batch (data shard + rank-offset seed)
    assert r0["before"] == r1["before"] != r0["after"]  # same start, and the step changed the weights
    assert r0["after"] == r1["after"]  # DDP averaged the gradients: identical weights on both ranks
    assert r0["without_ddp"] != r1["without_ddp"]  # control: the same step without DDP diverges


def test_distill_under_torchrun_then_resume_with_one_process(workdir: Path) -> None:
    cfg = write_config(workdir)
    r = run([*torchrun(2), "-m", "vsr_cli", "distill", "--config", str(cfg)], cwd=workdir)
    run_dir = workdir / "runs" / "ddp"
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    ours = [x for x in lines if x.get("logger", "").startswith("training")]
    assert ours and "world size 2" in ours[0]["message"], ours[:3]
    # rank 0 alone logs: one "world size" line, one "data ready" line, though two ranks ran
    assert sum("world size" in x["message"] for x in ours) == 1
    assert sum("data ready" in x["message"] for x in ours) == 1
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in rows if "eval" in x] == [2, 4]  # one writer: no duplicated rows
    assert sorted(p.name for p in run_dir.iterdir() if not p.name.startswith(".")) == [
        "artifact",
        "checkpoint.pt",
        "config.json",
        "curves.png",
        "metrics.jsonl",
    ]
    ck = torch.load(run_dir / "checkpoint.pt", weights_only=False)
    assert ck["step"] == 4 and not any(k.startswith("module.") for k in ck["model"])  # the bare model, no wrapper
    summary = json.loads(r.stdout[r.stdout.index("{") :])  # printed once, by rank 0
    assert summary["steps"] == 4 and r.stdout.count('"artifact"') == 1

    # resume the same run with a world size of 1 (no torchrun) for 2 more steps
    r = run([sys.executable, "-m", "vsr_cli", "distill", "--config", str(cfg), "--steps", "6"], cwd=workdir)
    lines = [json.loads(line) for line in r.stderr.splitlines() if line.startswith("{")]
    messages = [x["message"] for x in lines if x.get("logger", "").startswith("training")]
    assert "world size 1" in messages[0] and any("at step 4" in m for m in messages), messages
    assert torch.load(run_dir / "checkpoint.pt", weights_only=False)["step"] == 6
    from vsr.artifact import load_artifact

    assert load_artifact(str(run_dir / "artifact"))[1].training["world_size"] == 1
