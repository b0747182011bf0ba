"""What ``GET /stream/{id}`` answers: one typed model, built by ``Stream.info()`` and served as is by the API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

StreamState = Literal["connecting", "live", "backoff", "failed", "stopped"]  # capture.STATES
DROP_REASONS = ("queue_full", "overloaded", "stale", "decode_error", "late", "error", "publish")


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
    mjpeg_url: str
    frame_url: str
