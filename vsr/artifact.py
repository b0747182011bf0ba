"""The artifact: the only contract between training and serving.

An artifact is a folder (or a ``.json`` path next to its ``.safetensors``) holding

- ``model.safetensors``: the inference-layout weights (re-parameterised blocks already fused);
- ``model.json``: :class:`ArtifactMeta` — architecture, config, scale, parameter count, data, training config,
  evaluation scores, creation time, git commit, format version;
- optionally ``model_int8.xml``/``.bin``: an int8 OpenVINO IR quantised at export, used on CPU only if it lost at most
  0.05 dB PSNR-Y against the fp32 weights on held-out data (``ArtifactMeta.int8``; ``training.quantize``).

Bundled artifacts live in ``vsr/models/<name>/`` and resolve by name (``x2``, ``x4``).
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, Field, field_validator
from safetensors.torch import load_file, save_file
from torch import nn

from vsr.archs import REGISTRY, build, count_parameters
from vsr.luma import LumaAsRGB, input_space

FORMAT_VERSION = 1
BUNDLED_DIR = Path(__file__).parent / "models"
WEIGHTS_NAME = "model.safetensors"
META_NAME = "model.json"


class ArtifactMeta(BaseModel):
    """Validated metadata of an artifact."""

    format_version: int = FORMAT_VERSION
    name: str
    arch: str
    config: dict[str, Any]
    scale: int = Field(ge=1, le=8)
    parameters: int = Field(ge=1)
    created: str
    git_commit: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    scores: dict[str, Any] = Field(default_factory=dict)
    license: str | None = None
    notes: str | None = None
    # "rgb": the model maps RGB to RGB. "y": it sees and predicts only full-range BT.601 luma (one channel);
    # chroma is upscaled outside the model (see vsr.luma).
    input_space: Literal["rgb", "y"] = "rgb"
    # The int8 variant written at export (an OpenVINO IR beside the weights), its check on held-out training data
    # and whether it is used: {"file", "used", "psnr_y", "fp32_psnr_y", "delta_db", "reason", ...} (training.quantize)
    int8: dict[str, Any] | None = None

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, v: str) -> str:
        if v not in REGISTRY:
            raise ValueError(f"unknown architecture {v!r}")
        return v

    @field_validator("format_version")
    @classmethod
    def _supported(cls, v: int) -> int:
        if v > FORMAT_VERSION:
            raise ValueError(f"artifact format {v} is newer than this vsr ({FORMAT_VERSION})")
        return v


class ArtifactError(ValueError):
    """The artifact is missing, malformed or disagrees with its weights."""


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=True)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def save_artifact(
    out_dir: str | Path,
    *,
    state: dict[str, torch.Tensor],
    meta: ArtifactMeta,
) -> Path:
    """Write ``state`` (inference layout) and ``meta``; returns the folder."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().float().contiguous().cpu() for k, v in state.items()}, str(out / WEIGHTS_NAME))
    (out / META_NAME).write_text(json.dumps(meta.model_dump(), indent=2) + "\n")
    return out


def resolve(name_or_path: str | Path) -> Path:
    """Map ``x2``/``x4`` (bundled) or a folder / ``.json`` / ``.safetensors`` path to the artifact folder."""
    p = Path(name_or_path)
    if p.suffix in (".json", ".safetensors"):
        p = p.parent
    if p.is_dir():
        return p
    bundled = BUNDLED_DIR / str(name_or_path)
    if bundled.is_dir():
        return bundled
    known = sorted(d.name for d in BUNDLED_DIR.iterdir() if d.is_dir()) if BUNDLED_DIR.is_dir() else []
    raise ArtifactError(f"no artifact at {name_or_path!r}; bundled models: {known}")


def load_artifact(
    name_or_path: str | Path, *, device: str | torch.device = "cpu", rgb: bool = True
) -> tuple[nn.Module, ArtifactMeta]:
    """Load and validate an artifact; returns the model in eval mode on ``device`` and its metadata.

    A luma artifact (``input_space == "y"``) comes back wrapped in :class:`vsr.luma.LumaAsRGB` (RGB in, RGB out,
    chroma bilinear) so that every RGB caller runs it unchanged; ``rgb=False`` returns the bare Y-to-Y model for
    callers that feed luma straight from a decoder."""
    folder = resolve(name_or_path)
    try:
        meta = ArtifactMeta.model_validate_json((folder / META_NAME).read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{folder} has no {META_NAME}") from None
    except ValueError as e:
        raise ArtifactError(f"{folder / META_NAME} is invalid: {e}") from None
    model = build(meta.arch, meta.config)
    try:
        state = load_file(str(folder / WEIGHTS_NAME))
    except FileNotFoundError:
        raise ArtifactError(f"{folder} has no {WEIGHTS_NAME}") from None
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"weights do not match {meta.arch} {meta.config}: {e}") from None
    if count_parameters(model) != meta.parameters:
        raise ArtifactError(f"parameter count {count_parameters(model)} != metadata {meta.parameters}")
    if getattr(model, "scale", meta.scale) != meta.scale:
        raise ArtifactError("scale in metadata disagrees with the architecture config")
    if input_space(model) != meta.input_space:
        raise ArtifactError(f"input_space {meta.input_space!r} disagrees with the model ({input_space(model)!r})")
    if rgb and meta.input_space == "y":
        model = LumaAsRGB(model, meta.scale)
    return model.eval().to(device), meta


def int8_ir(folder: Path, meta: ArtifactMeta) -> Path | None:
    """The artifact's int8 IR when it has one that passed its check at export (``meta.int8["used"]``), else None."""
    if not meta.int8 or not meta.int8.get("used"):
        return None
    xml = folder / str(meta.int8.get("file", ""))
    if xml.suffix != ".xml" or not xml.is_file() or not xml.with_suffix(".bin").is_file():
        return None
    return xml


def bundled_names() -> list[str]:
    if not BUNDLED_DIR.is_dir():
        return []
    return sorted(d.name for d in BUNDLED_DIR.iterdir() if (d / META_NAME).is_file())
