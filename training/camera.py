"""Real camera degradations, as plain functions of an explicit ``numpy.random.Generator``.

A camera's chain, in the order it happens: optics (defocus or motion blur) on the scene -> the sensor samples it
(downscale with some kernel) -> sensor noise (photon/Poisson + read/Gaussian, mostly in luma) -> the encoder
(H.264/HEVC, yuv420p, a GOP with P/B frames). :func:`degrade_clip` applies that chain to a short clip of HR frames made
by :func:`pan_zoom_clip`, so the codec sees motion and produces inter-frame artefacts, not only intra blocking.

Frames are uint8 RGB HWC arrays; clips are uint8 THWC. Nothing here touches global random state.
"""

from __future__ import annotations

import io
import math

import av
import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from training.camera_config import CODECS, KERNELS, CameraDegradation
from vsr.imageops import downscale


def available_codecs() -> list[str]:
    """The codec names of :data:`CODECS` whose encoder this PyAV wheel carries."""
    return [k for k, enc in CODECS.items() if enc in av.codecs_available]


# -- clips ---------------------------------------------------------------------------------------------------------


def pan_zoom_clip(
    img: np.ndarray, *, frames: int, size: tuple[int, int], rng: np.random.Generator, max_speed: float = 3.0
) -> np.ndarray:
    """``frames`` crops of ``size`` = (h, w) from ``img`` along a slow random pan with a slight zoom (THWC uint8).

    Sub-pixel motion (bicubic resampling of each window) is what a real pan gives a codec: motion vectors with
    fractional parts and residuals, i.e. the P/B-frame artefacts that intra-only JPEG never shows.
    """
    h, w = size
    ih, iw = img.shape[:2]
    if ih < h or iw < w:
        raise ValueError(f"image {iw}x{ih} is smaller than the clip size {w}x{h}")
    speed = rng.uniform(0.0, max_speed)
    angle = rng.uniform(0.0, 2 * math.pi)
    vx, vy = speed * math.cos(angle), speed * math.sin(angle)
    zoom_rate = rng.uniform(-0.01, 0.01)  # relative change of the window size per frame
    # Keep every window inside the image: the largest window (zoom out) plus the whole path must fit.
    zmax = (1 + abs(zoom_rate)) ** (frames - 1)
    span_x, span_y = abs(vx) * (frames - 1), abs(vy) * (frames - 1)
    free_x, free_y = iw - w * zmax - span_x, ih - h * zmax - span_y
    if free_x < 0 or free_y < 0:  # too little room for this motion: a static window
        vx = vy = zoom_rate = 0.0
        zmax, span_x, span_y, free_x, free_y = 1.0, 0.0, 0.0, iw - w, ih - h
    x0 = rng.uniform(0, free_x) + (span_x if vx < 0 else 0.0)
    y0 = rng.uniform(0, free_y) + (span_y if vy < 0 else 0.0)
    pil = Image.fromarray(img)
    out = np.empty((frames, h, w, 3), np.uint8)
    for t in range(frames):
        z = (1 + zoom_rate) ** t
        cx = x0 + vx * t + w * zmax / 2  # window centre moves along the path; zoom scales around it
        cy = y0 + vy * t + h * zmax / 2
        # PIL's affine maps output (u, v) to input (a*u + b*v + c, d*u + e*v + f)
        coeffs = (z, 0.0, cx - z * w / 2, 0.0, z, cy - z * h / 2)
        out[t] = np.asarray(pil.transform((w, h), Image.Transform.AFFINE, coeffs, Image.Resampling.BICUBIC))
    return out


# -- optics --------------------------------------------------------------------------------------------------------


def _filter(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve each channel of a uint8 HWC image with a normalised 2-D kernel (reflect padding)."""
    k = torch.from_numpy((kernel / kernel.sum()).astype(np.float32))[None, None].repeat(3, 1, 1, 1)
    x = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float()
    ph, pw = kernel.shape[0] // 2, kernel.shape[1] // 2
    y = F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="reflect"), k, groups=3)
    return y[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def defocus_kernel(radius: float) -> np.ndarray:
    """A disk (the shape of an out-of-focus point), anti-aliased at its edge."""
    r = max(int(math.ceil(radius)), 1)
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    return np.clip(radius + 0.5 - np.hypot(yy, xx), 0.0, 1.0)


def motion_kernel(length: float, angle: float) -> np.ndarray:
    """A line segment of ``length`` pixels at ``angle`` radians (camera shake during the exposure)."""
    r = max(int(math.ceil(length / 2)), 1)
    k = np.zeros((2 * r + 1, 2 * r + 1))
    for s in np.linspace(-length / 2, length / 2, 4 * r + 1):
        k[int(round(r + s * math.sin(angle))), int(round(r + s * math.cos(angle)))] += 1.0
    return k


def defocus_blur(img: np.ndarray, radius: float) -> np.ndarray:
    return _filter(img, defocus_kernel(radius))


def motion_blur(img: np.ndarray, length: float, angle: float) -> np.ndarray:
    return _filter(img, motion_kernel(length, angle))


# -- sampling ------------------------------------------------------------------------------------------------------


def downscale_with(img: np.ndarray, scale: int, kernel: str, *, sigma: float = 0.8) -> np.ndarray:
    """Downscale by ``scale`` with one of :data:`KERNELS` (``gaussian``: blur, then a box reduce — a sensor's
    pixel integration); all centre-aligned like the bicubic protocol, so HR targets stay registered."""
    h, w = img.shape[:2]
    img = img[: h - h % scale, : w - w % scale]
    size = (img.shape[1] // scale, img.shape[0] // scale)
    if kernel == "bicubic":
        return downscale(img, scale)
    if kernel == "gaussian":
        r = max(int(math.ceil(3 * sigma)), 1)
        ax = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
        return np.asarray(Image.fromarray(_filter(img, np.outer(ax, ax))).reduce(scale))
    filters = {
        "bilinear": Image.Resampling.BILINEAR,
        "lanczos": Image.Resampling.LANCZOS,
        "box": Image.Resampling.BOX,
    }
    if kernel not in filters:
        raise ValueError(f"unknown kernel {kernel!r}; known: {KERNELS}")
    return np.asarray(Image.fromarray(img).resize(size, filters[kernel]))


# -- sensor noise --------------------------------------------------------------------------------------------------


def sensor_noise(
    img: np.ndarray, *, gauss_sigma: float, photons: float, chroma: float, rng: np.random.Generator
) -> np.ndarray:
    """Poisson (shot, ``photons`` per full-scale pixel; 0 = none) + Gaussian (read, ``gauss_sigma`` levels) noise.

    Luma-weighted: one noise field is shared by R, G and B (it lands in Y); each channel adds only ``chroma`` times
    its own field, as a camera's ISP denoises chroma much harder than luma. Shot noise grows with brightness.
    """
    x = img.astype(np.float32) / 255.0
    h, w = x.shape[:2]
    std = np.full((h, w, 1), gauss_sigma / 255.0, np.float32)
    if photons > 0:
        lum = x.mean(axis=2, keepdims=True)
        std = np.sqrt(std**2 + lum / photons)  # Poisson variance = mean / photons, in full-scale units
    shared = rng.standard_normal((h, w, 1), dtype=np.float32)
    own = rng.standard_normal((h, w, 3), dtype=np.float32)
    noisy = x + std * (shared + chroma * own) / math.sqrt(1 + chroma**2)
    return np.clip(np.rint(noisy * 255.0), 0, 255).astype(np.uint8)


# -- codec ---------------------------------------------------------------------------------------------------------


MIN_CODEC_SIDE = 64


def codec_roundtrip(clip: np.ndarray, *, codec: str, crf: int, preset: str = "veryfast", gop: int = 12,
                    bframes: int = 2, fps: int = 25) -> np.ndarray:  # fmt: skip
    """Encode a THWC uint8 clip with ``codec`` (h264/h265) at ``crf`` in yuv420p, decode it back (same shape).

    Odd sizes are padded by edge replication for the 4:2:0 encoder and cropped after decoding; so are frames under
    64 pixels a side (libx265 in PyAV 18 corrupts the heap on e.g. 46x46 frames: its CTU is 64).
    """
    t, h, w = clip.shape[:3]
    ph, pw = max(h % 2, MIN_CODEC_SIDE - h), max(w % 2, MIN_CODEC_SIDE - w)
    if ph or pw:
        clip = np.pad(clip, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as out:
        stream = out.add_stream(CODECS[codec], rate=fps)
        assert isinstance(stream, av.VideoStream)
        stream.width, stream.height = clip.shape[2], clip.shape[1]
        stream.pix_fmt = "yuv420p"
        opts = {"crf": str(crf), "preset": preset, "g": str(gop), "bf": str(bframes)}
        if codec == "h265":
            opts["x265-params"] = f"log-level=error:keyint={gop}:bframes={bframes}"
        stream.codec_context.options = opts
        for frame in clip:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())
    buf.seek(0)
    with av.open(buf, "r") as inp:
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    if len(decoded) != t:
        raise RuntimeError(f"{codec} round trip returned {len(decoded)} frames for {t}")
    return np.stack(decoded)[:, :h, :w]


# -- the chain -----------------------------------------------------------------------------------------------------


def degrade_clip(hr_clip: np.ndarray, scale: int, cfg: CameraDegradation, rng: np.random.Generator) -> np.ndarray:
    """HR clip (THWC) -> degraded LR clip: blur -> downscale kernel -> sensor noise -> codec, each with its
    probability; one draw of the parameters per clip (a camera's settings do not change frame to frame)."""
    frames = list(hr_clip)
    if rng.random() < cfg.blur_prob:
        if rng.random() < 0.5:
            k = defocus_kernel(float(rng.uniform(*cfg.defocus_radius)))
        else:
            k = motion_kernel(float(rng.uniform(*cfg.motion_length)), float(rng.uniform(0, math.pi)))
        frames = [_filter(f, k) for f in frames]
    kernel = str(rng.choice(list(cfg.kernels))) if rng.random() < cfg.kernel_prob else "bicubic"
    sigma = float(rng.uniform(0.5, 1.2))
    lr = [downscale_with(f, scale, kernel, sigma=sigma) for f in frames]
    if rng.random() < cfg.noise_prob:
        gs, ph = float(rng.uniform(*cfg.gauss_sigma)), float(rng.uniform(*cfg.photons))
        lr = [sensor_noise(f, gauss_sigma=gs, photons=ph, chroma=cfg.chroma, rng=rng) for f in lr]
    clip = np.stack(lr)
    codecs = [c for c in cfg.codecs if c in available_codecs()]
    if codecs and rng.random() < cfg.codec_prob:
        clip = codec_roundtrip(
            clip,
            codec=str(rng.choice(codecs)),
            crf=int(rng.integers(cfg.crf[0], cfg.crf[1] + 1)),
            preset=str(rng.choice(list(cfg.presets))),
            gop=int(rng.integers(cfg.gop[0], cfg.gop[1] + 1)),
            bframes=int(rng.integers(cfg.bframes[0], cfg.bframes[1] + 1)),
        )
    return clip
