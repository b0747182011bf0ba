"""The inference contract: uint8 HWC/NHWC in and out; tiling with overlap equals the untiled result."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.media import synthetic_image
from vsr.archs.student import RepStudent
from vsr.inference import to_frames, to_tensor, upscale_frames
from vsr.tiling import TileSpec

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def student() -> RepStudent:
    torch.manual_seed(0)
    m = RepStudent(scale=2, channels=8, depth=3, expand=2)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.fuse().eval()


def test_tensor_round_trip() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    t = to_tensor(frames, device=torch.device("cpu"), dtype=torch.float32)
    assert tuple(t.shape) == (2, 3, 5, 7) and float(t.max()) <= 1.0
    assert np.array_equal(to_frames(t), frames)


def test_shapes_and_dtype(student) -> None:
    img = synthetic_image(np.random.default_rng(0), 12, 16)
    out = upscale_frames(student, img, scale=2)
    assert out.shape == (24, 32, 3) and out.dtype == np.uint8
    batch = upscale_frames(student, np.stack([img, img]), scale=2)
    assert batch.shape == (2, 24, 32, 3) and np.array_equal(batch[1], out)
    ro = img.copy()
    ro.flags.writeable = False  # e.g. a PIL-backed array
    assert np.array_equal(upscale_frames(student, ro, scale=2), out)


@pytest.mark.parametrize("tile, overlap", [(24, 8), (20, 6), (17, 5)])  # N*N px per call, margins included
def test_tiled_equals_untiled(student, tile: int, overlap: int) -> None:
    img = synthetic_image(np.random.default_rng(1), 37, 45)  # not a multiple of the tile: ragged edge tiles
    whole = upscale_frames(student, img, scale=2)
    tiled = upscale_frames(student, img, scale=2, tiles=TileSpec(tile=tile, overlap=overlap))
    assert tiled.shape == whole.shape
    assert int(np.abs(tiled.astype(int) - whole.astype(int)).max()) <= 1  # <= 1/255


def test_tiling_really_tiles(student) -> None:
    """Guard against a vacuous test: without overlap the tile seams differ."""
    img = synthetic_image(np.random.default_rng(1), 37, 45)
    whole = upscale_frames(student, img, scale=2)
    seams = upscale_frames(student, img, scale=2, tiles=TileSpec(tile=8, overlap=0))
    assert int(np.abs(seams.astype(int) - whole.astype(int)).max()) > 1
