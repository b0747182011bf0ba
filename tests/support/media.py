"""Seeded synthetic media: smooth images (tiny; no real data), encoded images, tiny video clips made with PyAV."""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image


def synthetic_image(rng: np.random.Generator, height: int = 24, width: int = 32) -> np.ndarray:
    """A smooth, natural-ish uint8 RGB image: random gradients and sinusoids plus a little noise."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for _ in range(3):
        fy, fx = rng.uniform(0.05, 0.4, size=2)
        ph = rng.uniform(0, 2 * np.pi)
        c = 0.5 + 0.25 * np.sin(fy * yy + fx * xx + ph) + 0.2 * (rng.uniform(-1, 1) * yy / height)
        channels.append(c)
    img = np.stack(channels, axis=-1) + rng.normal(0, 0.01, size=(height, width, 3))
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """:func:`synthetic_image` from a seed."""
    return synthetic_image(np.random.default_rng(seed), height, width)


def img(seed: int = 0, h: int = 24, w: int = 32) -> np.ndarray:
    """:func:`rgb` with the seed first (the video and hostile-input tests' order)."""
    return rgb(h, w, seed)


def write_images(
    folder: Path, n: int = 3, *, height: int = 24, width: int = 32, seed: int = 0, ext: str = "png"
) -> list[Path]:
    """Write ``n`` synthetic images into ``folder`` (created); returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        p = folder / f"img{i}.{ext}"
        Image.fromarray(synthetic_image(rng, height, width)).save(p)
        paths.append(p)
    return paths


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **options: Any) -> bytes:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def png(height: int = 24, width: int = 32, seed: int = 0) -> bytes:
    return encode(rgb(height, width, seed))


def open_image(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def make_video(
    path: Path, container: str, frames: int = 12, *, width: int = 32, height: int = 24, fps: int = 12
) -> bytes:
    with av.open(str(path), "w", format=container) as out:
        s = out.add_stream("libx264" if container != "webm" else "libvpx", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            for packet in s.encode(av.VideoFrame.from_ndarray(img(i, height, width), format="rgb24")):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path.read_bytes()


def make_clip(
    path: Path,
    *,
    w: int = 32,
    h: int = 24,
    fps: int = 15,
    n: int = 20,
    audio: str | None = "aac",
    video: str = "libx264",
) -> Path:
    """A tiny clip (moving gradient; H.264 unless ``video`` says otherwise) with an optional mono sine track."""
    with av.open(str(path), "w") as c:
        v = c.add_stream(video, rate=fps)
        v.width, v.height, v.pix_fmt = w, h, "yuv420p"
        a = None
        if audio:
            a = c.add_stream(audio, rate=48000 if audio == "libopus" else 16000)
            a.layout = "mono"
        yy, xx = np.mgrid[0:h, 0:w]
        for i in range(n):
            img = np.stack([(xx * 8 + i * 5) % 256, (yy * 10) % 256, np.full_like(xx, 128)], -1).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, fps)
            c.mux(v.encode(f))
        c.mux(v.encode(None))
        if a is not None:
            sr = a.rate
            pcm = (np.sin(2 * np.pi * 440 * np.arange(sr * n // fps) / sr) * 8000).astype(np.int16)
            resampler = av.AudioResampler(format=a.format.name, layout="mono", rate=sr)
            for s in range(0, len(pcm), 1024):
                af = av.AudioFrame.from_ndarray(pcm[None, s : s + 1024], format="s16", layout="mono")
                af.sample_rate, af.pts, af.time_base = sr, s, Fraction(1, sr)
                for rf in resampler.resample(af):
                    c.mux(a.encode(rf))
            c.mux(a.encode(None))
    return path


def count_frames(path: Path) -> tuple[int, list[float]]:
    """(frames, their presentation times in seconds)."""
    with av.open(str(path)) as c:
        tb = c.streams.video[0].time_base
        times = [float(f.pts * tb) for f in c.decode(video=0)]
    return len(times), times


def decode(path: Path) -> list[np.ndarray]:
    """Every video frame of ``path`` as uint8 RGB HWC (PyAV's own conversion)."""
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
