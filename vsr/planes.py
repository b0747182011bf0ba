"""Frames as planes: full-range BT.601 (JFIF) Y, Cb, Cr at 4:2:0, the stream path of a luma model.

A luma model (artifact ``input_space: "y"``) sees and predicts only Y. A camera's decoder hands out yuv420p planes,
so for such a model the RGB round trip around it is pure cost: the decoder's YUV -> RGB, the graph's RGB -> Y and
chroma work (:func:`vsr.ov.rgb_around_luma`), and the JPEG encoder's RGB -> YCbCr and chroma subsampling. Measured
on a 640x360 camera frame, x2-camera-fast, OpenVINO int8, one thread, Intel Xeon (AMX): model 20.1 ms on RGB vs
12.4 on Y, JPEG 2.8 ms from RGB (Pillow) vs 1.6 from planes (+ 0.5 for the chroma upscale). So a luma model's
stream frame goes decoder planes -> :class:`Planes` -> the model on Y -> :meth:`Planes.upscaled` (the new Y with the
source's chroma upscaled) -> :meth:`Planes.jpeg` (libjpeg-turbo's raw-planes encoder, no colour conversion).

What the frame must be for this to equal the RGB path: 4:2:0 (``yuv420p``/``yuvj420p``), even width and height,
and BT.601 colour (``smpte170m``/``bt470bg``, or unspecified, which FFmpeg converts as BT.601) or BT.709 (HD cameras).
Limited range (or unspecified: FFmpeg's default) is mapped to full range by a table, as the RGB conversion would. A
BT.709 frame's planes are then converted to BT.601 in YCbCr, at the input's size, without RGB
(:func:`bt709_to_bt601`: the matrix only, as swscale's YUV -> RGB does; primaries and transfer stay as they are).
Anything else (BT.2020, 4:2:2, NV12 from a hardware decoder, odd sizes) takes the RGB path: :func:`from_video_frame`
says why.

``vsr upscale`` does the same for a luma model, JPEG in and out: the JPEG decoder's YCbCr (``vsr.images``, chroma
already upsampled to full size, which is the 4:2:0 chroma of a x2 output) and a planes JPEG (:func:`with_chroma`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # only the type: the image path imports this module and need not pay for PyAV
    import av

FORMATS = {"yuv420p": False, "yuvj420p": True}  # pixel format -> full range whatever the frame's range flag says
# FFmpeg's AVColorSpace numbers that are BT.601's matrix (2 = unspecified: FFmpeg's conversions take BT.601)
BT601 = {2: "unspecified", 5: "bt470bg", 6: "smpte170m"}
BT709 = 1  # AVCOL_SPC_BT709: converted to BT.601 planes (bt709_to_bt601)
RANGE_FULL = 2  # AVCOL_RANGE_JPEG


def ycbcr_matrix(kr: float, kb: float) -> np.ndarray:
    """Full-range R'G'B' -> Y, Cb, Cr (Cb/Cr centred at 0) of the luma weights ``kr``, ``kb`` (ITU-R BT.601/709)."""
    kg = 1 - kr - kb
    cb, cr = 2 * (1 - kb), 2 * (1 - kr)  # Cb = (B' - Y) / cb, Cr = (R' - Y) / cr
    return np.array([[kr, kg, kb], [-kr / cb, -kg / cb, 0.5], [0.5, -kg / cr, -kb / cr]])


# BT.709 YCbCr -> BT.601 YCbCr, both full range, chroma centred at 0: M601 . M709^-1. Grey (Cb = Cr = 0) is grey in
# both, so the Y row is (1, a, b) and the chroma rows take no Y: Y601 = Y709 + a Cb + b Cr (a 0.102, b 0.196).
BT709_TO_BT601 = ycbcr_matrix(0.299, 0.114) @ np.linalg.inv(ycbcr_matrix(0.2126, 0.0722))
_FIX = 14  # fraction bits of the coefficients (int32 at chroma size; a coefficient's error <= 2^-15 of a level)
_T = np.rint(BT709_TO_BT601 * (1 << _FIX)).astype(np.int32)


def _lut(scale: float, offset: float, centre: float) -> np.ndarray:
    x = np.arange(256, dtype=np.float64)
    return np.clip(np.rint((x - offset) * scale + centre), 0, 255).astype(np.uint8)


# limited (Y 16..235, Cb/Cr 16..240 around 128) <-> full range, rounded as swscale's 8-bit conversion rounds
Y_TO_FULL = _lut(255 / 219, 16, 0)
C_TO_FULL = _lut(255 / 224, 128, 128)
Y_TO_LIMITED = _lut(219 / 255, 0, 16)
C_TO_LIMITED = _lut(224 / 255, 128, 128)


@dataclass(frozen=True)
class Planes:
    """One frame as full-range BT.601 planes: ``y`` H x W, ``cb``/``cr`` H/2 x W/2, all uint8 (H, W even)."""

    y: np.ndarray
    cb: np.ndarray
    cr: np.ndarray

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    def upscaled(self, y: np.ndarray) -> Planes:
        """The frame with ``y`` (the model's output, ``scale`` x this size; H x W or H x W x 1) as luma and this
        frame's chroma upscaled bilinearly to match (what :class:`vsr.luma.LumaAsRGB` does to Cb/Cr)."""
        return with_chroma(y, self.cb, self.cr)

    def jpeg(self, quality: int = 80) -> bytes:
        """A baseline JFIF JPEG, 4:2:0, encoded from the planes as they are (no colour conversion)."""
        import simplejpeg

        return bytes(simplejpeg.encode_jpeg_yuv_planes(self.y, self.cb, self.cr, quality=quality))

    def rgb(self) -> np.ndarray:
        """uint8 RGB H x W x 3 (JFIF's YCbCr -> RGB, chroma upscaled bilinearly): for callers that need RGB."""
        size = (self.width, self.height)
        cb, cr = (Image.fromarray(p).resize(size, Image.Resampling.BILINEAR) for p in (self.cb, self.cr))
        return np.asarray(Image.merge("YCbCr", (Image.fromarray(self.y), cb, cr)).convert("RGB"))

    def yuv420p(self) -> np.ndarray:
        """Limited-range yuv420p as one (3H/2) x W array (``av.VideoFrame.from_ndarray(..., format="yuv420p")``):
        what an H.264 encoder takes without converting."""
        h, w = self.height, self.width
        n, q = h * w, h * w // 4
        out = np.empty(n + 2 * q, np.uint8)
        np.take(Y_TO_LIMITED, self.y.reshape(-1), out=out[:n])
        np.take(C_TO_LIMITED, self.cb.reshape(-1), out=out[n : n + q])
        np.take(C_TO_LIMITED, self.cr.reshape(-1), out=out[n + q :])
        return out.reshape(h * 3 // 2, w)


def with_chroma(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> Planes:
    """``y`` (H x W or H x W x 1, H and W even) with ``cb``/``cr`` (any size) resized to its 4:2:0 chroma. A JPEG's
    full-size decoded chroma under a x2 output is that size already: no resize."""
    y = y.reshape(y.shape[0], y.shape[1])
    size = (y.shape[1] // 2, y.shape[0] // 2)
    return Planes(y, *(np.ascontiguousarray(upscale_plane(c, size)) for c in (cb, cr)))


def from_video_frame(frame: av.VideoFrame) -> Planes | str:
    """The decoded ``frame`` as :class:`Planes`, or why it must take the RGB path (a short reason). A BT.601 (or
    unspecified) frame's planes are taken as they are, limited range mapped to full; a BT.709 frame's are also
    converted to BT.601 (:func:`bt709_to_bt601`)."""
    full = FORMATS.get(frame.format.name)
    if full is None:
        return f"pixel format {frame.format.name} (planes need yuv420p)"
    h, w = frame.height, frame.width
    if h % 2 or w % 2:
        return f"odd frame size {w}x{h}"
    cs = int(frame.colorspace)
    if cs not in BT601 and cs != BT709:
        return f"colorspace {_colorspace_name(cs)} (planes need BT.601 or BT.709)"
    # (3H/2) x W, one copy: Y, then Cb and Cr, each H/2 x W/2 (a chroma plane need not fill whole rows of W)
    a = np.asarray(frame.to_ndarray(format=frame.format.name), dtype=np.uint8).reshape(-1)  # uint8 already: no copy
    n, q = h * w, h * w // 4
    y, cb, cr = a[:n].reshape(h, w), a[n : n + q].reshape(h // 2, w // 2), a[n + q :].reshape(h // 2, w // 2)
    limited = not (full or int(frame.color_range) == RANGE_FULL)
    if cs == BT709:
        return bt709_to_bt601(y, cb, cr, limited=limited)
    if limited:
        # np.take: 0.23 ms for a 640x360 plane, half of indexing the table with the plane
        y, cb, cr = np.take(Y_TO_FULL, y), np.take(C_TO_FULL, cb), np.take(C_TO_FULL, cr)
    return Planes(y, cb, cr)


def bt709_to_bt601(y: np.ndarray, cb: np.ndarray, cr: np.ndarray, *, limited: bool) -> Planes:
    """BT.709 4:2:0 planes (uint8, limited or full range) as full-range BT.601 :class:`Planes`, in YCbCr: the range
    tables, then :data:`BT709_TO_BT601`. Chroma is mixed at its own size; Y's chroma term (a Cb + b Cr) is made at
    chroma size, upscaled x2 bilinearly (as :func:`upscale_plane`: chroma centred) and added (4:2:0 has no finer).
    Fixed point, rounded once per plane. A limited-range 640x360 frame: 0.80 ms, of which 0.35 the range tables
    that a BT.601 frame pays too (:func:`from_video_frame` 0.90 ms vs 0.40 for BT.601; median, one thread, Intel
    Xeon, a busy 2-core VM), against the RGB path's ~4 ms more a frame."""
    # the tables first, as for a BT.601 frame: np.take's index temporary (8 bytes a pixel) is freed before the rest
    # allocates (Y's table taken after the chroma work had glibc hand out fresh pages every frame: 868 page faults,
    # +0.9 ms at 640x360)
    if limited:
        y, cb, cr = np.take(Y_TO_FULL, y), np.take(C_TO_FULL, cb), np.take(C_TO_FULL, cr)
    c = [cb.astype(np.int32), cr.astype(np.int32)]
    for p in c:
        p -= 128
    t = c[0] * _T[0, 1]
    t += c[1] * _T[0, 2]
    t += 1 << (_FIX - 3)
    t >>= _FIX - 2  # 2 fraction bits (an error <= 1/8 level)
    t += 2  # + 1/2 level: Y's rounding
    # int16, 6 fraction bits: the x2 upscale's weights add 4; Y 255 and a chroma term of < 39 levels fit
    out = _twice_sum(t.astype(np.int16), np.int16)
    out += np.left_shift(y, 6, dtype=np.int16)
    out >>= 6
    return Planes(_u8(out), *(_u8(_mixed(c, _T[i, 1], _T[i, 2])) for i in (1, 2)))


def _mixed(c: list[np.ndarray], a: np.int32, b: np.int32) -> np.ndarray:
    """a Cb + b Cr + 128, rounded (``c``: Cb, Cr centred at 0, int32; ``a``, ``b`` in _FIX fraction bits)."""
    s = c[0] * a
    s += c[1] * b
    s += (128 << _FIX) + (1 << (_FIX - 1))
    s >>= _FIX
    return s


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0, 255, out=x).astype(np.uint8)


def _colorspace_name(cs: int) -> str:
    names = {1: "bt709", 9: "bt2020nc", 10: "bt2020c", 4: "fcc", 7: "smpte240m", 0: "rgb"}
    return names.get(cs, f"#{cs}")


def upscale_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``plane`` resized to ``size`` (width, height), bilinear with half-pixel centres and edge clamp (torch's
    ``align_corners=False``, to within a level). Twice the size has a fast path: 0.15 ms vs Pillow's 0.58 for a
    320x180 plane (Xeon, one thread)."""
    h, w = plane.shape
    if size == (w, h):
        return plane
    if size == (2 * w, 2 * h):
        return _twice(plane)
    return np.asarray(Image.fromarray(plane).resize(size, Image.Resampling.BILINEAR))


def _twice(plane: np.ndarray) -> np.ndarray:
    """Bilinear x2 of a uint8 plane: :func:`_twice_sum` / 16, rounded."""
    out = _twice_sum(plane, np.uint16)
    out += 8
    out >>= 4
    return out.astype(np.uint8)


def _twice_sum(plane: np.ndarray, dtype: type[np.integer[Any]]) -> np.ndarray:
    """16 x the bilinear x2 of ``plane``, in ``dtype``, not rounded: each output pixel is 3/4 of its nearest input
    pixel and 1/4 of the next one out, per axis (half-pixel centres, edge clamp), in integers (9, 3, 3, 1)."""
    h, w = plane.shape
    p = np.empty((h + 2, w + 2), dtype)  # the plane, edge-padded by one
    p[1:-1, 1:-1] = plane
    p[0, 1:-1], p[-1, 1:-1] = plane[0], plane[-1]
    p[:, 0], p[:, -1] = p[:, 1], p[:, -2]
    mid = 3 * p[:, 1:-1]
    cols = np.empty((h + 2, w, 2), dtype)  # across first, at the input's height (then each row is written whole)
    np.add(mid, p[:, :-2], out=cols[..., 0])
    np.add(mid, p[:, 2:], out=cols[..., 1])
    cols = cols.reshape(h + 2, 2 * w)
    mid = 3 * cols[1:-1]
    out = np.empty((h, 2, 2 * w), dtype)
    np.add(mid, cols[:-2], out=out[:, 0])
    np.add(mid, cols[2:], out=out[:, 1])
    return out.reshape(2 * h, 2 * w)
