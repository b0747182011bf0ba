"""The image contract (vsr.images) on its own: bit depth, CMYK, ICC rules, caps before pixels, and its errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.support.awkward import gray_icc, png16, srgb_icc
from tests.support.media import encode, rgb
from vsr import images
from vsr.errors import UsageError
from vsr.images import NO_LIMITS, DecodeLimits, decode, output_notes


def reopen(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_16_bit_rgb_is_reduced_to_8_and_said() -> None:
    values = rgb(seed=1).astype(np.uint16) * 257 + 128
    d = decode(png16(values))
    assert d.rgb.dtype == np.uint8 and d.rgb.shape == (24, 32, 3)
    assert np.abs(d.rgb.astype(int) - np.rint(values / 257)).max() <= 1
    assert d.notes == ("16 bits per channel reduced to 8",)


def test_dark_16_bit_grey_stays_dark() -> None:
    """A 16-bit grey image whose values all sit below 256 is nearly black, not an 8-bit image."""
    values = np.tile(np.arange(0, 256, 8, dtype=np.uint16), (4, 1))
    d = decode(encode(Image.fromarray(values)))
    assert d.gray and d.rgb.max() <= 1
    np.testing.assert_array_equal(d.rgb[..., 0], np.rint(values / 257).astype(np.uint8))


def test_cmyk_without_profile_is_converted_and_said() -> None:
    cmyk = Image.fromarray(rgb(seed=2)).convert("CMYK")
    d = decode(encode(cmyk, "JPEG", quality=100))
    expected = np.asarray(reopen(encode(cmyk, "JPEG", quality=100)).convert("RGB"))
    np.testing.assert_array_equal(d.rgb, expected)
    assert d.icc_profile is None and "CMYK converted to RGB without a colour profile" in d.notes


def test_icc_is_kept_where_it_describes_the_output() -> None:
    color = decode(encode(rgb(), icc_profile=srgb_icc()))
    for fmt in ("png", "jpeg", "webp"):
        assert reopen(images.encode(color.rgb, color, fmt)).info.get("icc_profile") == srgb_icc(), fmt
    grey = decode(encode(Image.fromarray(rgb()[..., 0]), icc_profile=gray_icc()))
    sr = grey.rgb  # stands in for the model's output: the ICC rule does not depend on the pixels
    assert reopen(images.encode(sr, grey, "png")).info.get("icc_profile") == gray_icc()  # grey out: kept
    webp = reopen(images.encode(sr, grey, "webp"))  # WebP has no grey: RGB, so a grey profile would lie
    assert webp.mode == "RGB" and not webp.info.get("icc_profile")
    assert output_notes(grey, "webp") == ("ICC profile dropped: it describes GRAY",)


def test_alpha_dropped_for_jpeg_and_bmp_is_said() -> None:
    d = decode(encode(np.dstack([rgb(), np.full((24, 32), 100, np.uint8)])))
    assert d.alpha is not None
    for fmt in ("jpeg", "bmp"):
        assert reopen(images.encode(d.rgb, d, fmt)).mode == "RGB"
        assert output_notes(d, fmt) == (f"alpha dropped: {fmt.upper()} has no alpha channel",)
    assert reopen(images.encode(d.rgb, d, "png")).mode == "RGBA" and output_notes(d, "png") == ()


def test_caps_are_checked_before_pixels() -> None:
    tall = encode(np.zeros((2000, 40, 3), np.uint8))
    with pytest.raises(images.ExtremeAspectRatio):
        decode(tall, DecodeLimits())
    assert decode(tall, NO_LIMITS).rgb.shape == (2000, 40, 3)  # a local file: the user's choice
    scans = encode(rgb(), "JPEG") + b"\xff\xda" * 70  # SOS markers counted in the bytes, before decoding
    with pytest.raises(images.TooManyScans):
        decode(scans, DecodeLimits())
    with pytest.raises(images.TooManyPixels):
        decode(encode(rgb()), DecodeLimits(max_pixels=24 * 32 - 1))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", images.EmptyImage),
        (b"not an image", images.UndecodableImage),
        (encode(rgb(64, 64))[:200], images.UndecodableImage),
        (encode(rgb(), "GIF"), images.UnsupportedImageFormat),
    ],
    ids=["empty", "garbage", "truncated", "gif"],
)
def test_errors_are_the_users(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error) as e:
        decode(data)
    assert isinstance(e.value, UsageError)  # the CLI prints it as one line
