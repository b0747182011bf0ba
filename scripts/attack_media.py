"""Hostile media for the reliability attacks (``scripts/attack.py``) and their CI variants (``tests/reliability``):
small files whose headers understate what decoding them costs. Everything is generated; nothing is downloaded.
"""

from __future__ import annotations

import io
import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image


def jpeg(w: int, h: int, *, quality: int = 50, progressive: bool = False, value: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (value, value, value)).save(buf, "JPEG", quality=quality, progressive=progressive)
    return buf.getvalue()


def png(w: int, h: int) -> bytes:
    """A zero image: PNG compresses it to almost nothing (3840x2160 is ~24 kB)."""
    buf = io.BytesIO()
    Image.new("RGB", (w, h)).save(buf, "PNG", compress_level=9)
    return buf.getvalue()


def many_scan_jpeg(scans: int, w: int = 64, h: int = 64) -> bytes:
    """A progressive JPEG whose last scan is repeated until it has ``scans`` scans (libjpeg decodes every one)."""
    data = jpeg(w, h, progressive=True, value=128)
    last_sos = data.rindex(b"\xff\xda")
    head, last_scan = data[:last_sos], data[last_sos:-2]  # without EOI
    have = data.count(b"\xff\xda")
    return head + last_scan * (scans - have + 1) + b"\xff\xd9"


def mjpeg_mkv(path: Path, sizes: list[tuple[int, int]], *, fps: int = 10, time_base: Fraction | None = None) -> Path:
    """An MJPEG Matroska file whose frames have the given sizes (each MJPEG frame carries its own size)."""
    with av.open(str(path), "w", format="matroska") as out:
        s = out.add_stream("mjpeg", rate=fps)
        s.width, s.height = sizes[0]
        s.pix_fmt = "yuvj420p"
        tb = time_base or Fraction(1, fps)
        s.time_base = tb
        step = int(round(1 / (fps * tb)))
        for i, (w, h) in enumerate(sizes):
            packet = av.Packet(jpeg(w, h, quality=30))
            packet.stream = s
            packet.pts = packet.dts = i * step
            packet.time_base = tb
            packet.duration = step
            out.mux(packet)
    return path


def h264_mkv(path: Path, frames: int, *, fps: Fraction, size: tuple[int, int] = (16, 16)) -> Path:
    """A tiny H.264 Matroska clip of ``frames`` frames at ``fps`` (e.g. 3000 frames in 0.3 s at 10000 fps)."""
    w, h = size
    with av.open(str(path), "w", format="matroska") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "ultrafast"}
        for i in range(frames):
            arr = np.full((h, w, 3), i % 256, np.uint8)
            for p in s.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(p)
        for p in s.encode():
            out.mux(p)
    return path


def patch_mkv_duration(path: Path, seconds: float) -> Path:
    """Overwrite the Matroska Segment Info duration (EBML id 0x4489, a float in timecode-scale units: ms)."""
    data = bytearray(path.read_bytes())
    for size, fmt in ((8, ">d"), (4, ">f")):
        i = data.find(bytes([0x44, 0x89, 0x80 | size]))
        if i >= 0:
            data[i + 3 : i + 3 + size] = struct.pack(fmt, seconds * 1000.0)
            path.write_bytes(bytes(data))
            return path
    raise ValueError("no Matroska duration element found")
