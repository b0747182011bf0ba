"""Pretrained teachers from weight files (architecture code is ours, in ``vsr.archs``; weights load strict).

Supported: RLFN and RLFN-S (bytedance/RLFN, Apache-2.0), detected from the state dict's keys. Our own EDSR teachers
are artifacts and load through :func:`vsr.artifact.load_artifact`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from vsr.archs.rlfn import RLFN, rlfn_config_from_state


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
        if "conv_1.weight" in state and "block_1.esa.conv1.weight" in state:
            cfg = rlfn_config_from_state(state)
            model = RLFN(**cfg)
            model.load_state_dict(state, strict=True)
            desc = {"source": p.name, "arch": "rlfn", "config": cfg, "scale": cfg["scale"]}
        else:
            raise ValueError(f"{p}: unrecognised teacher weights (supported: RLFN, RLFN-S, vsr artifacts)")
    model.eval()
    for prm in model.parameters():
        prm.requires_grad_(False)
    return model, desc
