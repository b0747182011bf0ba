"""What ``GET /stream/{id}`` answers: one typed model, built here from a stream's counters (:func:`build_info`,
called by ``Stream.info()``) and served as is by the API."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal, cast

from pydantic import BaseModel, Field

from service.streams.output import EncodedFrame
from service.streams.stats import DROP_REASONS, StreamObserver

StreamState = Literal["connecting", "live", "backoff", "failed", "stopped"]  # capture.STATES


class SourceInfo(BaseModel):
    width: int | None = None
    height: int | None = None
    fps: float | None = Field(None, description="the source's nominal frame rate")


class OutputInfo(BaseModel):
    width: int | None = None
    height: int | None = None
    fps: float = Field(description="upscaled frames per second over the last 2 s")


class Latency(BaseModel):
    """Decode -> upscaled frame emitted, over the last 512 frames."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None


class PublishInfo(BaseModel):
    """Where the upscaled stream is pushed, and how that goes."""

    url: str = Field(description="the target without its password")
    encoder: str
    state: Literal["connecting", "live", "backoff", "stopped"]
    frames: int = Field(description="frames sent")
    dropped: int = Field(description="upscaled frames skipped because the publisher was busy")
    reconnects: int
    last_error: str | None


class ModelChoice(BaseModel):
    """Why the stream runs its model: named by the stream, or chosen by ``auto`` for the frame budget."""

    mode: Literal["auto", "named"]
    reason: str


class FramePath(BaseModel):
    """How the last frame went to the model: the decoder's planes (a luma model's Y, no RGB round trip) or RGB."""

    kind: Literal["planes", "rgb"]
    reason: str


class StreamInfo(BaseModel):
    id: str
    name: str
    url: str = Field(description="the source URL without its password")
    model: str
    model_choice: ModelChoice
    scale: int
    transport: str
    state: StreamState
    source: SourceInfo
    output: OutputInfo
    input_fps: float = Field(description="decoded frames per second over the last 2 s")
    frames_in: int
    frames_out: int
    dropped: dict[str, int] = Field(description="frames dropped, by reason: " + ", ".join(DROP_REASONS))
    reconnects: int
    last_error: str | None
    latency_seconds: Latency
    worker_share: float | None = Field(
        default=None, description="this stream's fraction of the inference worker's time over the last 10 s"
    )
    publish: PublishInfo | None = Field(None, description="set when the stream is published (H.264 out)")
    frame_path: FramePath | None = None
    mjpeg_url: str
    frame_url: str


@dataclass
class StreamHead:
    """What a stream is, as the API names it (its scale changes only with a model of another scale)."""

    id: str
    name: str
    url: str  # without its password
    scale: int
    transport: str


def build_info(
    head: StreamHead,
    model: str,
    choice: ModelChoice,
    observer: StreamObserver,
    latest: EncodedFrame | None,
    publish: dict[str, Any] | None,
    frame_path: FramePath | None = None,
) -> StreamInfo:
    """The API's view of one stream now: rates over the last 2 s, latency percentiles over the last 512 frames.
    ``model``: the model it runs now; ``choice``: how it got it (named, or ``auto``'s reason)."""
    s, now = observer.stats, time.monotonic()
    lat = sorted(s.latencies)

    def pct(q: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(q * len(lat)))], 4) if lat else None

    return StreamInfo(
        id=head.id,
        name=head.name,
        url=head.url,
        model=model,
        model_choice=choice,
        scale=head.scale,
        transport=head.transport,
        state=cast(StreamState, observer.state),  # one of capture.STATES, set by the reader
        source=SourceInfo(width=s.source_width, height=s.source_height, fps=s.source_fps),
        output=OutputInfo(
            width=latest.width if latest else None,
            height=latest.height if latest else None,
            fps=round(s.out_rate.rate(now), 2),
        ),
        input_fps=round(s.in_rate.rate(now), 2),
        frames_in=s.frames_in,
        frames_out=s.frames_out,
        dropped=dict(s.dropped),
        reconnects=s.reconnects,
        last_error=s.last_error,
        latency_seconds=Latency(p50=pct(0.5), p90=pct(0.9), p99=pct(0.99)),
        publish=PublishInfo(**publish) if publish is not None else None,
        frame_path=frame_path,
        mjpeg_url=f"/stream/{head.id}/mjpeg",
        frame_url=f"/stream/{head.id}/frame.jpg",
    )
