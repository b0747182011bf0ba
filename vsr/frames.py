"""Frame utilities shared by the service's streams and the video code: the PyAV demux/decode loop, written once.

Frames at every boundary are uint8 RGB HWC numpy arrays (see ``vsr.inference``); decoded ``av.VideoFrame`` objects
are converted only where they are used, so a dropped frame never pays for the conversion.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import av
from av.container import InputContainer
from av.stream import Stream


def demux_frames(
    container: InputContainer,
    video: av.VideoStream,
    *others: Stream,
    skip: type[Exception] = av.error.FFmpegError,
) -> Iterator[tuple[av.Packet, list[av.VideoFrame] | None]]:
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
