"""The space-to-depth student (``RepStudent(unshuffle=f)``): nearest-neighbour at init on any frame size, padding by
edge replication, training form = exported form, the OpenVINO graph = torch on odd sizes, and the runner (torch and
OpenVINO, RGB and Y frames) with tiles that start on the model's grid."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from tests.support.media import synthetic_image
from training.export import inference_layout
from vsr.archs import build
from vsr.archs.student import RepStudent
from vsr.kernel import student_layers
from vsr.luma import LumaAsRGB
from vsr.runner import FrameRunner, RuntimeOptions
from vsr.tiling import model_alignment, plan_grid, run_tiled

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
_ov = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
RUNTIMES = ["torch", pytest.param("openvino", marks=_ov)]


def _student(colors: int, f: int = 2, scale: int = 2, seed: int = 0) -> RepStudent:
    g = torch.Generator().manual_seed(seed)
    m = RepStudent(scale=scale, channels=8, depth=2, expand=2, colors=colors, unshuffle=f)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m.eval()


@pytest.mark.parametrize("colors", [1, 3])
@pytest.mark.parametrize("scale, f", [(2, 2), (4, 2), (2, 4)])
@pytest.mark.parametrize("h, w", [(6, 8), (7, 9), (1, 1), (13, 5)])
def test_untrained_is_nearest_neighbour_on_any_size(colors: int, scale: int, f: int, h: int, w: int) -> None:
    """The zero tail leaves the anchor: every output pixel is its nearest input pixel, so the anchor's channel map
    (which unshuffled input feeds which output sub-pixel) and the crop of the padding are both right."""
    model = RepStudent(scale=scale, channels=8, depth=1, colors=colors, unshuffle=f).eval()
    x = torch.rand(2, colors, h, w)
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=scale, mode="nearest"), atol=0, rtol=0)


def test_an_odd_frame_is_the_edge_padded_frame_cropped() -> None:
    model = _student(3)
    x = torch.rand(1, 3, 11, 15)
    with torch.no_grad():
        y = model(x)
        padded = model(F.pad(x, (0, 1, 0, 1), mode="replicate"))
    assert y.shape == (1, 3, 22, 30)
    torch.testing.assert_close(y, padded[..., :22, :30])
    # guard: the padding matters near the edge it was added to (zeros there would give another result)
    with torch.no_grad():
        zeros = model(F.pad(x, (0, 1, 0, 1)))[..., :22, :30]
    assert (zeros - y).abs().max() > 1e-3


@pytest.mark.parametrize("colors", [1, 3])
def test_training_form_equals_the_exported_model(colors: int) -> None:
    model = _student(colors)
    state, cfg = inference_layout(model, "rep_student")
    assert cfg["unshuffle"] == 2 and cfg["fused"] is True
    plain = build("rep_student", cfg).eval()
    plain.load_state_dict(state, strict=True)
    x = torch.rand(2, colors, 9, 14)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), model(x), atol=1e-5, rtol=1e-5)
    assert (
        sum(p.numel() for p in plain.parameters())
        == 8 * colors * 4 * 9 + 8 + 2 * (8 * 8 * 9 + 8) + 16 * colors * (8 * 9) + 16 * colors
    )


def test_the_fused_torch_kernel_declines_it() -> None:
    """The torch uint8 kernel folds a plain anchored net; a space-to-depth one runs the reference path instead."""
    assert student_layers(_student(1)) is None
    assert student_layers(RepStudent(channels=8, depth=1)) is not None
    assert model_alignment(LumaAsRGB(_student(1, f=4), 2)) == 4 and model_alignment(torch.nn.Conv2d(1, 1, 1)) == 1


@_ov
@pytest.mark.parametrize("colors", [1, 3])
def test_openvino_graph_equals_torch_on_odd_sizes(colors: int) -> None:
    """Converted once (traced on 32x32), the graph pads and crops by the size it is given, not the traced one."""
    import openvino as ov

    from vsr.ov import LevelsNet, levels_model

    model = _student(colors)
    compiled = ov.Core().compile_model(levels_model(model, colors), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    for h, w in [(32, 32), (7, 9), (36, 63), (1, 1)]:
        x = torch.rand(1, colors, h, w) * 255
        with torch.no_grad():
            ref = LevelsNet(model)(x).numpy()
        out = compiled({0: x.numpy()})[0]
        assert out.shape == ref.shape == (1, colors, 2 * h, 2 * w)
        assert np.abs(out - ref).max() <= 1  # float32 in another order: a level where a value sits on a half


def _y8(n: int, h: int, w: int) -> np.ndarray:
    rgb = np.stack([synthetic_image(np.random.default_rng(s), h, w) for s in range(n)]).astype(np.float64)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    return np.clip(np.rint(y), 0, 255).astype(np.uint8)[..., None]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_runner_gives_the_models_y_and_tiles_on_its_grid(runtime: str, tmp_path: Path) -> None:
    model = _student(1)
    opts = RuntimeOptions(runtime=runtime, cache_dir=tmp_path / "ov")
    runner = FrameRunner(LumaAsRGB(model, 2), scale=2, device=CPU, dtype="fp32", options=opts)
    assert runner.info.runtime == runtime and runner.align == 2
    y8 = _y8(2, 61, 83)
    whole = runner(y8)
    with torch.no_grad():
        ref = copy.deepcopy(model).double()(torch.from_numpy(y8).permute(0, 3, 1, 2).double() / 255) * 255
    ref_levels = ref.clamp(0, 255).round().permute(0, 2, 3, 1).numpy()
    assert whole.shape == (2, 122, 166, 1)
    assert np.abs(whole - ref_levels).max() <= 1
    budget = 52 * 52  # 3 x 5 tiles a frame, some starting on odd rows and columns
    grid = plan_grid(61, 83, budget=budget)
    assert (grid.rows, grid.cols) == (3, 5)
    tiled = runner(y8, pixel_budget=budget)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    # guard: tiles off the model's grid see other 2x2 cells, and the output changes
    off_grid = run_tiled(runner.y_kernel, y8[:1], grid, 2, align=1)
    assert np.abs(off_grid.astype(int) - whole[:1].astype(int)).max() > 2


def test_feature_distillation_refuses_a_space_to_depth_student() -> None:
    from training.config import TrainConfig

    arch = {"channels": 8, "depth": 1, "colors": 1}
    TrainConfig(scale=2, arch_config=arch, feat_beta=0.1, alpha=1.0)  # a plain student may
    with pytest.raises(ValueError, match="unshuffle"):
        TrainConfig(scale=2, arch_config={**arch, "unshuffle": 2}, feat_beta=0.1, alpha=1.0)
