"""Every architecture on a tiny config: output shape per scale; RepConv fusion; RLFN and DCTLSA weights load strict."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.env import SHARED, require_or_skip
from vsr.archs import REGISTRY, build, count_parameters
from vsr.archs.dctlsa import DCTLSA, LinearWindowAttention, dctlsa_config_from_state
from vsr.archs.rlfn import RLFN, rlfn_config_from_state
from vsr.archs.student import RepConv, RepStudent, fused_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

# One tiny config per registered architecture: a new architecture must add itself here.
TINY: dict[str, dict] = {
    "rep_student": {"channels": 8, "depth": 1, "expand": 2},
    "edsr": {"channels": 8, "blocks": 1},
    "rlfn": {"channels": 8, "mid_channels": 8, "esa_channels": 4, "blocks": 1},
    "dctlsa": {"channels": 8, "blocks": 2, "mlp_channels": 12, "heads": 2, "window": 8},
}


def _randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights everywhere (the student's tail starts at zero, which would hide fusion errors)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return model


def test_every_architecture_has_a_tiny_config() -> None:
    assert set(TINY) == set(REGISTRY)


@pytest.mark.parametrize("arch", sorted(REGISTRY))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_output_shape(arch: str, scale: int) -> None:
    model = build(arch, {**TINY[arch], "scale": scale}).eval()
    x = torch.rand(2, 3, 20, 24)  # >= 15 px: RLFN's ESA downsamples by ~6
    with torch.inference_mode():
        y = model(x)
        feats = model.forward_features(x)
    assert tuple(y.shape) == (2, 3, 20 * scale, 24 * scale)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    assert getattr(model, "scale", None) == scale
    assert all(f.shape[-2:] == x.shape[-2:] for f in feats)  # feature distillation taps are LR-sized


def test_build_unknown_arch() -> None:
    with pytest.raises(ValueError, match="unknown architecture"):
        build("nope", {})


@pytest.mark.parametrize("expand", [0, 2])
@pytest.mark.parametrize("in_ch, out_ch", [(3, 8), (8, 8), (8, 12)])
def test_repconv_fusion_equivalence(expand: int, in_ch: int, out_ch: int) -> None:
    conv = _randomize(RepConv(in_ch=in_ch, out_ch=out_ch, expand=expand))
    x = torch.rand(2, in_ch, 9, 11)
    with torch.no_grad():
        before = conv(x)
        conv.fuse()
        after = conv(x)
    assert conv.fused is not None and len(list(conv.parameters())) == 2
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [2, 4])
def test_student_fuses_to_plain_convs(scale: int) -> None:
    model = _randomize(RepStudent(scale=scale, channels=8, depth=2, expand=2)).eval()
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        ref = model(x)
        plain = RepStudent(scale=scale, channels=8, depth=2, fused=True).eval()
        plain.load_state_dict(fused_state_dict(model), strict=True)
        torch.testing.assert_close(plain(x), ref, atol=1e-5, rtol=1e-5)
        model.fuse()
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=1e-5)
    assert count_parameters(plain) < count_parameters(RepStudent(scale=scale, channels=8, depth=2, expand=2))


def test_untrained_student_is_nearest_neighbour() -> None:
    """The zero-initialised tail should make a fresh student output the anchor (nearest-neighbour upsampling)."""
    model = RepStudent(scale=2, channels=8, depth=1).eval()
    x = torch.rand(1, 3, 6, 7)
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y, torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))


@pytest.mark.parametrize("colors", [3, 1])
@pytest.mark.parametrize("scale", [2, 4])
def test_default_student_is_real_time_sized(scale: int, colors: int) -> None:
    """Our budget: <= 30k inference parameters at x2 and x4, RGB or luma (the first x4 had 31,920)."""
    from training.config import STUDENT_DEFAULTS

    plain = RepStudent(**{**STUDENT_DEFAULTS[scale], "scale": scale, "colors": colors, "fused": True})
    assert count_parameters(plain) <= 30_000


@pytest.mark.parametrize("colors", [3, 1])
@pytest.mark.parametrize("expand", [0, 1, 2])
def test_fold_on_forward_equals_branches_and_fused_export(expand: int, colors: int) -> None:
    """Training folds each block's branches into one kernel per forward: same outputs and same gradients as running
    the branches apart, and the same function as the fused (exported) plain-conv model."""
    torch.manual_seed(0)
    folded = _randomize(RepStudent(scale=2, channels=8, depth=2, expand=expand, colors=colors, fold=True))
    branchy = RepStudent(scale=2, channels=8, depth=2, expand=expand, colors=colors, fold=False)
    branchy.load_state_dict(folded.state_dict())
    x = torch.rand(2, colors, 11, 9)
    y_fold, y_branch = folded(x), branchy(x)
    torch.testing.assert_close(y_fold, y_branch, atol=1e-5, rtol=1e-5)
    y_fold.square().mean().backward()
    y_branch.square().mean().backward()
    for (name, a), b in zip(folded.named_parameters(), branchy.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-4, msg=name)
    plain = RepStudent(scale=2, channels=8, depth=2, colors=colors, fused=True)
    plain.load_state_dict(fused_state_dict(folded), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), y_fold.detach(), atol=1e-5, rtol=1e-5)


def test_luma_student_sees_and_predicts_one_channel() -> None:
    model = RepStudent(scale=2, channels=8, depth=1, colors=1).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 1, 6, 7))
    assert tuple(y.shape) == (1, 1, 12, 14) and model.colors == 1
    with pytest.raises(ValueError, match="colors"):
        RepStudent(colors=2)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_rlfn_config_derived_from_weights(scale: int) -> None:
    cfg = {"scale": scale, "channels": 12, "mid_channels": 8, "esa_channels": 4, "blocks": 2}
    state = RLFN(**cfg).state_dict()
    assert rlfn_config_from_state(state) == cfg


@pytest.mark.parametrize("name, scale", [("RLFN_x2.pth", 2), ("RLFN_x4.pth", 4), ("RLFN-S_x2.pth", 2)])
def test_rlfn_pretrained_loads_strict(name: str, scale: int) -> None:
    from training.teachers import load_teacher

    path: Path = SHARED / "teachers" / name
    require_or_skip(path.is_file(), f"pretrained teacher {path} not present")
    model, desc = load_teacher(path)  # load_state_dict(strict=True) inside
    assert desc["arch"] == "rlfn" and desc["scale"] == scale == model.scale
    assert not any(p.requires_grad for p in model.parameters())  # frozen
    with torch.inference_mode():
        y = model(torch.full((1, 3, 16, 16), 0.5))
    assert tuple(y.shape) == (1, 3, 16 * scale, 16 * scale)
    assert abs(float(y.mean()) - 0.5) < 0.05  # a flat grey image stays flat grey: weights and range are right


def test_unknown_teacher_weights_are_rejected(tmp_path: Path) -> None:
    from training.teachers import load_teacher

    p = tmp_path / "odd.pth"
    torch.save({"foo.weight": torch.zeros(1)}, p)
    with pytest.raises(ValueError, match="unrecognised"):
        load_teacher(p)


@pytest.mark.parametrize("scale, blocks", [(2, 1), (3, 2), (4, 3)])
def test_dctlsa_config_derived_from_weights(scale: int, blocks: int) -> None:
    cfg = {"scale": scale, "channels": 10, "blocks": blocks, "mlp_channels": 14}
    state = DCTLSA(**cfg).state_dict()
    assert dctlsa_config_from_state(state) == cfg
    DCTLSA(**dctlsa_config_from_state(state)).load_state_dict(state, strict=True)


@pytest.mark.parametrize("h, w", [(13, 17), (1, 1), (16, 16), (33, 20), (7, 40)])
@pytest.mark.parametrize("scale", [2, 4])
def test_dctlsa_any_input_size(h: int, w: int, scale: int) -> None:
    """Sides below the window (16) and off its multiples come out exactly ``scale`` times larger, features LR-sized."""
    model = _randomize(DCTLSA(scale=scale, channels=10, blocks=2, mlp_channels=12)).eval()
    x = torch.rand(1, 3, h, w)
    with torch.inference_mode():
        y = model(x)
        feats = model.forward_features(x)
    assert tuple(y.shape) == (1, 3, h * scale, w * scale) and torch.isfinite(y).all()
    assert len(feats) == 3 and all(tuple(f.shape[-2:]) == (h, w) for f in feats)


def _attention_window_by_window(attn: LinearWindowAttention, x: torch.Tensor) -> torch.Tensor:
    """DCTLSA's attention written out one window and one head at a time (the module does it in one reshape)."""
    b, h, w, c = x.shape
    ws, hd = attn.window, c // attn.heads
    t = x.permute(0, 3, 1, 2)
    local = (attn.local(t) + t).permute(0, 2, 3, 1)
    qkv = attn.qkv(local)
    out = torch.empty(b, h, w, c)
    for i in range(0, h, ws):
        for j in range(0, w, ws):
            q, k, v = qkv[:, i : i + ws, j : j + ws].reshape(b, ws * ws, 3 * c).split(c, dim=-1)
            heads = []
            for n in range(attn.heads):
                qn, kn, vn = (z[..., n * hd : (n + 1) * hd] for z in (q, k, v))
                # linear attention: keys softmaxed over the window's tokens, then q (k^T v)
                heads.append(qn * hd**-0.5 @ (kn.softmax(dim=1).transpose(1, 2) @ vn))
            out[:, i : i + ws, j : j + ws] = torch.cat(heads, dim=-1).reshape(b, ws, ws, c)
    return attn.proj(out) + local


def test_dctlsa_attention_matches_a_window_by_window_reference() -> None:
    attn = _randomize(LinearWindowAttention(channels=6, heads=3, window=4)).eval()
    x = torch.randn(2, 8, 12, 6)
    with torch.no_grad():
        torch.testing.assert_close(attn(x), _attention_window_by_window(attn, x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_dctlsa_pretrained_loads_strict(scale: int) -> None:
    from training.teachers import load_teacher

    path: Path = SHARED / "teachers" / f"DCTLSA_x{scale}.pt"
    require_or_skip(path.is_file(), f"pretrained teacher {path} not present")
    model, desc = load_teacher(path)  # load_state_dict(strict=True) inside
    assert desc["arch"] == "dctlsa" and desc["scale"] == scale == model.scale
    assert desc["config"] == {"scale": scale, "channels": 55, "blocks": 6, "mlp_channels": 110}
    assert not any(p.requires_grad for p in model.parameters())
    with torch.inference_mode():
        y = model(torch.full((1, 3, 16, 16), 0.5))
    assert tuple(y.shape) == (1, 3, 16 * scale, 16 * scale)
    assert abs(float(y.mean()) - 0.5) < 0.05  # flat grey in, flat grey out: weights and [0, 1] range are right
