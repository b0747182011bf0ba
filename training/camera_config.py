"""Typed configuration of camera training (dataclasses only: the CLI imports this without av or torch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CODECS = {"h264": "libx264", "h265": "libx265"}
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
KERNELS = ("bicubic", "bilinear", "lanczos", "box", "gaussian")


@dataclass(frozen=True)
class CameraDegradation:
    """Probabilities and ranges of each stage of :func:`training.camera.degrade_clip`."""

    blur_prob: float = 0.3
    defocus_radius: tuple[float, float] = (0.5, 1.5)  # HR pixels
    motion_length: tuple[float, float] = (1.0, 4.0)  # HR pixels
    kernels: tuple[str, ...] = KERNELS
    kernel_prob: float = 0.5  # otherwise bicubic, as the clean LR
    noise_prob: float = 0.5
    gauss_sigma: tuple[float, float] = (0.5, 4.0)  # uint8 levels
    photons: tuple[float, float] = (300.0, 3000.0)  # per full-scale pixel; fewer = noisier
    chroma: float = 0.3
    codec_prob: float = 1.0
    codecs: tuple[str, ...] = ("h264", "h265")
    crf: tuple[int, int] = (18, 38)
    presets: tuple[str, ...] = PRESETS
    gop: tuple[int, int] = (4, 30)
    bframes: tuple[int, int] = (0, 3)


@dataclass(frozen=True)
class CameraConfig:
    """Camera training: pool shape, degradation recipe, clean share and the held-out validation slice."""

    enabled: bool = False
    clean_share: float = 0.3  # probability that a training sample's input is the clean LR
    clips: int = 2  # clips per training image
    frames: int = 6  # frames per clip (GOP structure shows from ~4 frames)
    lr_size: int = 96  # LR clip side; smaller images get the largest side that fits
    variants: int = 1  # degraded versions of each clip
    holdout_every: int = 10  # every n-th image (ordered by content hash) is held out for validation; 0 = none
    val_crfs: tuple[int, ...] = (23, 28)  # held-out validation: clean and libx264 at these CRFs
    degradation: CameraDegradation = field(default_factory=CameraDegradation)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CameraConfig:
        def tup(v: Any) -> Any:
            return tuple(v) if isinstance(v, list) else v

        deg = {k: tup(v) for k, v in d.get("degradation", {}).items()}
        return cls(**{**{k: tup(v) for k, v in d.items()}, "degradation": CameraDegradation(**deg)})
