"""What a stream is, and the knobs every stream shares (built once from the service settings)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class PublishSpec(BaseModel):
    """Per-stream encoder overrides of a published stream (unset fields take ``VSR_STREAM_PUBLISH_*``)."""

    model_config = ConfigDict(extra="forbid")

    encoder: Literal["auto", "libx264", "h264_nvenc"] | None = None
    preset: str | None = Field(None, pattern=r"^[a-z0-9]{1,16}$", examples=["superfast"])
    crf: int | None = Field(None, ge=0, le=51)
    bitrate_kbps: int | None = Field(None, ge=0, le=200_000)
    gop: int | None = Field(None, ge=1, le=600)


@dataclass(frozen=True)
class EncoderOptions:
    """How a published stream is encoded (service defaults from ``VSR_STREAM_PUBLISH_*``, per stream overrides)."""

    encoder: str = "auto"  # auto | libx264 | h264_nvenc
    preset: str = "superfast"  # libx264 preset (nvenc: p1..p7; a libx264 name maps to p2)
    crf: int = 23  # quality when bitrate_kbps is 0 (libx264 CRF / nvenc CQ)
    bitrate_kbps: int = 0  # > 0: a target bitrate instead of CRF
    gop: int = 30  # frames between keyframes

    def merged(self, overrides: PublishSpec | None) -> EncoderOptions:
        if overrides is None:
            return self
        return replace(self, **{k: v for k, v in overrides.model_dump().items() if v is not None})


class StreamSpec(BaseModel):
    """A source to watch. ``name`` is the operator's label (also the Prometheus ``stream`` label)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(max_length=2048, examples=["rtsp://192.168.1.20:554/stream1"])
    name: str | None = Field(None, pattern=NAME_RE.pattern, examples=["gate-1"])
    model: str | None = Field(
        None,
        description="a loaded model, or auto: the best camera model that fits the frame budget of all live streams "
        "(switched without reconnecting); default: VSR_STREAM_MODEL, else auto",
        examples=["x2", "auto"],
    )
    transport: Literal["tcp", "udp"] = Field(
        "tcp", description="RTSP transport; udp only for cameras in VSR_STREAM_ALLOW_CIDRS (docs/reliability.md)"
    )
    publish: str | None = Field(
        None,
        max_length=2048,
        description="push the upscaled stream as H.264 to a media server: rtsp://, rtmp:// or srt:// "
        "(same address policy as sources)",
        examples=["rtsp://mediamtx:8554/gate-1-x2"],
    )
    publish_options: PublishSpec | None = Field(None, description="encoder settings; default: the service's")


@dataclass(frozen=True)
class StreamOptions:
    """Timeouts, backoff and the staying-live caps, shared by all streams. These defaults are the only copy: the
    service's ``VSR_STREAM_*`` settings default to them (``Settings.stream_options()``)."""

    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    backoff_base_s: float = 0.25
    backoff_max_s: float = 2.0
    max_attempts: int = 0  # consecutive failed connects before ``failed``; 0 = retry forever
    max_pending: int = 2  # frames of one stream in the batcher at once (a newer one waits in a 1-frame slot)
    max_frame_age_s: float = 1.0  # older frames are dropped (``stale``) instead of upscaled
    jpeg_quality: int = 80
    pace_files: bool = True  # file sources play at their frame rate (and loop), like a camera
    max_pixels: int | None = None  # every decoded frame is checked; a bigger one fails the stream
    publish: EncoderOptions = EncoderOptions()  # defaults of published streams
    cuda: bool = False  # the engine runs on CUDA (a published stream may use NVENC)


_SPECS = TypeAdapter(list[StreamSpec])


def load_stream_specs(inline: str | list[Any] | None, file: str | Path | None) -> list[StreamSpec]:
    """Streams from ``VSR_STREAMS`` (a JSON list) and ``VSR_STREAMS_FILE`` (YAML: a list, or ``{streams: [...]}``)."""
    specs: list[StreamSpec] = []
    if inline:
        data = json.loads(inline) if isinstance(inline, str) else inline
        specs += _SPECS.validate_python(data)
    if file:
        data = yaml.safe_load(Path(file).read_text()) or []
        if isinstance(data, dict):
            data = data.get("streams") or []
        specs += _SPECS.validate_python(data)
    return specs
