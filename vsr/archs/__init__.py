"""Architectures: one explicit registry, no folder scanning. Both training and the service import from here.

Every model takes RGB in [0, 1], NCHW float, and returns RGB in [0, 1] (unclamped) ``scale`` times larger.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from vsr.archs.dctlsa import DCTLSA
from vsr.archs.edsr import EDSR
from vsr.archs.rlfn import RLFN
from vsr.archs.student import RepStudent

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "rep_student": RepStudent,
    "edsr": EDSR,
    "rlfn": RLFN,
    "dctlsa": DCTLSA,
}


def build(arch: str, config: dict[str, Any]) -> nn.Module:
    """Instantiate ``arch`` from the registry with keyword-only ``config``."""
    try:
        factory = REGISTRY[arch]
    except KeyError:
        raise ValueError(f"unknown architecture {arch!r}; known: {sorted(REGISTRY)}") from None
    return factory(**config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
