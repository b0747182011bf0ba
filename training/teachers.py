"""Pretrained teachers from weight files (architecture code is ours, in ``vsr.archs``; weights load strict).

Supported: RLFN and RLFN-S (bytedance/RLFN, Apache-2.0) and DCTLSA (zengkun301/DCTLSA, Apache-2.0), detected from the
state dict's keys. Our own EDSR teachers are artifacts and load through :func:`vsr.artifact.load_artifact`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsr.archs import build
from vsr.archs.dctlsa import dctlsa_config_from_state
from vsr.archs.rlfn import rlfn_config_from_state

# published weight files: (registry arch, keys that identify its state dict, its config from the weights' shapes)
PUBLISHED: list[tuple[str, tuple[str, ...], Callable[[dict[str, torch.Tensor]], dict[str, Any]]]] = [
    ("rlfn", ("conv_1.weight", "block_1.esa.conv1.weight"), rlfn_config_from_state),
    ("dctlsa", ("fea_conv.weight", "B1.body.0.transformer_body.0.blocks.0.attn.qkv.weight"), dctlsa_config_from_state),
]


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "params" in obj and isinstance(obj["params"], dict):
        obj = obj["params"]
    return {k.removeprefix("module."): v for k, v in obj.items()}


def load_teacher(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load a teacher from a ``.pth`` weight file or a vsr artifact; returns (frozen model, description)."""
    p = Path(path)
    if p.is_dir() or p.suffix in (".json", ".safetensors"):
        from vsr.artifact import load_artifact

        model, meta = load_artifact(p)
        desc = {"source": str(p), "arch": meta.arch, "config": meta.config, "scale": meta.scale}
    else:
        state = _read_state(p)
        known = next((k for k in PUBLISHED if all(key in state for key in k[1])), None)
        if known is None:
            raise ValueError(f"{p}: unrecognised teacher weights (supported: RLFN, RLFN-S, DCTLSA, vsr artifacts)")
        arch, _, config_from_state = known
        cfg = config_from_state(state)
        model = build(arch, cfg)
        model.load_state_dict(state, strict=True)
        desc = {"source": p.name, "arch": arch, "config": cfg, "scale": cfg["scale"]}
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, desc


def is_weight_file(path: str | Path) -> bool:
    """A ``.pth``/``.pt`` weight file (published teacher weights), not a vsr artifact (folder, ``.json``, name)."""
    return Path(path).suffix in (".pth", ".pt")


def init_state(path: str | Path, arch: str, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of the teacher file ``path`` for a run whose model is ``arch`` built with ``config``.

    A fine-tune must start from exactly the file's network: the arch and the config derived from the weights' shapes
    must equal the run's (``rgb_range`` is not in the weights, so a config that names it is refused, not guessed)."""
    model, desc = load_teacher(path)
    if desc["arch"] != arch or desc["config"] != config:
        raise ValueError(f"init {path} is {desc['arch']} {desc['config']}; the run's model is {arch} {config}")
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
