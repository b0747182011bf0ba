"""``/stream``: register live sources, inspect them, watch them upscaled (MJPEG or the newest JPEG), remove them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from service.deps import BatcherDep, StreamsDep
from service.errors import ApiError, responses
from service.streams.config import StreamSpec
from service.streams.info import StreamInfo
from service.streams.output import EncodedFrame, encode_jpeg
from service.streams.pipeline import Stream

BOUNDARY = "vsrframe"
KEEPALIVE_S = 5.0  # an MJPEG viewer re-checks for a closed stream this often while no frame arrives


class ShardInfo(BaseModel):
    index: int = Field(description="this replica's shard")
    count: int = Field(description="replicas sharing the cameras (VSR_SHARD_COUNT)")


class WorkerInfo(BaseModel):
    """The inference worker over the last 10 s (``service.workload``)."""

    busy: float = Field(description="fraction of the time it ran batches")
    overloaded: bool = Field(description="demand above capacity: streams drop frames, uploads may get 503")
    shares: dict[str, float] = Field(description="fraction of its time by source (upload, oip, video, stream:NAME)")


class StreamList(BaseModel):
    streams: list[StreamInfo] = Field(description="this replica's streams only (its shard of the cameras)")
    max_streams: int
    shard: ShardInfo
    worker: WorkerInfo


router = APIRouter(prefix="/stream", tags=["streams"])


@router.post("", status_code=201, responses=responses(400, 401, 403, 409, 422, 429))
async def add_stream(spec: StreamSpec, manager: StreamsDep, response: Response) -> StreamInfo:
    """Start upscaling a live source. The URL's host is resolved once and checked against the address policy.

    With several replicas (``VSR_SHARD_COUNT``) a camera that another replica's shard owns is refused with 409
    ``wrong_shard``, naming the owner's index (also in the ``X-Shard-Owner`` header): no override, so that a camera
    never runs twice."""
    stream = await run_in_threadpool(manager.add, spec)  # DNS resolution blocks: off the event loop
    response.headers["Location"] = f"/stream/{stream.id}"
    return stream.info()


@router.get("")
async def list_streams(manager: StreamsDep, batcher: BatcherDep) -> StreamList:
    """Every stream with its state and counters, and how the inference worker is shared."""
    load = batcher.load()
    streams = [_info(s, load.shares) for s in manager.all()]
    shard = ShardInfo(index=manager.shard.index, count=manager.shard.count)
    worker = WorkerInfo(busy=load.busy, overloaded=load.overloaded, shares=load.shares)
    return StreamList(streams=streams, max_streams=manager.max_streams, shard=shard, worker=worker)


def _info(stream: Stream, shares: dict[str, float]) -> StreamInfo:
    info = stream.info()
    info.worker_share = shares.get(stream.source, 0.0)
    return info


@router.get("/{stream_id}", responses=responses(404))
async def get_stream(stream_id: str, manager: StreamsDep, batcher: BatcherDep) -> StreamInfo:
    """State (connecting|live|backoff|failed|stopped), source size/fps, output fps, counters, latency percentiles,
    share of the inference worker."""
    return _info(manager.get(stream_id), batcher.load().shares)


class StreamPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="a loaded model (GET /v2/models), or auto", examples=["x2-camera"])


@router.patch("/{stream_id}", responses=responses(400, 404, 409, 422))
async def patch_stream(stream_id: str, patch: StreamPatch, manager: StreamsDep, batcher: BatcherDep) -> StreamInfo:
    """Switch the stream's model while it runs (``auto``: back to the automatic choice): no reconnect, counters and
    viewers kept; frames already in flight finish on the old model. An unknown or unloaded model is 422 and changes
    nothing; a published stream keeps its scale (409)."""
    return _info(manager.switch_model(stream_id, patch.model), batcher.load().shares)


@router.delete("/{stream_id}", status_code=204, responses=responses(404))
async def delete_stream(stream_id: str, manager: StreamsDep) -> Response:
    """Stop the reader and free the stream (its threads exit within the read timeout)."""
    manager.remove(stream_id)
    return Response(status_code=204)


@router.get(
    "/{stream_id}/mjpeg",
    response_class=StreamingResponse,
    responses={200: {"content": {f"multipart/x-mixed-replace; boundary={BOUNDARY}": {}}}, **responses(404)},
)
async def mjpeg(stream_id: str, manager: StreamsDep) -> StreamingResponse:
    """The upscaled video as ``multipart/x-mixed-replace`` JPEGs: always the newest frame; slow viewers skip frames."""
    stream = manager.get(stream_id)

    async def parts() -> AsyncIterator[bytes]:
        seq = 0
        out = stream.output
        with out.watching():  # while any viewer watches, the stream encodes each frame once, for all of them
            while not out.closed:
                frame = await out.wait_newer(seq, KEEPALIVE_S)
                if frame is None:
                    continue
                seq = frame.seq
                jpeg = await _jpeg(frame)
                head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                yield head.encode() + jpeg + b"\r\n"

    return StreamingResponse(
        parts(),
        media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/{stream_id}/frame.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **responses(404, 503)},
)
async def frame_jpg(
    stream_id: str,
    manager: StreamsDep,
    wait: Annotated[float, Query(allow_inf_nan=False, description="seconds to wait for a first frame (max 10)")] = 2.0,
    after: Annotated[
        int | None,
        Query(ge=0, description="long-poll: wait (up to `wait` s) for a frame newer than this X-Frame-Seq"),
    ] = None,
) -> Response:
    """The newest upscaled frame (its sequence number in ``X-Frame-Seq``). Waits up to ``wait`` seconds (max 10)
    for the first one — or, with ``after``, for one newer than that (else the newest again); 503 if none yet.
    The web page polls this for every tile: one short request per frame instead of one MJPEG connection per
    stream, which a browser caps at 6 per host."""
    stream = manager.get(stream_id)
    timeout = min(max(wait, 0.0), 10.0)
    if after is not None:
        frame = await stream.output.wait_newer(after, timeout) or stream.output.latest
    else:
        frame = stream.output.latest or await stream.output.wait_newer(0, timeout)
    if frame is None:
        raise ApiError(503, "no_frame", f"stream is {stream.state}; no frame yet", headers={"Retry-After": "1"})
    headers = {"Cache-Control": "no-store", "X-Frame-Seq": str(frame.seq)}
    return Response(await _jpeg(frame), media_type="image/jpeg", headers=headers)


@router.get(
    "/{stream_id}/source.jpg",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}}, **responses(404, 503)},
)
async def source_jpg(stream_id: str, manager: StreamsDep) -> Response:
    """The newest source frame sent to the model (before upscaling), for a side-by-side comparison."""
    stream = manager.get(stream_id)
    picture = stream.last_source
    if picture is None:
        raise ApiError(503, "no_frame", f"stream is {stream.state}; no frame yet", headers={"Retry-After": "1"})
    jpeg = await asyncio.to_thread(encode_jpeg, picture, stream.opts.jpeg_quality)
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


async def _jpeg(frame: EncodedFrame) -> bytes:
    """The frame's JPEG; a frame published while nobody watched is encoded in a thread, not on the event loop."""
    return frame.jpeg if frame.encoded else await asyncio.to_thread(lambda: frame.jpeg)
