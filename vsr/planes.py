"""Frames as planes: full-range BT.601 (JFIF) Y, Cb, Cr at 4:2:0, the stream path of a luma model.

A luma model (artifact ``input_space: "y"``) sees and predicts only Y. A camera's decoder hands out yuv420p planes,
so for such a model the RGB round trip around it is pure cost: the decoder's YUV -> RGB, the graph's RGB -> Y and
chroma work (:func:`vsr.ov.rgb_around_luma`), and the JPEG encoder's RGB -> YCbCr and chroma subsampling. Measured
on a 640x360 camera frame, x2-camera-fast, OpenVINO int8, one thread, Intel Xeon (AMX): model 20.1 ms on RGB vs
12.4 on Y, JPEG 2.8 ms from RGB (Pillow) vs 1.6 from planes (+ 0.5 for the chroma upscale). So a luma model's
stream frame goes decoder planes -> :class:`Planes` -> the model on Y -> :meth:`Planes.upscaled` (the new Y with the
source's chroma upscaled) -> :meth:`Planes.jpeg` (libjpeg-turbo's raw-planes encoder, no colour conversion).

What the frame must be for this to equal the RGB path: 4:2:0 (``yuv420p``/``yuvj420p``), even width and height,
and BT.601 colour (``smpte170m``/``bt470bg``, or unspecified, which FFmpeg converts as BT.601). Limited range (or
unspecified: FFmpeg's default) is mapped to full range by a table, as the RGB conversion would. Anything else
(BT.709, 4:2:2, NV12 from a hardware decoder, odd sizes) takes the RGB path: :func:`from_video_frame` says why.

``vsr upscale`` does the same for a luma model, JPEG in and out: the JPEG decoder's YCbCr (``vsr.images``, chroma
already upsampled to full size, which is the 4:2:0 chroma of a x2 output) and a planes JPEG (:func:`with_chroma`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # only the type: the image path imports this module and need not pay for PyAV
    import av

FORMATS = {"yuv420p": False, "yuvj420p": True}  # pixel format -> full range whatever the frame's range flag says
# FFmpeg's AVColorSpace numbers that are BT.601's matrix (2 = unspecified: FFmpeg's conversions take BT.601)
BT601 = {2: "unspecified", 5: "bt470bg", 6: "smpte170m"}
RANGE_FULL = 2  # AVCOL_RANGE_JPEG


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
    """The decoded ``frame`` as :class:`Planes`, or why it must take the RGB path (a short reason)."""
    full = FORMATS.get(frame.format.name)
    if full is None:
        return f"pixel format {frame.format.name} (planes need yuv420p)"
    h, w = frame.height, frame.width
    if h % 2 or w % 2:
        return f"odd frame size {w}x{h}"
    cs = int(frame.colorspace)
    if cs not in BT601:
        return f"colorspace {_colorspace_name(cs)} (planes need BT.601)"
    # (3H/2) x W, one copy: Y, then Cb and Cr, each H/2 x W/2 (a chroma plane need not fill whole rows of W)
    a = np.asarray(frame.to_ndarray(format=frame.format.name), dtype=np.uint8).reshape(-1)  # uint8 already: no copy
    n, q = h * w, h * w // 4
    y, cb, cr = a[:n].reshape(h, w), a[n : n + q].reshape(h // 2, w // 2), a[n + q :].reshape(h // 2, w // 2)
    if not (full or int(frame.color_range) == RANGE_FULL):
        # np.take: 0.23 ms for a 640x360 plane, half of indexing the table with the plane
        y, cb, cr = np.take(Y_TO_FULL, y), np.take(C_TO_FULL, cb), np.take(C_TO_FULL, cr)
    return Planes(y, cb, cr)


def _colorspace_name(cs: int) -> str:
    names = {1: "bt709", 9: "bt2020nc", 10: "bt2020c", 4: "fcc", 7: "smpte240m", 0: "rgb"}
    return names.get(cs, f"#{cs}")


def upscale_plane(plane: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``plane`` resized to ``size`` (width, height), bilinear with half-pixel centres and edge clamp (torch's
    ``align_corners=False``, to within a level). Twice the size has a fast path: 0.23 ms vs Pillow's 0.57 for a
    320x180 plane (Xeon, one thread)."""
    h, w = plane.shape
    if size == (w, h):
        return plane
    if size == (2 * w, 2 * h):
        return _twice(plane)
    return np.asarray(Image.fromarray(plane).resize(size, Image.Resampling.BILINEAR))


def _twice(plane: np.ndarray) -> np.ndarray:
    """Bilinear x2: each output pixel is 3/4 of its nearest input pixel and 1/4 of the next one out, per axis
    (half-pixel centres), in integers: (9, 3, 3, 1) / 16, rounded."""
    h, w = plane.shape
    p = np.pad(plane, 1, mode="edge").astype(np.uint16)
    rows = np.empty((2 * h, w + 2), np.uint16)
    rows[0::2] = 3 * p[1:-1] + p[:-2]
    rows[1::2] = 3 * p[1:-1] + p[2:]
    out = np.empty((2 * h, 2 * w), np.uint16)
    mid = 3 * rows[:, 1:-1]
    out[:, 0::2] = mid + rows[:, :-2]
    out[:, 1::2] = mid + rows[:, 2:]
    return ((out + 8) >> 4).astype(np.uint8)
