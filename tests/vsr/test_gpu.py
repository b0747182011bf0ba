"""The CUDA side (``vsr.gpu``): codec choice runs anywhere; the kernel tests need a CUDA device (marked ``gpu``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.support.media import synthetic_image
from vsr.archs.student import RepStudent
from vsr.gpu import pick_codec
from vsr.inference import upscale_frames

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_pick_codec_prefers_nvenc_nvdec_only_on_cuda_when_present() -> None:
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    have = {"h264_nvenc", "h264_cuvid", "libx264"}
    assert pick_codec("libx264", device=cuda, encode=True, available=have) == "h264_nvenc"
    assert pick_codec("h264", device=cuda, encode=False, available=have) == "h264_cuvid"
    assert pick_codec("libx264", device=cpu, encode=True, available=have) == "libx264"
    assert pick_codec("libx265", device=cuda, encode=True, available=have) == "libx265"  # no hevc_nvenc here
    assert pick_codec("libx264", device=cuda, encode=True, available={"libx264"}) == "libx264"


def _student() -> RepStudent:
    m = RepStudent(scale=2, channels=8, depth=2, expand=1)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return m.fuse().eval()


@pytest.mark.gpu
@CUDA
def test_cuda_graph_kernel_matches_cpu_reference() -> None:
    from vsr.gpu import GraphKernel
    from vsr.runner import FrameRunner

    m = _student()
    frames = np.stack([synthetic_image(np.random.default_rng(s), 36, 64) for s in range(3)])
    ref = upscale_frames(m, frames, scale=2)
    runner = FrameRunner(m, scale=2, device=torch.device("cuda"))
    assert runner.dtype == torch.float16 and isinstance(runner.kernel, GraphKernel)
    out = runner(frames)
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 2  # fp16 weights and activations
    again = runner(frames)  # the bucket's graph replayed
    assert np.array_equal(out, again)
    assert np.array_equal(runner(frames[:1]), out[:1])  # another bucket


@pytest.mark.gpu
@CUDA
def test_nvjpeg_when_torchvision_is_there() -> None:
    from vsr.gpu import encode_jpeg_cuda

    data = encode_jpeg_cuda(torch.zeros(16, 16, 3, dtype=torch.uint8, device="cuda"))
    if data is None:
        pytest.skip("torchvision not importable here")
    assert data[:2] == b"\xff\xd8"
