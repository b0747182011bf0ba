"""A luma model's stream frames as decoder planes (vsr/planes.py): Y to the model, the output built on the source's
chroma and encoded from the planes; frames that cannot go that way take RGB and say why."""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry

from service.metrics import Metrics
from service.streams.config import StreamOptions, StreamSpec
from service.streams.pipeline import Stream, StreamDeps, StreamSetup
from service.urlpolicy import CheckedUrl
from tests.service.streams.test_pipeline import WAIT_S, FakeBatcher
from tests.support.live import Server, read_mjpeg, wait_until
from tests.support.reference import assert_model_output, decode_rgb, textured
from tests.support.rtsp import STATIC_PATTERN, RtspServer, grab_frames
from tests.support.timing import stretch
from tests.vsr.test_planes import BT709_TO_RGB, JFIF, _bilinear
from vsr.planes import Planes, from_video_frame


@pytest.fixture(scope="module")
def luma_artifact(tiny_luma_artifact: Path) -> Path:
    return tiny_luma_artifact


def _yuv(rgb: np.ndarray, colorspace: int | None = None) -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    if colorspace is not None:
        frame.colorspace = colorspace
    return frame


def _hd_camera(rgb: np.ndarray) -> av.VideoFrame:
    """``rgb`` as an HD camera sends it: BT.709 limited range (swscale's encoding, which tags it BT.709)."""
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace="itu709")
    assert frame.format.name == "yuv420p" and int(frame.colorspace) == 1 and int(frame.color_range) != 2
    return frame


@pytest.fixture
def rig():
    batcher = FakeBatcher()
    src = CheckedUrl("rtsp://h/x", "rtsp://h/x", "rtsp", "h", "1.2.3.4", {}, "rtsp://h/x")
    deps = StreamDeps(batcher.submit, Metrics(CollectorRegistry()), StreamOptions(max_pending=1), lambda m: m == "luma")
    stream = Stream(StreamSetup(StreamSpec(url="rtsp://h/x"), "t", "luma", 2, src=src), deps)
    stream.pump.start()
    yield stream, batcher
    stream.stop()
    stream.join(2)


def test_luma_model_gets_y_and_the_output_is_built_on_the_source_chroma(rig) -> None:
    stream, batcher = rig
    frame = _yuv(textured(26, 32))
    planes = from_video_frame(frame)
    assert isinstance(planes, Planes)
    stream.sink.offer(frame, time.monotonic())
    assert wait_until(lambda: len(batcher.calls) == 1, WAIT_S, step=0.005)
    sent, kw = batcher.calls[0]
    assert sent.shape == (26, 32, 1) and kw["model"] == "luma"
    np.testing.assert_array_equal(sent[..., 0], planes.y)
    assert stream.info().frame_path.kind == "planes"

    y_out = np.random.default_rng(1).integers(0, 256, (52, 64, 1), dtype=np.uint8)
    batcher.futures[0].set_result(y_out)
    assert wait_until(lambda: stream.output.latest is not None, WAIT_S, step=0.005)
    latest = stream.output.latest
    out = latest.picture
    assert isinstance(out, Planes) and (latest.width, latest.height) == (64, 52)
    np.testing.assert_array_equal(out.y, y_out[..., 0])  # the model's Y as it came
    assert out.cb.shape == (26, 32)  # the source chroma (13 x 16: rows of half a line) upscaled to the output's 4:2:0
    with Image.open(io.BytesIO(latest.jpeg)) as im:  # encoded from the planes
        assert im.size == (64, 52)
        y_jpeg = np.asarray(im.convert("YCbCr"))[..., 0].astype(int)
    assert np.abs(y_jpeg - y_out[..., 0].astype(int)).mean() < 12  # random Y: JPEG's error, not another image
    assert isinstance(stream.last_source, Planes)


def test_a_bt709_frame_goes_as_planes_converted_to_bt601(rig) -> None:
    """An HD camera's BT.709 frame goes as planes too, its Y converted to BT.601: against the float conversion of the
    frame's own planes (range formula, published matrices, torch's bilinear for Y's chroma term; ours rounds after
    the range table: measured 0.99 max, 0.33 mean), and as close to the camera's RGB as the RGB path's Y (swscale's
    RGB of the frame: both 2.13 levels mean, the codec's 4:2:0 at this content's edges). Its Y as it is, BT.709's,
    would be 4.9 mean off."""
    stream, batcher = rig
    rgb = textured(24, 32)
    frame = _hd_camera(rgb)
    stream.sink.offer(frame, time.monotonic())
    assert wait_until(lambda: len(batcher.calls) == 1, WAIT_S, step=0.005)
    sent = batcher.calls[0][0]
    assert sent.shape == (24, 32, 1) and stream.info().frame_path.kind == "planes"
    got = sent[..., 0].astype(np.float64)

    a = frame.to_ndarray().astype(np.float64)  # (3H/2) x W: Y, Cb, Cr
    y = (a[:24] - 16) * 255 / 219
    cb, cr = ((c.reshape(12, 16) - 128) * 255 / 224 for c in (a[24:30], a[30:]))
    t = JFIF[0] @ BT709_TO_RGB  # (1, a, b): JFIF's Y of BT.709's RGB
    want = np.clip(y + _bilinear(t[1] * cb + t[2] * cr, (32, 24)), 0, 255)
    assert np.abs(got - want).max() <= 1.5 and np.abs(got - want).mean() < 0.5
    src_y = rgb.astype(np.float64) @ JFIF[0]
    rgb_path_y = frame.to_ndarray(format="rgb24").astype(np.float64) @ JFIF[0]
    assert np.abs(got - src_y).mean() < np.abs(rgb_path_y - src_y).mean() + 0.25
    assert np.abs(np.clip(y, 0, 255) - src_y).mean() > 3  # guard: without the conversion it would be far off

    batcher.futures[0].set_result(np.zeros((48, 64, 1), np.uint8))
    assert wait_until(lambda: stream.output.latest is not None, WAIT_S, step=0.005)
    assert isinstance(stream.output.latest.picture, Planes)


def test_frames_that_cannot_go_as_planes_go_as_rgb_and_say_why(rig) -> None:
    stream, batcher = rig
    stream.sink.offer(_yuv(textured(24, 32), colorspace=9), time.monotonic())  # BT.2020: a matrix planes do not take
    assert wait_until(lambda: len(batcher.calls) == 1, WAIT_S, step=0.005)
    assert batcher.calls[0][0].shape == (24, 32, 3)
    path = stream.info().frame_path
    assert path.kind == "rgb" and "bt2020" in path.reason
    batcher.futures[0].set_result(np.zeros((48, 64, 3), np.uint8))
    assert wait_until(lambda: stream.output.latest is not None, WAIT_S, step=0.005)
    assert isinstance(stream.output.latest.picture, np.ndarray)

    stream.switch_model("rgb-model", "named")  # a model that does not take Y
    stream.sink.offer(_yuv(textured(24, 32)), time.monotonic())
    assert wait_until(lambda: len(batcher.calls) == 2, WAIT_S, step=0.005)
    assert batcher.calls[1][0].shape == (24, 32, 3) and stream.info().frame_path.reason == "the model takes RGB"


def _watch(svc: Server, url: str) -> tuple[list[bytes], dict]:
    r = svc.client.post("/stream", json={"url": url, "name": "cam"})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        frames = read_mjpeg(svc.base, sid, 6, timeout=stretch(10.0))
    except httpx.TimeoutException:
        pytest.fail(f"no frames: {svc.client.get(f'/stream/{sid}').json()}")
    return frames, svc.client.get(f"/stream/{sid}").json()


@pytest.mark.parametrize("planes", [True, False])
def test_luma_stream_end_to_end(
    planes: bool,
    luma_artifact: Path,
    live_server: Callable[..., Server],
    rtsp_server_factory: Callable[..., RtspServer],
) -> None:
    """Through the real service: the luma model's output of the camera's frame either way (planes or RGB), within
    the codecs' error and clearly not nearest, bicubic or a flat frame."""
    camera_server = rtsp_server_factory(pattern=STATIC_PATTERN)
    (camera,) = grab_frames(camera_server.url)
    svc = live_server(models=[str(luma_artifact)], stream_planes=planes)
    frames, info = _watch(svc, camera_server.url)
    assert info["frame_path"]["kind"] == ("planes" if planes else "rgb"), info["frame_path"]
    for f in frames[-3:]:
        assert_model_output(decode_rgb(f), camera, luma_artifact, tol=12.0)


def test_a_luma_stream_publishes_its_planes(
    luma_artifact: Path,
    live_server: Callable[..., Server],
    rtsp_server_factory: Callable[..., RtspServer],
    tmp_path: Path,
) -> None:
    """Planes go to the H.264 encoder as yuv420p (limited range, no RGB): an independent receiver (FFmpeg) decodes
    the luma model's output of the camera's frame."""
    from tests.service.streams.test_publish import received_frames, start_receiver
    from tests.support.live import free_port

    camera_server = rtsp_server_factory(pattern=STATIC_PATTERN)
    (camera,) = grab_frames(camera_server.url)
    svc = live_server(models=[str(luma_artifact)])
    port, out = free_port(), tmp_path / "received.mkv"
    receiver = start_receiver(port, out)
    spec = {"url": camera_server.url, "name": "pub", "publish": f"rtsp://127.0.0.1:{port}/out"}
    r = svc.client.post("/stream", json=spec | {"publish_options": {"encoder": "libx264", "preset": "ultrafast"}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    info = svc.wait_stream(sid, lambda i: (i["publish"] or {}).get("frames", 0) >= 30, timeout=30)
    assert info["frame_path"]["kind"] == "planes"
    svc.app.state.streams.remove(sid, join_timeout=10)
    frames = [f.to_ndarray(format="rgb24") for f in received_frames(receiver, out)]
    assert frames[-1].shape == (180, 320, 3)
    for f in frames[-3:]:  # within two H.264 passes' error of the model's output, and not an impostor
        assert_model_output(f, camera, luma_artifact, tol=12.0)
