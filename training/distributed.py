"""Data-parallel training under ``torchrun`` (DDP), set up once at the entry point; the models know nothing of it.

    torchrun --standalone --nproc_per_node=N -m vsr_cli distill --config ...

Every rank trains on its own shard of the training images with its own batch stream (seeds offset by rank);
DDP averages the gradients, so all ranks hold the same weights after every step. Rank 0 alone writes the log
lines, metrics, checkpoints, plot and artifact. ``--batch`` is per rank: the global batch is N x batch.
Without torchrun's environment this is a single process and nothing here does anything.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vsr.engine import pick_device


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: rank ``rank`` of ``world``, on ``device``."""

    device: torch.device
    rank: int = 0
    world: int = 1

    @property
    def master(self) -> bool:
        return self.rank == 0


def init(device_name: str) -> Ranks:
    """Read torchrun's ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``, join the process group (NCCL on CUDA, gloo on CPU)
    and pick this rank's device. Ranks other than 0 log warnings only."""
    device = pick_device(device_name)
    if "RANK" not in os.environ:
        return Ranks(device)
    rank, local, world = (int(os.environ[k]) for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank != 0:
        logging.getLogger().setLevel(logging.WARNING)
    return Ranks(device, rank, world)


def wrap(model: nn.Module, ranks: Ranks) -> nn.Module | None:
    """The DDP wrapper the training step calls (rank 0's weights are broadcast to all ranks here), or None."""
    if not dist.is_initialized():
        return None
    return DistributedDataParallel(model, device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None)


def agree(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a choice made by timing, e.g. the autocast dtype, must not differ)."""
    if not dist.is_initialized():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def close() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
