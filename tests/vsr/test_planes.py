"""``vsr.planes``: decoder frames as full-range BT.601 planes, against independent references: the range mapping
against its formula, BT.709 frames against the published matrices in float, the chroma upscaling against torch's
bilinear, the RGB conversion against the float JFIF matrix, the JPEG against Pillow's own encoder, and the whole
against PyAV/swscale's conversion of the same frame."""

from __future__ import annotations

import io
from collections.abc import Callable

import av
import numpy as np
import pytest
import torch
from PIL import Image
from torch.nn import functional as F

from tests.support.media import synthetic_image
from vsr.planes import BT709_TO_BT601, Planes, from_video_frame, upscale_plane

pytestmark = pytest.mark.usefixtures("one_thread")  # torch is the bilinear reference here


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.float64) - b.astype(np.float64))


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _bilinear(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """torch's bilinear (half-pixel centres, edge clamp) to ``size`` (width, height), float (not rounded)."""
    x = torch.from_numpy(plane.astype(np.float32))[None, None]
    out = F.interpolate(x, size=(size[1], size[0]), mode="bilinear", align_corners=False)
    return out[0, 0].double().numpy()


def _jfif_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """Float JFIF YCbCr -> RGB (full-size float planes in levels), clipped, not rounded."""
    cb, cr = cb - 128.0, cr - 128.0
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255)


# Full-range R'G'B' -> Y'CbCr (rows Y, Cb, Cr; chroma centred at 0): JFIF's (BT.601's) and BT.709's, and BT.709's
# inverse, as published (not derived from Kr/Kb, as vsr.planes derives its matrix)
JFIF = np.array([[0.299, 0.587, 0.114], [-0.168735892, -0.331264108, 0.5], [0.5, -0.418687589, -0.081312411]])
RGB_TO_BT709 = np.array([[0.2126, 0.7152, 0.0722], [-0.114572, -0.385428, 0.5], [0.5, -0.454153, -0.045847]])
BT709_TO_RGB = np.array([[1, 0, 1.5748], [1, -0.187324, -0.468124], [1, 1.8556, 0]])


def _quarter(c: np.ndarray) -> np.ndarray:
    """A full-size plane's 4:2:0 chroma: the mean of each 2 x 2 block."""
    h, w = c.shape
    return c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))


def _planes_of(rgb: np.ndarray) -> Planes:
    """Float JFIF RGB -> YCbCr, chroma averaged over 2 x 2 blocks, rounded: planes made without ``vsr``."""
    ycc = rgb.astype(np.float64) @ JFIF.T
    return Planes(_u8(ycc[..., 0]), _u8(_quarter(ycc[..., 1]) + 128), _u8(_quarter(ycc[..., 2]) + 128))


def _smooth(seed: int, height: int, width: int) -> np.ndarray:
    """Smooth RGB (slow sinusoids, no noise): a camera frame's content, whose chroma 4:2:0 keeps."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = [
        0.5 + 0.3 * np.sin(rng.uniform(0.02, 0.12) * yy + rng.uniform(0.02, 0.12) * xx + rng.uniform(0, 2 * np.pi))
        for _ in range(3)
    ]
    return _u8(np.stack(channels, axis=-1) * 255)


def _every_level(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A random uint8 plane holding each of the 256 levels equally often (the whole of a lookup table is used)."""
    n = shape[0] * shape[1]
    assert n % 256 == 0
    return rng.permutation(np.tile(np.arange(256, dtype=np.uint8), n // 256)).reshape(shape)


def _random_planes(seed: int, height: int = 48, width: int = 64) -> Planes:
    rng = np.random.default_rng(seed)
    half = (height // 2, width // 2)
    return Planes(_every_level(rng, (height, width)), _every_level(rng, half), _every_level(rng, half))


def _yuv420p_array(p: Planes) -> np.ndarray:
    """The (3H/2) x W layout of a yuv420p frame: Y, then Cb, then Cr, each chroma plane row-major."""
    h, w = p.height, p.width
    return np.concatenate([p.y, p.cb.reshape(h // 4, w), p.cr.reshape(h // 4, w)])


def _assert_planes_equal(got: Planes | str, want: Planes) -> None:
    assert isinstance(got, Planes), got
    for name in ("y", "cb", "cr"):
        a, b = getattr(got, name), getattr(want, name)
        assert a.dtype == np.uint8 and a.shape == b.shape, name
        assert np.array_equal(a, b), f"{name}: max diff {_diff(a, b).max()}"


# -- from_video_frame ----------------------------------------------------------------------------------------------


def test_a_limited_range_frame_is_mapped_to_full_range() -> None:
    """A decoder's plain yuv420p frame (range and colourspace unspecified, FFmpeg's default: limited-range BT.601):
    Y 16..235 and Cb/Cr 16..240 stretched to 0..255 by the formula, every level of all three planes checked."""
    src = _random_planes(1)
    frame = av.VideoFrame.from_ndarray(_yuv420p_array(src), format="yuv420p")
    assert (int(frame.colorspace), int(frame.color_range)) == (2, 0)  # unspecified, unspecified
    y, cb, cr = (getattr(src, n).astype(np.float64) for n in ("y", "cb", "cr"))
    # np.rint rounds half to even: the one exact tie is Cb/Cr = 16 -> 0.5 -> 0 (240 -> 255.5 is clipped anyway)
    want = Planes(_u8((y - 16) * 255 / 219), _u8((cb - 128) * 255 / 224 + 128), _u8((cr - 128) * 255 / 224 + 128))
    got = from_video_frame(frame)
    _assert_planes_equal(got, want)
    assert isinstance(got, Planes) and (got.height, got.width) == (48, 64)


@pytest.mark.parametrize("how", ["color_range", "yuvj420p"])
def test_a_full_range_frame_is_taken_as_it_is(how: str) -> None:
    src = _random_planes(2)
    fmt = "yuvj420p" if how == "yuvj420p" else "yuv420p"
    frame = av.VideoFrame.from_ndarray(_yuv420p_array(src), format=fmt)
    if how == "color_range":
        frame.color_range = 2  # AVCOL_RANGE_JPEG
    _assert_planes_equal(from_video_frame(frame), src)


@pytest.mark.parametrize("colorspace", [5, 6])  # bt470bg, smpte170m: BT.601's matrix, as tagged by encoders
def test_frames_tagged_bt601_are_taken(colorspace: int) -> None:
    src = _random_planes(3)
    frame = av.VideoFrame.from_ndarray(_yuv420p_array(src), format="yuv420p")
    frame.colorspace, frame.color_range = colorspace, 2
    _assert_planes_equal(from_video_frame(frame), src)


# -- BT.709 frames: converted to BT.601 planes -----------------------------------------------------------------------


def _bt709_frame(rgb: np.ndarray, full_range: bool) -> av.VideoFrame:
    """``rgb`` as an HD camera's frame, made here by the float formulas: BT.709 Y, Cb, Cr (chroma the mean of each
    2 x 2 block), limited range (Y 16..235, Cb/Cr 16..240) or full, rounded; tagged BT.709 and its range."""
    ycc = rgb.astype(np.float64) @ RGB_TO_BT709.T
    y, cb, cr = ycc[..., 0], _quarter(ycc[..., 1]), _quarter(ycc[..., 2])
    if not full_range:
        y, cb, cr = 16 + y * 219 / 255, cb * 224 / 255, cr * 224 / 255
    frame = av.VideoFrame.from_ndarray(_yuv420p_array(Planes(_u8(y), _u8(cb + 128), _u8(cr + 128))), format="yuv420p")
    frame.colorspace, frame.color_range = 1, (2 if full_range else 1)  # AVCOL_SPC_BT709; AVCOL_RANGE_JPEG or MPEG
    return frame


@pytest.mark.parametrize("full_range", [False, True], ids=["limited", "full"])
def test_a_bt709_frame_becomes_the_bt601_planes_of_its_rgb(full_range: bool) -> None:
    """A camera's BT.709 frame of smooth RGB comes out as the float JFIF planes of that RGB. Y within 2 levels (0.6
    mean): the frame's own rounding (x255/219 in limited range), the range table's, and Y's chroma term taken from
    4:2:0 chroma (measured 1.71 max, 0.44 mean); chroma within 2 levels, 0.6 mean (the frame's rounding, x255/224 in
    limited range, the table's and ours: 1.53 max, 0.41 mean).
    Taken as BT.601 (the planes as they are) Y would be 7 levels mean off here (20 at worst); swapped or dropped
    terms, or no range table, fail it too."""
    rgb = _smooth(12, 48, 64)
    want = rgb.astype(np.float64) @ JFIF.T
    assert _diff(rgb @ RGB_TO_BT709[0], want[..., 0]).mean() > 5  # guard: the two Ys differ on this content
    p = from_video_frame(_bt709_frame(rgb, full_range))
    assert isinstance(p, Planes) and (p.height, p.width) == (48, 64)
    d = _diff(p.y, want[..., 0])
    assert d.max() <= 2 and d.mean() < 0.6, (d.max(), d.mean())
    for i, name in ((1, "cb"), (2, "cr")):
        d = _diff(getattr(p, name), _quarter(want[..., i]) + 128)
        assert d.max() <= 2 and d.mean() < 0.6, (name, d.max(), d.mean())


@pytest.mark.parametrize("full_range", [False, True], ids=["limited", "full"])
def test_bt709_conversion_is_the_float_formula_at_every_level(full_range: bool) -> None:
    """Random planes holding every level (footroom, headroom, chroma extremes that clip): the range formula rounded
    (the tables, as for BT.601), then JFIF . BT.709^-1 in float, Y's chroma term at chroma size upscaled by torch's
    bilinear, clipped. The fixed point keeps Y's term to 1/8 level before the final rounding, so every pixel is
    within 0.625 of the unrounded value (chroma 0.5, + coefficients to 2^-15)."""
    t = JFIF @ BT709_TO_RGB
    np.testing.assert_allclose(BT709_TO_BT601, t, atol=1e-5)  # derived from Kr/Kb = the published matrices
    assert np.allclose(t[:, 0], (1, 0, 0))  # Y from Y alone, chroma without Y: what the Y row as Y + term relies on
    src = _random_planes(13)
    frame = av.VideoFrame.from_ndarray(_yuv420p_array(src), format="yuv420p")
    frame.colorspace, frame.color_range = 1, (2 if full_range else 1)
    y, cb, cr = (getattr(src, n).astype(np.float64) for n in ("y", "cb", "cr"))
    if not full_range:
        y = _u8((y - 16) * 255 / 219).astype(np.float64)
        cb, cr = (_u8((c - 128) * 255 / 224 + 128).astype(np.float64) for c in (cb, cr))
    p = from_video_frame(frame)
    assert isinstance(p, Planes)
    cb, cr = cb - 128, cr - 128
    want_y = y + _bilinear(t[0, 1] * cb + t[0, 2] * cr, (64, 48))
    for name, got, want in (
        ("y", p.y, want_y),
        ("cb", p.cb, 128 + t[1, 1] * cb + t[1, 2] * cr),
        ("cr", p.cr, 128 + t[2, 1] * cb + t[2, 2] * cr),
    ):
        assert got.dtype == np.uint8 and got.shape == want.shape, name
        d = _diff(got, np.clip(want, 0, 255))
        assert d.max() <= (0.63 if name == "y" else 0.51), (name, d.max())


def test_a_bt709_frames_rgb_is_close_to_swscales() -> None:
    """Our planes' RGB vs PyAV/swscale's ``to_ndarray(format="rgb24")`` of the same BT.709 frame (which honours the
    frame's colourspace and range). swscale replicates chroma and rounds its own way: 2.03 levels mean apart here
    (10 at worst), so under 2.5 mean; the same frame tagged BT.601 (what swscale gives then) is 6.5 mean from ours.
    Ours is the closer to the RGB the frame was made from (0.86 vs 2.19 levels mean)."""
    src = _smooth(12, 48, 64)
    frame = _bt709_frame(src, full_range=False)
    p = from_video_frame(frame)
    assert isinstance(p, Planes)
    ours, swscale = p.rgb().astype(np.float64), frame.to_ndarray(format="rgb24").astype(np.float64)
    assert _diff(ours, swscale).mean() < 2.5
    assert _diff(ours, src).mean() < 1.2 and _diff(ours, src).mean() < _diff(swscale, src).mean()
    frame.colorspace = 6  # smpte170m: the same planes as BT.601
    assert _diff(ours, frame.to_ndarray(format="rgb24")).mean() > 4


def _bt2020() -> av.VideoFrame:
    frame = av.VideoFrame.from_ndarray(_yuv420p_array(_random_planes(4)), format="yuv420p")
    frame.colorspace = 9  # AVCOL_SPC_BT2020_NCL: a matrix planes do not convert
    return frame


def _rgb24(height: int = 48, width: int = 64) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(synthetic_image(np.random.default_rng(0), height, width), format="rgb24")


def _odd_size() -> av.VideoFrame:
    """63 x 49 yuv420p (swscale rounds the chroma planes up): 4:2:0 planes of an odd size have no 2 x 2 blocks."""
    return _rgb24(49, 63).reformat(format="yuv420p")


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (_bt2020, "bt2020nc"),
        (_odd_size, "63x49"),
        (_rgb24, "rgb24"),
        (lambda: av.VideoFrame(64, 48, "yuv422p"), "yuv422p"),
        (lambda: av.VideoFrame(64, 48, "nv12"), "nv12"),  # a hardware decoder's layout
    ],
    ids=["bt2020", "odd-size", "rgb24", "yuv422p", "nv12"],
)
def test_other_frames_take_the_rgb_path_with_the_reason(make: Callable[[], av.VideoFrame], cause: str) -> None:
    reason = from_video_frame(make())
    assert isinstance(reason, str) and cause in reason


# -- upscale_plane -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factors",
    [(2, 2), (3, 3), (4, 4), (2, 3)],
    ids=["x2-integer-path", "x3-pillow", "x4-pillow", "x2-by-x3-pillow"],
)
def test_upscale_plane_is_torchs_bilinear(factors: tuple[int, int]) -> None:
    """Uniform random levels (the steepest content, where a wrong weight or edge shows most) on an odd-sized plane:
    every pixel within a level of torch's bilinear rounded (only the rounding of exact halves and, in Pillow, its
    fixed-point weights differ). Nearest-neighbour or misplaced centres are tens of levels off here."""
    plane = np.random.default_rng(sum(factors)).integers(0, 256, (13, 17), dtype=np.uint8)
    size = (17 * factors[0], 13 * factors[1])
    out = upscale_plane(plane, size)
    ref = _bilinear(plane, size)
    assert out.dtype == np.uint8 and out.shape == (size[1], size[0])
    d = _diff(out, _u8(ref))
    assert d.max() <= 1 and d.mean() < 0.25
    assert _diff(out, ref).max() <= 1  # the unrounded reference too: never more than a level away


# -- Planes --------------------------------------------------------------------------------------------------------


def test_rgb_is_the_jfif_conversion() -> None:
    """Pillow's YCbCr -> RGB on Pillow-upscaled chroma vs the float JFIF matrix on torch-upscaled chroma. Pillow's
    8-bit chroma plane is rounded (<= 0.5 level, x1.772 into B) and its fixed-point matrix is within a level of the
    exact one (it truncates: measured over every Y, Cb, Cr), so up to 2 levels at a pixel (measured 1.9, 0.6 mean);
    BT.709's matrix is 4.2 levels mean off here (22 at worst), swapped Cb/Cr or nearest chroma fail it too."""
    p = _planes_of(synthetic_image(np.random.default_rng(6), 48, 64))
    assert np.std(p.cb.astype(float)) > 15 and np.std(p.cr.astype(float)) > 15  # guard: the chroma terms matter
    out = p.rgb()
    ref = _jfif_rgb(p.y.astype(np.float64), _bilinear(p.cb, (64, 48)), _bilinear(p.cr, (64, 48)))
    assert out.shape == (48, 64, 3) and out.dtype == np.uint8
    d = _diff(out, ref)
    assert d.max() <= 2 and d.mean() < 0.75


def test_jpeg_is_the_planes_as_they_are() -> None:
    """The planes' JPEG (libjpeg-turbo from the raw planes) decodes to the planes' RGB as closely as Pillow's own
    JPEG of that RGB at the same quality does: the same DCT quantisation loses the same detail, and Pillow's encoder
    adds its own RGB -> YCbCr and chroma subsampling (measured at quality 90 on this content: 1.27 vs 1.19 levels
    mean). So: under 2 levels mean, and no more than 0.5 worse than Pillow's. Swapped Cb/Cr is ~49 levels off."""
    p = _planes_of(_smooth(7, 48, 64))
    want = p.rgb().astype(np.float64)
    with Image.open(io.BytesIO(p.jpeg(90))) as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (64, 48))
        assert [layer[1:3] for layer in im.layer] == [(2, 2), (1, 1), (1, 1)]  # 4:2:0: Y sampled 2 x 2 per chroma
        got = np.asarray(im.convert("RGB"))
    buf = io.BytesIO()
    Image.fromarray(p.rgb()).save(buf, "JPEG", quality=90)
    pillow = np.asarray(Image.open(buf).convert("RGB"))
    ours, theirs = _diff(got, want).mean(), _diff(pillow, want).mean()
    assert ours < 2 and ours <= theirs + 0.5, (ours, theirs)


def test_yuv420p_is_limited_range_and_round_trips() -> None:
    """``yuv420p()`` is the limited-range formula (exact: no rounding ties there), laid out as PyAV's yuv420p, and
    through a frame and :func:`from_video_frame` comes back within a level (219 or 224 steps hold 256 levels)."""
    p = _random_planes(8)
    a = p.yuv420p()
    assert a.shape == (72, 64) and a.dtype == np.uint8
    y, cb, cr = (getattr(p, n).astype(np.float64) for n in ("y", "cb", "cr"))
    want = _yuv420p_array(
        Planes(_u8(y * 219 / 255 + 16), _u8((cb - 128) * 224 / 255 + 128), _u8((cr - 128) * 224 / 255 + 128))
    )
    assert np.array_equal(a, want)
    back = from_video_frame(av.VideoFrame.from_ndarray(a, format="yuv420p"))
    assert isinstance(back, Planes)
    for name in ("y", "cb", "cr"):
        assert _diff(getattr(back, name), getattr(p, name)).max() <= 1, name


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("y_shape", ["hw", "hw1"])
def test_upscaled_takes_the_new_y_and_upscales_the_chroma(scale: int, y_shape: str) -> None:
    p = _random_planes(9, 32, 64)
    rng = np.random.default_rng(10)
    y = rng.integers(0, 256, (32 * scale, 64 * scale), dtype=np.uint8)
    out = p.upscaled(y if y_shape == "hw" else y[..., None])
    assert (out.height, out.width) == (32 * scale, 64 * scale)
    assert out.y.shape == y.shape and np.array_equal(out.y, y)
    half = (32 * scale, 16 * scale)  # (width, height) of the chroma at the new size
    for name in ("cb", "cr"):
        got, src = getattr(out, name), getattr(p, name)
        assert got.shape == (16 * scale, 32 * scale)
        assert np.array_equal(got, upscale_plane(src, half))
        assert _diff(got, _bilinear(src, half)).max() <= 1  # and that is bilinear, of this plane (not the other)


def test_rgb_is_close_to_swscales_conversion_of_the_same_frame() -> None:
    """A frame as a decoder hands it out (yuv420p, limited range, colourspace unspecified; made here by swscale from
    smooth RGB): our RGB vs PyAV's ``to_ndarray(format="rgb24")``. swscale's default YUV -> RGB is not the exact
    mapping: its 8-bit path comes out darker (measured: +0.73 mean signed difference, ours minus its) and it
    replicates each chroma sample over its 2 x 2 block instead of interpolating, so they are not equal; they stay
    within ~1 level mean (1.02). Ours is the closer of the two to the RGB the frame was made from (0.69 vs 1.28)."""
    src = _smooth(11, 48, 64)
    frame = av.VideoFrame.from_ndarray(src, format="rgb24").reformat(format="yuv420p")
    assert frame.format.name == "yuv420p" and int(frame.colorspace) == 2 and int(frame.color_range) != 2
    p = from_video_frame(frame)
    assert isinstance(p, Planes)
    ours, swscale = p.rgb().astype(np.float64), frame.to_ndarray(format="rgb24").astype(np.float64)
    assert _diff(ours, swscale).mean() < 2
    assert 0 < (ours - swscale).mean() < 1.5  # swscale is the darker one
    assert _diff(ours, src).mean() < _diff(swscale, src).mean()
