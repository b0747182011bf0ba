"""The KD paths: scale-free feature distillation lowers its loss, the soft-target cache is keyed by content,
teacher-only samples reach only the soft term, the bf16 path runs, and what is exported is the EMA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.losses import FeatureAdapters, feature_loss, kd_loss, normalize_features, pick_layers
from training.soft_targets import cached_teacher_sr, weights_hash
from vsr.archs.edsr import EDSR
from vsr.archs.rlfn import RLFN
from vsr.archs.student import RepStudent

pytestmark = pytest.mark.usefixtures("one_thread")


def test_normalised_features_are_scale_free() -> None:
    f = torch.randn(2, 8, 6, 6)
    torch.testing.assert_close(normalize_features(f * 255.0), normalize_features(f), atol=1e-5, rtol=1e-5)


def test_feature_kd_lowers_its_loss_and_is_order_one() -> None:
    """An RLFN teacher (features on its 0-255 scale) and a student: the feature loss starts O(1), not ~24 as
    with raw regression, and optimising student + adapters on it (clipped together) lowers it."""
    torch.manual_seed(0)
    teacher = RLFN(scale=2, channels=8, mid_channels=8, esa_channels=4, blocks=2).eval().requires_grad_(False)
    student = RepStudent(scale=2, channels=8, depth=2, expand=1)
    x = torch.rand(4, 3, 20, 20)
    with torch.no_grad():
        t_feats = teacher.forward_features(x)
    pairs = pick_layers(len(student.forward_features(x)), len(t_feats))
    adapters = FeatureAdapters(
        student_channels=[8] * len(pairs), teacher_channels=[t_feats[j].shape[1] for _, j in pairs]
    )
    params = [*student.parameters(), *adapters.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)

    def loss() -> torch.Tensor:
        s = student.forward_features(x)
        return feature_loss([s[i] for i, _ in pairs], [t_feats[j] for _, j in pairs], adapters)

    first = float(loss().detach())
    assert 0.01 < first < 3.0, first
    for _ in range(30):
        opt.zero_grad()
        loss().backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    assert float(loss().detach()) < 0.8 * first


def test_teacher_only_samples_reach_only_the_soft_term() -> None:
    g = torch.Generator().manual_seed(0)
    out, hr, soft = (torch.rand(4, 3, 8, 8, generator=g) for _ in range(3))
    mask = torch.tensor([True, False, True, False])
    hard, parts = kd_loss(out, hr, soft, alpha=1.0, has_hr=mask)
    torch.testing.assert_close(hard, torch.nn.functional.l1_loss(out[mask], hr[mask]))
    both, _ = kd_loss(out, hr, soft, alpha=0.5, has_hr=mask)
    torch.testing.assert_close(both, 0.5 * hard + 0.5 * torch.nn.functional.l1_loss(out, soft))
    none, _ = kd_loss(out, hr, soft, alpha=1.0, has_hr=torch.zeros(4, dtype=torch.bool))
    assert float(none) == 0.0  # a no-KD twin learns nothing from a batch of teacher-only samples


def test_soft_target_cache_is_keyed_by_teacher_weights_and_image(tmp_path: Path) -> None:
    torch.manual_seed(0)
    teacher = EDSR(scale=2, channels=8, blocks=1).eval()
    img = np.random.default_rng(0).integers(0, 256, size=(12, 10, 3), dtype=np.uint8)
    dev = torch.device("cpu")
    first = cached_teacher_sr([img], [teacher], [1.0], device=dev, cache_dir=tmp_path)[0]
    assert len(list(tmp_path.glob("*.npy"))) == 1
    # same weights in another object (another file name) -> a hit, same values
    clone = EDSR(scale=2, channels=8, blocks=1).eval()
    clone.load_state_dict(teacher.state_dict())
    assert weights_hash(clone) == weights_hash(teacher)
    np.testing.assert_array_equal(cached_teacher_sr([img], [clone], [1.0], device=dev, cache_dir=tmp_path)[0], first)
    assert len(list(tmp_path.glob("*.npy"))) == 1
    # changed weights -> a new entry with the new teacher's output, never the stale one
    with torch.no_grad():
        next(clone.parameters()).add_(0.5)
    changed = cached_teacher_sr([img], [clone], [1.0], device=dev, cache_dir=tmp_path)[0]
    assert len(list(tmp_path.glob("*.npy"))) == 2 and not np.array_equal(changed, first)
    # a changed image -> a new entry too
    cached_teacher_sr([img[::-1].copy()], [teacher], [1.0], device=dev, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npy"))) == 3
