"""Typed training configuration, parsed once at the entry point (CLI or JSON) and passed down."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from training.camera_config import CameraConfig
from training.degrade import DegradeConfig

DEFAULT_DATA_ROOT = "../shared/datasets"
STUDENT_DEFAULTS: dict[int, dict[str, int]] = {
    # <= 30k inference parameters at x2; x4 trades one block for its wider tail (48 output channels).
    2: {"channels": 24, "depth": 5, "expand": 2},
    4: {"channels": 24, "depth": 4, "expand": 2},
    3: {"channels": 24, "depth": 5, "expand": 2},
}


@dataclass
class TrainConfig:
    """Everything one training run needs. ``alpha`` = 1 trains without KD (the baseline twin)."""

    name: str = "student-x2"
    scale: int = 2
    arch: str = "rep_student"
    arch_config: dict[str, Any] = field(default_factory=dict)
    data_root: str = DEFAULT_DATA_ROOT
    train_sets: list[str] = field(default_factory=lambda: ["train/T91", "train/BSD200"])
    val_sets: list[str] = field(default_factory=lambda: ["test/Set5"])
    teachers: list[str] = field(default_factory=list)  # .pth weight files or artifacts
    teacher_weights: list[float] = field(default_factory=list)  # default: equal weights
    alpha: float = 0.5
    loss: str = "l1"
    feat_beta: float = 0.0  # weight of affinity feature distillation (needs the teacher online)
    feat_adapters: bool = True
    degradations: DegradeConfig = field(default_factory=DegradeConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)  # camera clips (codec/noise/blur) instead of crops
    init: str = ""  # start from this artifact's weights (e.g. "x2"), not from scratch
    steps: int = 20000
    batch: int = 32
    patch: int = 32  # LR crop size
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup: int = 500
    weight_decay: float = 0.0
    clip: float = 1.0
    ema: float = 0.999  # 0 disables
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"  # auto | bf16 | fp16 | off
    threads: int = 0  # torch CPU threads; 0 = torch default
    eval_every: int = 1000
    ckpt_every: int = 1000
    out_dir: str = "runs"

    def __post_init__(self) -> None:
        if isinstance(self.degradations, dict):
            kwargs: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in self.degradations.items()}
            self.degradations = DegradeConfig(**kwargs)
        if isinstance(self.camera, dict):
            self.camera = CameraConfig.from_dict(self.camera)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        if self.alpha < 1.0 and not self.teachers:
            raise ValueError("alpha < 1 needs at least one teacher")
        if self.teacher_weights and len(self.teacher_weights) != len(self.teachers):
            raise ValueError("teacher_weights must match teachers")
        if self.scale not in (2, 3, 4):
            raise ValueError("scale must be 2, 3 or 4")
        if self.arch == "rep_student" and not self.arch_config:
            self.arch_config = dict(STUDENT_DEFAULTS[self.scale])
        self.arch_config.setdefault("scale", self.scale)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def data_paths(self, sets: list[str]) -> list[Path]:
        return [Path(self.data_root) / s for s in sets]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def from_json(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
