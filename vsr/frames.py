"""Frame utilities shared by the service's streams and the video code: the PyAV demux/decode loop, written once.

Frames at every boundary are uint8 RGB HWC numpy arrays (see ``vsr.inference``); decoded ``av.VideoFrame`` objects
are converted only where they are used, so a dropped frame never pays for the conversion.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, cast

import av
import numpy as np
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream

# A decoded frame as it leaves the decoder, or one already in the boundary format (uint8 RGB HWC): converting is
# the costly part, so it happens only where a frame is used (a dropped frame never pays for it).
Frame = av.VideoFrame | np.ndarray


def demux_frames(
    container: InputContainer,
    video: av.VideoStream,
    *others: Stream,
    skip: type[Exception] = av.error.FFmpegError,
) -> Iterator[tuple[Packet[Any], list[av.VideoFrame] | None]]:
    """Demux ``video`` (and ``others``) and decode the video packets: yields ``(packet, frames)``.

    ``frames`` is the decoded frames of a video packet (often 0 or 1), ``[]`` for a packet of another stream (left to
    the caller: ``packet.stream is not video``), and ``None`` for a video packet that raised ``skip`` while decoding
    (the caller counts or notes it; the loop goes on). Other errors propagate.
    """
    for packet in container.demux(video, *others):
        if packet.stream is not video:
            yield packet, []
            continue
        try:
            frames = cast(list[av.VideoFrame], packet.decode())  # a video packet decodes to video frames
        except skip:
            yield packet, None
            continue
        yield packet, frames


class CapExceeded(ValueError):
    """A decoded frame broke a cap (its size, or the count / media time / rate of frames so far)."""


@dataclass(frozen=True)
class FrameCaps:
    """Caps checked on every decoded frame, never taken from a header (headers can say anything: a 1 MB file whose
    first frames are 32x32 and later ones 6000x6000, a 700 s video whose header says 1 s). None = no cap."""

    max_pixels: int | None = None  # width x height of any one frame
    max_frames: int | None = None
    max_seconds: float | None = None  # media time from the first frame's timestamp
    max_fps: float | None = None  # frames per second of media time, counted (3000 frames in 0.3 s is 10,000 fps)


class FrameCounter:
    """Counts decoded frames against :class:`FrameCaps`; :meth:`check` raises :class:`CapExceeded`."""

    def __init__(self, caps: FrameCaps, time_base: Fraction | None) -> None:
        self.caps = caps
        self.tb = float(time_base) if time_base else 0.0
        self.frames = 0
        self.first_pts: int | None = None
        self.seconds = 0.0  # media time seen so far

    def check(self, frame: av.VideoFrame) -> None:
        c = self.caps
        w, h = frame.width, frame.height
        if c.max_pixels is not None and w * h > c.max_pixels:
            raise CapExceeded(f"frame {self.frames + 1} is {w}x{h} = {w * h} pixels, over the cap of {c.max_pixels}")
        self.frames += 1
        if c.max_frames is not None and self.frames > c.max_frames:
            raise CapExceeded(f"more than {c.max_frames} frames (the frame-count cap)")
        if frame.pts is not None and self.tb:
            if self.first_pts is None:
                self.first_pts = frame.pts
            self.seconds = max(self.seconds, (frame.pts - self.first_pts) * self.tb)
        if c.max_seconds is not None and self.seconds > c.max_seconds:
            raise CapExceeded(f"longer than {c.max_seconds:g} s of video (counted from the frames' timestamps)")
        # Allow a burst of one second's worth: a 60 fps clip never comes near max_fps x (seconds + 1).
        if c.max_fps is not None and self.frames > c.max_fps * (self.seconds + 1.0):
            raise CapExceeded(
                f"{self.frames} frames in {self.seconds:.3f} s of video is over the frame-rate cap of {c.max_fps:g} fps"
            )


NO_CAPS = FrameCaps()
