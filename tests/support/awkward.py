"""Awkward image files as phones, scanners and editors write them, built in memory (no real data): EXIF-rotated,
16-bit, CMYK, palette with transparency, grey with and without alpha, RGBA, ICC-tagged."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageCms

from tests.support.media import encode, rgb

ORIENTATION = 0x0112  # the EXIF tag


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def gray_icc() -> bytes:
    """A profile whose header says GRAY (the sRGB one relabelled: only the header is read on our side)."""
    icc = bytearray(srgb_icc())
    icc[16:20] = b"GRAY"
    return bytes(icc)


def red_corner(height: int = 24, width: int = 32) -> np.ndarray:
    img = rgb(height, width, seed=3)
    img[:8, :8] = (255, 0, 0)  # a red top-left corner (as stored)
    return img


def exif_rotated_jpeg() -> bytes:
    """24x32 stored, EXIF orientation 6 ("rotate 90 CW to display": 32x24 upright), sRGB-tagged: a phone photo."""
    exif = Image.Exif()
    exif[ORIENTATION] = 6
    return encode(red_corner(), "JPEG", exif=exif.tobytes(), quality=95, icc_profile=srgb_icc())


def png16(values: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (PIL writes 16-bit grey but not 16-bit RGB)."""
    h, w, _ = values.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\0" + values[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _palette_transparent() -> bytes:
    p = Image.fromarray(rgb(seed=4)).quantize(16)
    return encode(p, transparency=0)


def _alpha_ramp(height: int = 24, width: int = 32) -> np.ndarray:
    return np.tile(np.linspace(0, 255, width, dtype=np.uint8), (height, 1))


def _la() -> bytes:
    grey = rgb(seed=5)[..., 1]
    return encode(Image.fromarray(np.dstack([grey, _alpha_ramp()]), "LA"))


def _rgba(fmt: str) -> bytes:
    rgba = np.dstack([rgb(seed=6), _alpha_ramp()])
    return encode(rgba, fmt, lossless=True) if fmt == "WEBP" else encode(rgba, fmt)


# name -> (the file's bytes, its extension)
AWKWARD: dict[str, Callable[[], tuple[bytes, str]]] = {
    "exif-rotated-jpeg": lambda: (exif_rotated_jpeg(), "jpg"),
    "16-bit-rgb-png": lambda: (png16(rgb(seed=7).astype(np.uint16) * 257 + 100), "png"),
    "16-bit-grey-png": lambda: (encode(Image.fromarray(rgb(seed=8)[..., 0].astype(np.uint16) * 200)), "png"),
    "cmyk-jpeg": lambda: (encode(Image.fromarray(rgb(seed=9)).convert("CMYK"), "JPEG", quality=95), "jpg"),
    "palette-transparent-png": lambda: (_palette_transparent(), "png"),
    "la-png": lambda: (_la(), "png"),
    "grey-jpeg": lambda: (encode(Image.fromarray(rgb(seed=10)[..., 2]), "JPEG", quality=95), "jpg"),
    "grey-icc-png": lambda: (encode(Image.fromarray(rgb(seed=13)[..., 1]), icc_profile=gray_icc()), "png"),
    "rgba-png": lambda: (_rgba("PNG"), "png"),
    "rgba-webp": lambda: (_rgba("WEBP"), "webp"),
    "icc-png": lambda: (encode(rgb(seed=11), icc_profile=srgb_icc()), "png"),
    "bmp": lambda: (encode(rgb(seed=12), "BMP"), "bmp"),
}
