"""Decode uploads to the frame format (uint8 RGB HWC) and encode results, with the caps checked before pixels.

- The pixel cap is checked from the header (``Image.open`` is lazy): a decompression bomb — huge dimensions in a
  tiny file — is rejected before any pixel buffer exists. PIL's own bomb guard (``DecompressionBombError``) maps to
  the same 413.
- EXIF orientation is applied; grayscale goes through the model as RGB and comes back as ``L``; alpha is upscaled
  with bicubic and re-attached (JPEG has no alpha: it is dropped there).
- CPU-bound and blocking: call these from a thread pool, never on the event loop.
"""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import dataclass
from functools import partial

import anyio
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from service.errors import ApiError
from vsr.imageops import bicubic_resize

# Input format (PIL's name) -> default output format. MPO (phones' and stereo cameras' multi-picture JPEG) is a
# JPEG followed by more JPEGs: the first image is the photo, and the one decoded.
INPUT_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "BMP": "png"}
OUTPUT_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
IMAGE_CONTENT_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp", "image/bmp", "image/x-bmp", "image/x-ms-bmp"}
)
# Decode cost caps (CPU time per request is bounded before any pixel is decoded; measured in docs/reliability.md):
# a progressive JPEG re-reads its coefficients once per scan, and 700k scans in 24 MB took 85 s; encoders write
# ~10 (libjpeg's progression), mozjpeg and phones < 20. A 1 x 8,294,400 PNG (within the pixel cap) took 10 s of
# per-row overhead in the decoder and the tiler; real photos and panoramas stay well under 1:32.
MAX_JPEG_SCANS = 64
MAX_ASPECT_RATIO = 32
DEFAULT_QUALITY = 90
PNG_COMPRESS_LEVEL = 1  # zlib level 1: ~5x faster than the default 6 for a few % larger files
_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "F"})
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "F"})


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # uint8 HWC, 3 channels: what the model sees
    alpha: np.ndarray | None  # uint8 HW, upscaled separately
    gray: bool
    format: str  # PIL's name of the input format
    icc_profile: bytes | None = None

    @property
    def pixels(self) -> int:
        return int(self.rgb.shape[0] * self.rgb.shape[1])


def decode(data: bytes, *, max_pixels: int) -> DecodedImage:
    """Bytes -> :class:`DecodedImage`. Raises ApiError 400 (undecodable), 413 (too many pixels), 415 (format)."""
    if not data:
        raise ApiError(400, "empty_body", "no image data received")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as e:
        raise ApiError(413, "too_many_pixels", f"image too large: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise ApiError(400, "undecodable_image", "the data is not a readable image") from None
    with img:
        if img.format not in INPUT_FORMATS:
            raise ApiError(
                415, "unsupported_format", f"{img.format} images are not supported; send PNG, JPEG, WebP or BMP"
            )
        w, h = img.size
        if w * h > max_pixels:
            raise ApiError(413, "too_many_pixels", f"{w}x{h} = {w * h} pixels is over the limit of {max_pixels}")
        if w < 1 or h < 1:
            raise ApiError(400, "undecodable_image", f"image has no pixels ({w}x{h})")
        check_decode_cost(data, img.format or "", w, h)
        try:
            return _pixels(img)
        except (OSError, SyntaxError, ValueError, EOFError):
            raise ApiError(400, "undecodable_image", "the image data is corrupt or truncated") from None


async def decode_async(
    data: bytes, *, max_pixels: int, deadline: float, limiter: anyio.CapacityLimiter
) -> DecodedImage:
    """:func:`decode` on a worker thread, at most ``limiter`` at once (decoding is CPU: more threads than cores
    only slow each other and the event loop down), answered 504 at ``deadline`` (``time.monotonic()``)."""
    work = partial(decode, data, max_pixels=max_pixels)
    try:
        return await asyncio.wait_for(
            anyio.to_thread.run_sync(work, limiter=limiter, abandon_on_cancel=True),
            timeout=max(deadline - time.monotonic(), 0.0),
        )
    except TimeoutError:
        raise ApiError(504, "deadline_exceeded", "the image was not decoded before the request's deadline") from None


def check_decode_cost(data: bytes, fmt: str, w: int, h: int) -> None:
    """413 for inputs whose decoding (or upscaling) costs far more than their pixel count says."""
    if max(w, h) > MAX_ASPECT_RATIO * min(w, h) and max(w, h) > 1024:
        raise ApiError(413, "extreme_aspect_ratio", f"{w}x{h} is more elongated than 1:{MAX_ASPECT_RATIO}")
    if fmt in ("JPEG", "MPO"):
        # An SOS marker (FF DA) cannot occur inside entropy-coded data (an FF there is followed by 00 or RSTn), so
        # this counts the scans exactly, at memchr speed.
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise ApiError(413, "too_many_scans", f"JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are decoded")


def _pixels(img: Image.Image) -> DecodedImage:
    fmt = img.format or ""
    icc = img.info.get("icc_profile")
    img.load()
    img = ImageOps.exif_transpose(img)  # a no-op without an EXIF orientation
    has_alpha = img.mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in img.info
    gray = img.mode in _GRAY_MODES
    if img.mode in _WIDE_GRAY_MODES:  # 16-bit / float grey: PIL's convert clips, so scale to 8 bits ourselves
        arr = np.asarray(img, dtype=np.float64)
        if arr.max(initial=0) > 255:
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    else:
        rgb, alpha = np.asarray(img.convert("RGB")), None
    return DecodedImage(rgb=rgb, alpha=alpha, gray=gray, format=fmt, icc_profile=icc)


def default_output_format(decoded: DecodedImage) -> str:
    return INPUT_FORMATS.get(decoded.format, "png")


def encode(sr: np.ndarray, decoded: DecodedImage, *, fmt: str, quality: int | None = None) -> bytes:
    """The model's uint8 RGB HWC output (+ the input's alpha/grey/ICC) -> encoded ``fmt`` bytes."""
    out = Image.fromarray(sr, "RGB")
    if decoded.gray:
        out = out.convert("L")
    if decoded.alpha is not None and fmt != "jpeg":
        alpha = bicubic_resize(decoded.alpha, out.size)
        out.putalpha(Image.fromarray(alpha, "L"))  # L -> LA, RGB -> RGBA
    if fmt == "webp" and out.mode in ("L", "LA"):
        out = out.convert("RGBA" if out.mode == "LA" else "RGB")  # WebP has no grey modes
    options: dict[str, object] = {}
    if decoded.icc_profile:
        options["icc_profile"] = decoded.icc_profile
    if fmt == "png":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    else:
        options["quality"] = quality if quality is not None else DEFAULT_QUALITY
    buf = io.BytesIO()
    out.save(buf, format=fmt.upper(), **options)
    return buf.getvalue()
