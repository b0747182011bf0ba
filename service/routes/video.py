"""``POST /upscale/video`` (a job), ``GET /jobs/{id}`` (progress), ``GET /jobs/{id}/result`` (the MP4), ``DELETE``."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from service.deps import EngineDep, JobsDep, SettingsDep
from service.errors import ApiError, responses
from service.modelrefs import pick_model
from service.settings import Settings
from service.uploads import open_upload
from vsr.video import SAFE_INPUT_OPTIONS, VideoInfo, probe

VIDEO_TYPES = {
    "video/mp4": ".mp4",
    "video/quicktime": ".mov",
    "video/x-matroska": ".mkv",
    "video/webm": ".webm",
    "video/mp2t": ".ts",
    "application/octet-stream": ".bin",
}
EXTS = (".mp4", ".mkv", ".mov", ".ts", ".webm")


class VideoInput(BaseModel):
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    audio_codec: str | None


class VideoOutput(BaseModel):
    width: int
    height: int


class JobInfo(BaseModel):
    id: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    model: str
    progress: float | None = Field(description="0..1; null when the frame count is unknown")
    frames_done: int
    frames_total: int | None
    input: VideoInput
    output: VideoOutput
    audio: str | None = Field(description="none | copied | reencoded:<codec>, once done")
    notes: list[str]
    error: str | None
    status_url: str
    result_url: str | None = Field(description="set once the job is done")


router = APIRouter(tags=["video"])

_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}
        },
        **{t: {"schema": {"type": "string", "format": "binary"}} for t in VIDEO_TYPES},
    },
}


@router.post(
    "/upscale/video",
    status_code=202,
    summary="Upscale a recorded video (as a job)",
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses=responses(400, 401, 413, 415, 422, 429),
)
async def upscale_video(
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    jobs: JobsDep,
    response: Response,
    model: Annotated[str | None, Query(description="loaded model name; default: x2-camera (VSR_VIDEO_MODEL)")] = None,
) -> JobInfo:
    """Send an mp4/mkv/mov/ts/webm as multipart field `file` or as the raw body. Returns `202` with a job:
    poll `GET /jobs/{id}` (state, progress) and download `GET /jobs/{id}/result` (H.264 yuv420p MP4 with the same
    frame count, frame rate and timestamps; audio copied). E.g.
    `curl -F file=@clip.mp4 http://127.0.0.1:8000/upscale/video`."""
    name = pick_model(settings, engine, model, "video")
    path = jobs.new_file(".upload")
    try:
        await _receive(request, path, settings.video_max_bytes)
        info = await run_in_threadpool(probe, path, SAFE_INPUT_OPTIONS)  # VideoError: not a video we read
        check_header(info, settings)
        job = jobs.create(path, info, model=name, scale=engine.scale(name))  # TooManyJobs
    except BaseException:
        _discard(path)
        raise
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobInfo.model_validate(job.describe())


def check_header(info: VideoInfo, settings: Settings) -> None:
    """Refuse what the header already shows to be over a cap or absurd. Passing proves nothing: the job counts
    every decoded frame against the same caps (``settings.video_caps()``), whatever the header said."""
    if info.width * info.height > settings.max_input_pixels:
        raise ApiError(413, "too_many_pixels", f"{info.width}x{info.height} is over the frame-size cap")
    if info.duration_s is not None and info.duration_s < 0:
        raise ApiError(400, "invalid_video", f"the header's duration ({info.duration_s:g} s) is negative")
    if info.duration_s is not None and info.duration_s > settings.video_max_seconds:
        raise ApiError(
            413, "too_long", f"video duration {info.duration_s:g} s is over {settings.video_max_seconds:g} s"
        )
    if info.fps is not None and info.fps > settings.video_max_fps:
        raise ApiError(413, "frame_rate_too_high", f"{float(info.fps):g} fps is over {settings.video_max_fps:g} fps")
    if info.frames is not None and info.frames > settings.video_max_frames:
        raise ApiError(413, "too_many_frames", f"{info.frames} frames is over the cap of {settings.video_max_frames}")


@router.get("/jobs/{job_id}", responses=responses(401, 404))
async def get_job(job_id: str, jobs: JobsDep) -> JobInfo:
    """A video job: state (queued|running|done|failed|cancelled), progress in [0, 1], frames done/total."""
    job = jobs.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r} (finished jobs expire)")
    return JobInfo.model_validate(job.describe())


@router.get(
    "/jobs/{job_id}/result",
    response_class=FileResponse,
    responses={200: {"content": {"video/mp4": {}}}, **responses(401, 404, 409)},
)
async def job_result(job_id: str, jobs: JobsDep) -> FileResponse:
    """The upscaled MP4 once the job is `done` (409 before)."""
    job = jobs.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r} (finished jobs expire)")
    if job.state != "done":
        raise ApiError(409, "not_ready", f"job is {job.state}", headers={"Retry-After": "2"})
    return FileResponse(job.out_path, media_type="video/mp4", filename=f"vsr-{job.id}.mp4")


@router.delete("/jobs/{job_id}", status_code=204, responses=responses(401, 404))
async def delete_job(job_id: str, jobs: JobsDep) -> Response:
    """Cancel a job (if running) and delete its files."""
    if not jobs.delete(job_id):
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return Response(status_code=204)


async def _receive(request: Request, path: Path, limit: int) -> None:
    """Write the upload (multipart ``file`` or raw body) to ``path``, stopping with 413 past ``limit`` bytes."""
    async with open_upload(
        request, limit, raw_types=VIDEO_TYPES, unsupported="send a video (mp4, mkv, mov, ts, webm), got {got}"
    ) as upload:
        with path.open("wb") as out:
            async for chunk in upload.chunks:
                out.write(chunk)


def _discard(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()
