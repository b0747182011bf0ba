"""The KD loss: alpha = 1 is the pure ground-truth loss, alpha = 0 the pure teacher loss, in between a blend."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from training.losses import affinity_loss, charbonnier, kd_loss, pick_layers


@pytest.fixture
def tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return tuple(torch.rand(2, 3, 8, 8, generator=g) for _ in range(3))  # type: ignore[return-value]


@pytest.mark.parametrize("kind, fn", [("l1", F.l1_loss), ("charbonnier", charbonnier)])
def test_alpha_one_is_pure_hard_loss(tensors, kind, fn) -> None:
    out, hr, soft = tensors
    loss, parts = kd_loss(out, hr, soft, alpha=1.0, kind=kind)
    assert torch.equal(loss, fn(out, hr))
    assert "soft" not in parts
    # no teacher at all is fine for the no-KD baseline
    loss_none, _ = kd_loss(out, hr, None, alpha=1.0, kind=kind)
    assert torch.equal(loss_none, loss)


@pytest.mark.parametrize("kind, fn", [("l1", F.l1_loss), ("charbonnier", charbonnier)])
def test_alpha_zero_is_pure_soft_loss(tensors, kind, fn) -> None:
    out, hr, soft = tensors
    loss, parts = kd_loss(out, hr, soft, alpha=0.0, kind=kind)
    torch.testing.assert_close(loss, fn(out, soft), rtol=0, atol=0)
    assert parts["soft"] == pytest.approx(float(fn(out, soft)))


def test_alpha_blends_linearly(tensors) -> None:
    out, hr, soft = tensors
    loss, _ = kd_loss(out, hr, soft, alpha=0.3)
    torch.testing.assert_close(loss, 0.3 * F.l1_loss(out, hr) + 0.7 * F.l1_loss(out, soft))


def test_soft_loss_needs_teacher_outputs(tensors) -> None:
    out, hr, _ = tensors
    with pytest.raises(ValueError, match="teacher"):
        kd_loss(out, hr, None, alpha=0.5)


def test_gradient_flows_to_student_only(tensors) -> None:
    out, hr, soft = tensors
    out = out.clone().requires_grad_(True)
    loss, _ = kd_loss(out, hr, soft, alpha=0.5)
    loss.backward()
    assert out.grad is not None and out.grad.abs().sum() > 0


def test_charbonnier_is_near_l1(tensors) -> None:
    out, hr, _ = tensors
    assert abs(float(charbonnier(out, hr)) - float(F.l1_loss(out, hr))) < 2e-3


def test_affinity_loss_zero_for_identical_and_width_independent() -> None:
    g = torch.Generator().manual_seed(1)
    s = torch.rand(1, 4, 6, 6, generator=g)
    assert float(affinity_loss([s], [s])) == pytest.approx(0.0, abs=1e-6)
    t = torch.rand(1, 16, 6, 6, generator=g)  # teacher wider than the student: affinities still compare
    assert float(affinity_loss([s], [t])) > 0


def test_pick_layers_spans_teacher_depth() -> None:
    assert pick_layers(3, 7) == [(0, 0), (1, 3), (2, 6)]
