"""The one image contract of every caller (``vsr upscale``, ``POST /upscale``, the web page's compare): encoded bytes
or a file -> :class:`DecodedImage` (uint8 RGB HWC for the model, plus what the output must carry), and the model's
output + that -> encoded bytes.

Decode:
- Caps before pixels (:class:`DecodeLimits`): the pixel cap is checked from the header (``Image.open`` is lazy), so a
  decompression bomb — huge dimensions in a tiny file — is refused before any pixel buffer exists (PIL's own bomb
  guard raises the same :class:`TooManyPixels`); the aspect ratio and a progressive JPEG's scan count are capped too.
- EXIF orientation is applied to the pixels (the output is upright and carries no orientation tag).
- The ICC profile is kept and re-attached where it describes the output's colour space (RGB, or grey for grey);
  CMYK is converted to sRGB through its own profile (naively without one) and tagged sRGB.
- 16 bits per channel are reduced to 8 (said in ``notes``); palette images and ``transparency`` become RGB(A).
- Grey (``1``, ``L``, ``LA``, 16-bit, float) goes through the model as RGB and comes back grey (WebP: RGB, it has no
  grey modes); alpha is split off, resized with bicubic and re-attached (JPEG and BMP have none: dropped, and said).

CPU-bound and blocking (the service calls it from a worker thread). The errors are the caller's input errors
(:class:`vsr.errors.UsageError`): the CLI prints them, the service maps each type to its HTTP answer.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

from vsr.errors import UsageError
from vsr.imageops import bicubic_resize
from vsr.planes import Planes, with_chroma

# Input format (PIL's name) -> default output format. MPO (phones' and stereo cameras' multi-picture JPEG) is a
# JPEG followed by more JPEGs: the first image is the photo, and the one decoded.
INPUT_FORMATS = {"PNG": "png", "JPEG": "jpeg", "MPO": "jpeg", "WEBP": "webp", "BMP": "png"}
OUTPUT_FORMATS = ("png", "jpeg", "webp", "bmp")
SUFFIX_FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".webp": "webp", ".bmp": "bmp"}
WITHOUT_ALPHA = frozenset({"jpeg", "bmp"})
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
_ALPHA_MODES = frozenset({"RGBA", "LA", "La", "PA", "RGBa"})


class ImageError(UsageError):
    """An image that cannot be used."""


class EmptyImage(ImageError):
    """No bytes at all."""


class UndecodableImage(ImageError):
    """Not an image, or a corrupt or truncated one."""


class UnsupportedImageFormat(ImageError):
    """A readable image in a format this contract does not take (GIF, TIFF...)."""


class ImageOverLimit(ImageError):
    """Decoding (or upscaling) it would cost more than a cap of :class:`DecodeLimits` allows."""


class TooManyPixels(ImageOverLimit):
    pass


class ExtremeAspectRatio(ImageOverLimit):
    pass


class TooManyScans(ImageOverLimit):
    pass


@dataclass(frozen=True)
class DecodeLimits:
    """Caps checked before the pixels are decoded; None = no cap. The service's: ``DecodeLimits(max_pixels=...)``."""

    max_pixels: int | None = None
    max_aspect_ratio: int | None = MAX_ASPECT_RATIO
    max_jpeg_scans: int | None = MAX_JPEG_SCANS


NO_LIMITS = DecodeLimits(max_aspect_ratio=None, max_jpeg_scans=None)  # a local file the user chose (the CLI)


@dataclass(frozen=True)
class DecodedImage:
    rgb: np.ndarray  # uint8 HWC, 3 channels, upright: what the model sees
    alpha: np.ndarray | None  # uint8 HW, resized with bicubic and re-attached
    gray: bool
    format: str  # PIL's name of the input format
    icc_profile: bytes | None = None  # describes ``rgb`` (sRGB after a CMYK conversion), or the grey of a grey input
    notes: tuple[str, ...] = ()  # what the decode changed beyond orientation (16 -> 8 bits, CMYK -> sRGB)
    # JFIF YCbCr HWC as the JPEG decoder gave it (chroma upsampled, no colour conversion), when asked for and the
    # image is a plain colour JPEG: a luma model's input without an RGB round trip (:func:`planes_output`)
    ycc: np.ndarray | None = None

    @property
    def pixels(self) -> int:
        return int(self.rgb.shape[0] * self.rgb.shape[1])


def decode(data: bytes, limits: DecodeLimits = NO_LIMITS, *, ycc: bool = False) -> DecodedImage:
    """Encoded bytes -> :class:`DecodedImage`. Raises :class:`EmptyImage`, :class:`UndecodableImage`,
    :class:`UnsupportedImageFormat`, or an :class:`ImageOverLimit` (before any pixel is decoded). ``ycc``: also
    keep a colour JPEG's YCbCr as decoded (``DecodedImage.ycc``; RGB is then converted from it)."""
    if not data:
        raise EmptyImage("no image data received")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as e:
        raise TooManyPixels(f"image too large: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise UndecodableImage("the data is not a readable image") from None
    with img:
        if img.format not in INPUT_FORMATS:
            raise UnsupportedImageFormat(f"{img.format} images are not supported; send PNG, JPEG, WebP or BMP")
        w, h = img.size
        if limits.max_pixels is not None and w * h > limits.max_pixels:
            raise TooManyPixels(f"{w}x{h} = {w * h} pixels is over the limit of {limits.max_pixels}")
        if w < 1 or h < 1:
            raise UndecodableImage(f"image has no pixels ({w}x{h})")
        check_decode_cost(data, img.format or "", w, h, limits)
        try:
            return _pixels(img, sixteen_bit=_png_bit_depth(data) == 16, ycc=ycc)
        except (OSError, SyntaxError, ValueError, EOFError):
            raise UndecodableImage("the image data is corrupt or truncated") from None


def read_image(path: Path, limits: DecodeLimits = NO_LIMITS, *, ycc: bool = False) -> DecodedImage:
    """:func:`decode` of a file (``OSError`` when it cannot be read)."""
    return decode(path.read_bytes(), limits, ycc=ycc)


def check_decode_cost(data: bytes, fmt: str, w: int, h: int, limits: DecodeLimits) -> None:
    """Refuse inputs whose decoding (or upscaling) costs far more than their pixel count says."""
    ratio = limits.max_aspect_ratio
    if ratio is not None and max(w, h) > ratio * min(w, h) and max(w, h) > 1024:
        raise ExtremeAspectRatio(f"{w}x{h} is more elongated than 1:{ratio}")
    if limits.max_jpeg_scans is not None and fmt in ("JPEG", "MPO"):
        # An SOS marker (FF DA) cannot occur inside entropy-coded data (an FF there is followed by 00 or RSTn), so
        # this counts the scans exactly, at memchr speed.
        scans = data.count(b"\xff\xda")
        if scans > limits.max_jpeg_scans:
            raise TooManyScans(f"JPEG has {scans} scans; at most {limits.max_jpeg_scans} are decoded")


def _png_bit_depth(data: bytes) -> int | None:
    """The bit depth in a PNG's IHDR (signature 8 bytes, chunk length and type 8, width and height 8)."""
    return data[24] if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 24 else None


def _pixels(img: Image.Image, *, sixteen_bit: bool, ycc: bool = False) -> DecodedImage:
    fmt = img.format or ""
    icc: bytes | None = img.info.get("icc_profile") or None
    notes: list[str] = ["16 bits per channel reduced to 8"] if sixteen_bit else []
    if ycc and fmt in ("JPEG", "MPO") and img.mode == "RGB":
        img.draft("YCbCr", img.size)  # libjpeg stops before its colour conversion (full size: no DCT scaling)
    img.load()
    img = ImageOps.exif_transpose(img)  # a no-op without an EXIF orientation
    if img.mode == "YCbCr":
        return DecodedImage(np.asarray(img.convert("RGB")), None, False, fmt, icc, tuple(notes), np.asarray(img))
    if img.mode == "CMYK":
        img, icc, note = _cmyk_to_rgb(img, icc)
        notes.append(note)
    has_alpha = img.mode in _ALPHA_MODES or "transparency" in img.info
    gray = img.mode in _GRAY_MODES
    if img.mode in _WIDE_GRAY_MODES:  # 16-bit / float grey: PIL's convert clips, so scale to 8 bits ourselves
        arr = np.asarray(img, dtype=np.float64)
        if sixteen_bit or arr.max(initial=0) > 255:
            arr = arr / 257.0
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    if has_alpha:
        rgba = np.asarray(img.convert("RGBA"))
        rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    else:
        rgb, alpha = np.asarray(img.convert("RGB")), None
    return DecodedImage(rgb=rgb, alpha=alpha, gray=gray, format=fmt, icc_profile=icc, notes=tuple(notes))


def _cmyk_to_rgb(img: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None, str]:
    """CMYK -> sRGB through the image's own profile (then tagged sRGB); PIL's naive formula without one."""
    if icc and icc_color_space(icc) == "CMYK":
        try:
            srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            out = ImageCms.profileToProfile(img, src, srgb, outputMode="RGB")
            if out is not None:
                return out, srgb.tobytes(), "CMYK converted to sRGB through its ICC profile"
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass  # a broken profile: fall back to the formula below
    return img.convert("RGB"), None, "CMYK converted to RGB without a colour profile"


def icc_color_space(icc: bytes) -> str:
    """The data colour space an ICC profile describes (its header's bytes 16-19: ``RGB``, ``GRAY``, ``CMYK``...)."""
    return icc[16:20].decode("latin-1").strip() if len(icc) >= 20 else ""


def default_output_format(decoded: DecodedImage) -> str:
    return INPUT_FORMATS.get(decoded.format, "png")


def format_for_path(path: Path) -> str | None:
    """The output format a file name asks for (its extension), or None when it is not one of ours."""
    return SUFFIX_FORMATS.get(path.suffix.lower())


def output_notes(decoded: DecodedImage, fmt: str) -> tuple[str, ...]:
    """What the output of :func:`encode` loses or changes: the decode's notes, a dropped alpha or ICC profile."""
    notes = list(decoded.notes)
    if decoded.alpha is not None and fmt in WITHOUT_ALPHA:
        notes.append(f"alpha dropped: {fmt.upper()} has no alpha channel")
    if decoded.icc_profile and _kept_icc(decoded, fmt) is None:
        notes.append(f"ICC profile dropped: it describes {icc_color_space(decoded.icc_profile) or 'nothing'}")
    return tuple(notes)


def _output_mode(decoded: DecodedImage, fmt: str) -> str:
    gray = decoded.gray and fmt != "webp"  # WebP has no grey modes
    alpha = decoded.alpha is not None and fmt not in WITHOUT_ALPHA
    return ("L" if gray else "RGB") + ("A" if alpha else "")


def _kept_icc(decoded: DecodedImage, fmt: str) -> bytes | None:
    """The input's profile when it describes the output's colour space (a grey profile on RGB would be wrong)."""
    icc = decoded.icc_profile
    if not icc:
        return None
    want = "GRAY" if _output_mode(decoded, fmt).startswith("L") else "RGB"
    return icc if icc_color_space(icc) == want else None


def planes_output(decoded: DecodedImage, fmt: str, scale: int) -> bool:
    """True when a luma model's output of ``decoded`` can be written from planes (:func:`encode` given
    :class:`vsr.planes.Planes`): a colour JPEG decoded as YCbCr, out as a JPEG with nothing else to carry (no alpha,
    no ICC profile to keep, no note), at an even output size (4:2:0)."""
    h, w = decoded.rgb.shape[:2]
    return (
        decoded.ycc is not None
        and fmt == "jpeg"
        and decoded.alpha is None
        and not decoded.icc_profile
        and not decoded.notes
        and (scale * h) % 2 == 0
        and (scale * w) % 2 == 0
    )


def model_input(decoded: DecodedImage, fmt: str, scale: int, *, luma: bool) -> np.ndarray:
    """What the model gets for ``decoded`` written as ``fmt``: a luma model's Y (H x W x 1) where
    :func:`planes_output` allows, else RGB. :func:`model_output` turns the model's answer into what
    :func:`encode` takes."""
    if luma and decoded.ycc is not None and planes_output(decoded, fmt, scale):
        return decoded.ycc[..., :1]
    return decoded.rgb


def model_output(out: np.ndarray, decoded: DecodedImage) -> np.ndarray | Planes:
    """The model's answer to :func:`model_input`: RGB as it is, Y with the decoder's chroma (:func:`with_chroma`)."""
    if out.shape[-1] == 1 and decoded.ycc is not None:
        return with_chroma(out, decoded.ycc[..., 1], decoded.ycc[..., 2])
    return out


def encode(sr: np.ndarray | Planes, decoded: DecodedImage, fmt: str, *, quality: int | None = None) -> bytes:
    """The model's uint8 RGB HWC output (+ the input's alpha, grey and ICC profile) -> encoded ``fmt`` bytes
    (``png``, ``jpeg``, ``webp``, ``bmp``). ``quality``: JPEG/WebP, default :data:`DEFAULT_QUALITY`. Planes (a luma
    model's output where :func:`planes_output` allows) are written as a 4:2:0 JPEG without a colour conversion."""
    if fmt not in OUTPUT_FORMATS:
        raise UsageError(f"unsupported output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}")
    if isinstance(sr, Planes):
        return sr.jpeg(quality if quality is not None else DEFAULT_QUALITY)
    mode = _output_mode(decoded, fmt)
    out = Image.fromarray(sr, "RGB")
    if decoded.gray:
        out = out.convert("L")  # grey in, grey out (for WebP: grey as RGB)
    if decoded.alpha is not None and mode.endswith("A"):
        alpha = bicubic_resize(decoded.alpha, out.size)
        out.putalpha(Image.fromarray(alpha, "L"))  # L -> LA, RGB -> RGBA
    if out.mode != mode:
        out = out.convert(mode)
    options: dict[str, object] = {}
    if (icc := _kept_icc(decoded, fmt)) is not None:
        options["icc_profile"] = icc
    if fmt == "png":
        options["compress_level"] = PNG_COMPRESS_LEVEL
    elif fmt in ("jpeg", "webp"):
        options["quality"] = quality if quality is not None else DEFAULT_QUALITY
    buf = io.BytesIO()
    out.save(buf, format=fmt.upper(), **options)
    return buf.getvalue()
