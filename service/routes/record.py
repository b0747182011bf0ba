"""``POST /stream/{id}/record {"seconds": N}``: record a stream's source frames to the clips folder
(``VSR_CLIPS_DIR``, capped at ``VSR_CLIPS_MAX_MB``) for ``vsr adapt``; ``GET /stream/{id}/record``: its progress."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from service.deps import ClipsDep, StreamsDep
from service.errors import ApiError, responses
from service.streams.record import Recorder, RecordingBusy, RecordingOff

router = APIRouter(prefix="/stream", tags=["streams"])

MAX_SECONDS = 3600.0


class RecordRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    seconds: float = Field(gt=0, le=MAX_SECONDS, description="seconds of source frames to record")


class Recording(BaseModel):
    file: str = Field(description="the clip's name in the clips folder (.mp4 once it ends)")
    state: str = Field(description="recording | done | capped (disk cap reached) | stopped | failed")
    seconds: float
    frames: int
    bytes: int
    dropped: int = Field(description="source frames the encoder could not keep up with")
    error: str | None


@router.post("/{stream_id}/record", status_code=202, responses=responses(400, 404, 409, 422, 507))
async def record(stream_id: str, req: RecordRequest, manager: StreamsDep, clips: ClipsDep) -> Recording:
    """Start recording the source frames (H.264 CRF 18 at the source's frame rate); one recording per stream."""
    if clips is None:
        raise RecordingOff("recording is off: set VSR_CLIPS_DIR")
    stream = manager.get(stream_id)
    if stream.recorder is not None and stream.recorder.active:
        raise RecordingBusy(f"stream {stream.name!r} is already recording")
    stream.recorder = Recorder(stream.name, clips, seconds=req.seconds, fps=stream.stats.source_fps)
    return Recording(**asdict(stream.recorder.info()))


@router.get("/{stream_id}/record", responses=responses(404))
async def recording(stream_id: str, manager: StreamsDep) -> Recording:
    """The stream's current or last recording."""
    rec = manager.get(stream_id).recorder
    if rec is None:
        raise ApiError(404, "not_found", "this stream has not recorded")
    return Recording(**asdict(rec.info()))
