"""Typed training configuration, parsed once at the entry point (CLI or JSON) and passed down."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from training.camera_config import CameraConfig
from training.degrade import DegradeConfig

DEFAULT_DATA_ROOT = "../shared/datasets"
DEFAULT_TEACHER = "../shared/teachers/RLFN_x2.pth"  # vsr adapt's teacher
TEST_SET_NAMES = {"set5", "set14"}
TeacherInput = Literal["clean", "degraded"]
TEACHER_INPUTS: tuple[TeacherInput, ...] = get_args(TeacherInput)
STUDENT_DEFAULTS: dict[int, dict[str, int]] = {
    # <= 30k inference parameters (RGB: x2 29,316; x3 27,363; x4 27,680 — its tail alone is 24->48 channels);
    # luma students (arch_config "colors": 1) are smaller at the same width (x2 27,148).
    2: {"channels": 24, "depth": 5, "expand": 2},
    4: {"channels": 22, "depth": 4, "expand": 2},
    3: {"channels": 24, "depth": 4, "expand": 2},
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
    # Validation (step cut, model choice) runs on a held-out slice of the training images: ~1 in ``holdout`` by a
    # hash of the file name, never trained on. ``val_sets`` (folders) replace it when given, e.g. in tests; the
    # test sets (Set5/Set14) are refused: choosing anything on them would tune to them.
    val_sets: list[str] = field(default_factory=list)
    holdout: int = 10
    teachers: list[str] = field(default_factory=list)  # .pth weight files or artifacts
    teacher_weights: list[float] = field(default_factory=list)  # default: equal weights
    # What the teacher labels in a camera run: "clean" (its SR of the clean bicubic LR, whatever the student sees) or
    # "degraded" (its SR of the student's own input: a restoration teacher's de-blocking/denoising reaches the soft
    # target; clean samples keep the clean label).
    teacher_input: TeacherInput = "clean"
    alpha: float = 0.5
    loss: str = "l1"
    feat_beta: float = 0.0  # weight of affinity feature distillation (needs the teacher online)
    feat_adapters: bool = True
    zoomout: int = 0  # images also fed to the teacher as LR ("zoom-out", teacher-only samples; KD twins only)
    zoomout_share: float = 0.25  # share of the crop pool they fill
    degradations: DegradeConfig = field(default_factory=DegradeConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)  # camera clips (codec/noise/blur) instead of crops
    # start from an artifact's weights (e.g. "x2") or a teacher weight file (.pth, same arch and arch_config)
    init: str = ""
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
    amp: str = "auto"  # auto (bf16 on CUDA; on CPU only if measured faster at start-up) | bf16 | fp16 | off
    channels_last: bool = True
    threads: int = 0  # torch CPU threads; 0 = torch default
    pool: int = 8192  # pre-cut crops held in memory (see training.pool)
    pool_refresh: int = 8  # crops re-cut per batch
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
        if any(Path(s).name.lower() in TEST_SET_NAMES for s in self.val_sets):
            raise ValueError("validation on a test set (Set5/Set14) is refused: use the held-out slice")
        if self.zoomout and (self.alpha >= 1.0 or not self.teachers):
            raise ValueError("zoom-out samples are teacher-labelled: they need a teacher and alpha < 1")
        if self.teacher_input not in TEACHER_INPUTS:
            raise ValueError(f"teacher_input must be one of {TEACHER_INPUTS}")
        if self.teacher_input == "degraded" and not (self.camera.enabled and self.teachers and self.alpha < 1.0):
            raise ValueError('teacher_input "degraded" labels camera clips: it needs camera training and KD')
        if self.scale not in (2, 3, 4):
            raise ValueError("scale must be 2, 3 or 4")
        if self.feat_beta > 0 and int(self.arch_config.get("unshuffle", 1)) > 1:
            # its features are 1/unshuffle the teacher's size: the affinity maps would compare different grids
            raise ValueError("feature distillation (feat_beta > 0) needs a student without unshuffle")
        if self.arch == "rep_student" and not self.arch_config:
            self.arch_config = dict(STUDENT_DEFAULTS[self.scale])
        self.arch_config.setdefault("scale", self.scale)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def colors(self) -> int:
        """3 (RGB) or 1 (luma student)."""
        return int(self.arch_config.get("colors", 3))

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
