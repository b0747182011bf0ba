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


def kd_loss(
    student_out: torch.Tensor,
    hr: torch.Tensor,
    soft: torch.Tensor | None,
    *,
    alpha: float,
    kind: str = "l1",
) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted hard + soft pixel loss; returns (loss, parts for logging). ``soft`` may be None only when alpha = 1."""
    fn = PIXEL_LOSSES[kind]
    hard = fn(student_out, hr)
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


def feature_loss(
    student_feats: Sequence[torch.Tensor],
    teacher_feats: Sequence[torch.Tensor],
    adapters: FeatureAdapters | None,
) -> torch.Tensor:
    """Affinity loss plus, with adapters, L1 between adapted student features and teacher features."""
    loss = affinity_loss(student_feats, teacher_feats)
    if adapters is not None:
        adapted = adapters(student_feats)
        loss = loss + torch.stack([F.l1_loss(a, t) for a, t in zip(adapted, teacher_feats, strict=True)]).mean()
    return loss


def pick_layers(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """Pair student layer i with the teacher layer at the same relative depth."""
    return [(i, round(i * (n_teacher - 1) / max(n_student - 1, 1))) for i in range(n_student)]
