"""Distillation losses for SR (regression): Charbonnier / L1 on pixels, affinity-based feature distillation.

``L = alpha * L_hard(student, HR) + (1 - alpha) * L_soft(student, teacher) + beta * L_feat``.
alpha = 1 is the no-KD baseline; alpha = 0 is pure imitation of the teacher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """sqrt((x-y)^2 + eps^2), a differentiable L1 (Lai et al., LapSRN)."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


PIXEL_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": F.l1_loss,
    "charbonnier": charbonnier,
}


def _masked(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """``fn`` over the samples where ``mask`` (N bool) is True; all samples when ``mask`` is None."""
    if mask is None:
        return fn(pred, target)
    if not bool(mask.any()):
        return pred.sum() * 0.0  # keeps the graph (and the step) valid when a batch holds no ground truth
    return fn(pred[mask], target[mask])


def kd_loss(
    student_out: torch.Tensor,
    hr: torch.Tensor,
    soft: torch.Tensor | None,
    *,
    alpha: float,
    kind: str = "l1",
    has_hr: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted hard + soft pixel loss; returns (loss, parts for logging). ``soft`` may be None only when alpha = 1.

    ``has_hr`` (N bool) marks samples with ground truth: the hard term sees only those, the soft term sees all
    (teacher-labelled "zoom-out" samples reach the student only through it; a no-KD twin ignores them).
    """
    fn = PIXEL_LOSSES[kind]
    hard = _masked(fn, student_out, hr, has_hr)
    if alpha >= 1.0:
        return hard, {"hard": float(hard.detach())}
    if soft is None:
        raise ValueError("alpha < 1 needs teacher outputs")
    soft_loss = fn(student_out, soft)
    loss = alpha * hard + (1.0 - alpha) * soft_loss
    return loss, {"hard": float(hard.detach()), "soft": float(soft_loss.detach())}


def affinity(feat: torch.Tensor) -> torch.Tensor:
    """Spatial affinity (HW x HW cosine similarities) of a feature map, N x HW x HW: width-independent."""
    f = F.normalize(feat.flatten(2), dim=1)  # N C HW
    return f.transpose(1, 2) @ f


def affinity_loss(student_feats: Sequence[torch.Tensor], teacher_feats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between student and teacher affinity matrices of matched layers (FAKD, He et al. 2020).

    Matrices are HW x HW, so features are average-pooled to at most 16x16 first (cost grows with (HW)^2).
    """
    losses = []
    for s, t in zip(student_feats, teacher_feats, strict=True):
        if s.shape[-1] > 16:
            s = F.adaptive_avg_pool2d(s, 16)
            t = F.adaptive_avg_pool2d(t, 16)
        losses.append(F.l1_loss(affinity(s), affinity(t)))
    return torch.stack(losses).mean()


class FeatureAdapters(nn.Module):
    """1x1 adapters mapping student widths to teacher widths, for direct feature regression (FitNets-style)."""

    def __init__(self, *, student_channels: Sequence[int], teacher_channels: Sequence[int]) -> None:
        super().__init__()
        self.adapters = nn.ModuleList(
            nn.Conv2d(s, t, 1) for s, t in zip(student_channels, teacher_channels, strict=True)
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [a(f) for a, f in zip(self.adapters, feats, strict=True)]


def normalize_features(f: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Scale-free features: each sample's map divided by its RMS over (C, H, W).

    RLFN's features live on its 0-255 input scale (RMS ~10-30) while the student's are O(1); regressing them raw
    made the feature loss ~24 next to a pixel loss of ~0.2. After this every map has unit RMS whatever its scale.
    """
    return f / f.pow(2).mean(dim=(1, 2, 3), keepdim=True).add(eps).sqrt()


def feature_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    adapters: FeatureAdapters | None,
) -> torch.Tensor:
    """Affinity loss (cosine, scale-free) plus, with adapters, L1 between RMS-normalised adapted student features and
    RMS-normalised teacher features: both terms are O(1) whatever the networks' feature scales."""
    loss = affinity_loss(student_feats, teacher_feats)
    if adapters is not None:
        adapted = adapters(student_feats)
        fit = [
            F.l1_loss(normalize_features(a), normalize_features(t)) for a, t in zip(adapted, teacher_feats, strict=True)
        ]
        loss = loss + torch.stack(fit).mean()
    return loss


def pick_layers(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pair student layer i with the teacher layer at the same relative depth."""
    return [(i, round(i * (n_teacher - 1) / max(n_student - 1, 1))) for i in range(n_student)]
