"""Export a trained model as an artifact (fused safetensors + JSON metadata), and to ONNX with a parity check."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vsr.archs import build, count_parameters
from vsr.archs.student import RepStudent, fused_state_dict
from vsr.artifact import ArtifactMeta, git_commit, now_iso, save_artifact
from vsr.luma import input_space


def inference_layout(model: nn.Module, arch: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, config) of the model as the service runs it: RepStudent fused into plain convs."""
    cfg = dict(getattr(model, "_vsr_config", {}))
    if isinstance(model, RepStudent):
        channels = model.head.out_ch if hasattr(model.head, "out_ch") else model.head.out_channels
        cfg = {"scale": model.scale, "channels": channels, "depth": len(model.body), "fused": True}
        if model.colors != 3:
            cfg["colors"] = model.colors
        if model.unshuffle > 1:
            cfg["unshuffle"] = model.unshuffle
        # a model built already fused (e.g. fine-tuned from a bundled artifact) has no RepConv left to fuse
        return fused_state_dict(model) or {k: v.detach().clone() for k, v in model.state_dict().items()}, cfg
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, cfg


def export_artifact(
    model: nn.Module,
    *,
    out_dir: str | Path,
    name: str,
    arch: str,
    training: dict[str, Any],
    data: dict[str, Any],
    scores: dict[str, Any],
    config: dict[str, Any] | None = None,
    license: str | None = None,
) -> Path:
    state, cfg = inference_layout(model, arch)
    if config is not None and arch != "rep_student":
        cfg = config
    if not cfg:
        cfg = dict(training.get("config", {}).get("arch_config", {}))
    fresh = build(arch, cfg)
    fresh.load_state_dict(state, strict=True)  # validate before writing
    meta = ArtifactMeta(
        name=name,
        arch=arch,
        config=cfg,
        scale=int(cfg.get("scale", getattr(model, "scale", 1))),
        parameters=count_parameters(fresh),
        created=now_iso(),
        git_commit=git_commit(),
        data=data,
        training=training,
        scores=scores,
        license=license,
        input_space=input_space(fresh),
    )
    return save_artifact(out_dir, state=state, meta=meta)


def export_onnx(model: nn.Module, path: str | Path, *, opset: int = 17, check: bool = True) -> dict[str, Any]:
    """Export with dynamic batch/H/W and compare to PyTorch on a random frame; returns the max abs difference.

    A luma model (one channel in and out) exports as it is, input ``lr`` N1hw luma; a :class:`LumaAsRGB`-wrapped
    one exports RGB in/out with the colour conversion and chroma upsampling inside the graph."""
    model = model.eval().float()
    colors = int(getattr(model, "colors", 3))
    x = torch.rand(1, colors, 40, 56)
    torch.onnx.export(
        model,
        (x,),
        str(path),
        opset_version=opset,
        input_names=["lr"],
        output_names=["sr"],
        dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "H", 3: "W"}},
        dynamo=False,
    )
    if not check:
        return {}
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = torch.rand(2, colors, 37, 61)  # a different shape than the export trace: proves H/W are dynamic
    with torch.inference_mode():
        ref = model(probe).numpy()
    got = sess.run(["sr"], {"lr": probe.numpy()})[0]
    return {
        "max_abs_diff": float(np.abs(ref - got).max()),
        "shape": list(got.shape),
        "input_space": "y" if colors == 1 else "rgb",
    }
