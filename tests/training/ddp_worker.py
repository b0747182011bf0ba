"""Run by tests/training/test_ddp.py under ``torchrun --nproc_per_node=2``: one training step per rank, each on its
own shard and batch, through ``training.distributed``; writes what the test compares to ``OUT/rank-<r>.json``.

Also takes the same step without the DDP wrapper on a copy of the state: the control that shows the ranks' batches
really differ (their weights would diverge without DDP's gradient averaging)."""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from training import distributed
from training.config import TrainConfig
from training.loop import build_state, next_batch, prepare_data, step_on


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for v in model.state_dict().values():
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def main(cfg_path: str, out: str) -> None:
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(json.loads(Path(cfg_path).read_text()))
    ranks = distributed.init(cfg.device)
    try:
        source = prepare_data(cfg, ranks.device, [], [], [], shard=(ranks.rank, ranks.world))
        state = build_state(cfg, ranks.device, None)
        state.rng = np.random.default_rng([cfg.seed, ranks.rank, 0])
        before = digest(state.model)
        alone = copy.deepcopy(state)  # model, EMA and optimizer together
        state.ddp = distributed.wrap(state.model, ranks)
        batch = next_batch(source, cfg, state.rng, ranks.device)
        step_on(alone, cfg, batch)  # no DDP: this rank's gradient only
        step_on(state, cfg, batch)
        result = {
            "world": ranks.world,
            "images": sorted(hashlib.sha256(p.hr.tobytes()).hexdigest() for p in source.pairs),
            "before": before,
            "after": digest(state.model),
            "without_ddp": digest(alone.model),
            "batch": hashlib.sha256(batch.lr.numpy().tobytes()).hexdigest(),
        }
        (Path(out) / f"rank-{ranks.rank}.json").write_text(json.dumps(result))
    finally:
        distributed.close()


if __name__ == "__main__":
    main(*sys.argv[1:3])
