"""``POST /upscale``: an image in (multipart field ``file`` or the raw body), the upscaled image out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Annotated, Literal, ParamSpec, TypeVar

import numpy as np
from fastapi import APIRouter, Query, Request, Response
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from service.batcher import Batcher, BatcherClosed, DeadlineExceeded, OverBudget, QueueFull
from service.deps import BatcherDep, DecodeLimiterDep, EngineDep, MetricsDep, SettingsDep
from service.errors import ApiError, responses
from service.imaging import OUTPUT_MEDIA_TYPES, decode_async, default_output_format, encode
from service.metrics import Metrics
from service.uploads import read_image_bytes

router = APIRouter(tags=["upscale"])

SOURCE = "upload"  # the vsr_frames_total{source} of this route
P = ParamSpec("P")
T = TypeVar("T")

_REQUEST_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
            }
        },
        **{
            t: {"schema": {"type": "string", "format": "binary"}}
            for t in ("image/png", "image/jpeg", "image/webp", "image/bmp")
        },
    },
}


def _normalize_format(v: object) -> object:
    if isinstance(v, str):
        v = v.strip().lower()
        return "jpeg" if v == "jpg" else v
    return v


@router.post(
    "/upscale",
    summary="Upscale an image",
    response_class=Response,
    openapi_extra={"requestBody": _REQUEST_BODY},
    responses={
        200: {
            "description": "The upscaled image (headers X-VSR-Model, X-VSR-Scale).",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in OUTPUT_MEDIA_TYPES.values()},
        },
        **responses(400, 401, 413, 415, 422, 503, 504),
    },
)
async def upscale(
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    batcher: BatcherDep,
    metrics: MetricsDep,
    limiter: DecodeLimiterDep,
    model: Annotated[
        str | None, Query(description="loaded model name; default: x2 (VSR_IMAGE_MODEL)", examples=["x2"])
    ] = None,
    format: Annotated[
        Literal["png", "jpeg", "webp"] | None,
        BeforeValidator(_normalize_format),
        Query(description="output format (case-insensitive, jpg = jpeg); default: the input's (png for BMP)"),
    ] = None,
    quality: Annotated[
        int | None, Query(ge=1, le=100, description="JPEG/WebP quality (default 90)", examples=[90])
    ] = None,
) -> Response:
    """Send the image as multipart field `file` or as the raw body with its image content type, e.g.
    `curl -F file=@photo.jpg http://127.0.0.1:8000/upscale -o out.jpg` or
    `curl --data-binary @photo.png -H 'Content-Type: image/png' http://127.0.0.1:8000/upscale -o out.png`.

    EXIF orientation is applied; grey images stay grey; alpha is upscaled with bicubic (dropped for JPEG output).
    """
    deadline = time.monotonic() + settings.request_timeout_s
    name = model or settings.model_for("image", engine.names)
    if name not in engine.models:
        raise ApiError(422, "unknown_model", f"unknown model {name!r}; loaded: {engine.names}")
    admit(batcher)
    data = await read_image_bytes(request, settings.max_upload_bytes, metrics)
    decoded = await count_too_large(
        metrics,
        decode_async(data, max_pixels=settings.max_input_pixels, deadline=deadline, limiter=limiter),
    )
    del data
    sr = await infer(batcher, decoded.rgb, model=name, deadline=deadline, metrics=metrics)
    fmt = format or default_output_format(decoded)
    body = await run_in_threadpool(encode, sr, decoded, fmt=fmt, quality=quality)
    headers = {"X-VSR-Model": name, "X-VSR-Scale": str(engine.scale(name))}
    return Response(body, media_type=OUTPUT_MEDIA_TYPES[fmt], headers=headers)


async def decode_counted(metrics: Metrics, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn`` (a decoder) in the thread pool; a 413 it raises is counted as ``rejected{reason="too_large"}``."""
    return await count_too_large(metrics, run_in_threadpool(fn, *args, **kwargs))


async def count_too_large(metrics: Metrics, decoding: Awaitable[T]) -> T:
    """Await a decoder; a 413 it raises is counted as ``rejected{reason="too_large"}``."""
    try:
        return await decoding
    except ApiError as e:
        if e.status == 413:
            metrics.rejected.labels(reason="too_large").inc()
        raise


def admit(batcher: Batcher) -> None:
    """503 + Retry-After before the upload is read when the queue is already full (it was read, then refused)."""
    try:
        batcher.check_room()
    except QueueFull as e:
        raise ApiError(503, "overloaded", str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
    except BatcherClosed:
        raise ApiError(503, "shutting_down", "the service is shutting down", headers={"Retry-After": "1"}) from None


async def infer(
    batcher: Batcher, frame: np.ndarray, *, model: str, deadline: float, metrics: Metrics, source: str = SOURCE
) -> np.ndarray:
    """Submit one frame and await it; maps the batcher's failures to 503 / 504 / 500."""
    try:
        future = batcher.submit(frame, model=model, source=source, deadline=deadline)
    except QueueFull as e:
        raise ApiError(503, "overloaded", str(e), headers={"Retry-After": str(e.retry_after_s)}) from None
    except OverBudget as e:
        raise ApiError(413, "over_memory_budget", str(e)) from None
    except BatcherClosed:
        raise ApiError(503, "shutting_down", "the service is shutting down", headers={"Retry-After": "1"}) from None
    try:
        # The worker fails queued work at its deadline; this timeout also covers a worker stuck in a long batch.
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout=max(deadline - time.monotonic(), 0.0))
    except (TimeoutError, DeadlineExceeded):
        if not _failed_by_worker(future):  # the worker counts what it expires; count the rest here
            metrics.rejected.labels(reason="deadline").inc()
        raise ApiError(504, "deadline_exceeded", "the request did not finish before its deadline") from None
    except BatcherClosed:
        raise ApiError(503, "shutting_down", "the service is shutting down", headers={"Retry-After": "1"}) from None
    except Exception:
        raise ApiError(500, "inference_failed", "inference failed for this request") from None


def _failed_by_worker(future: Future[np.ndarray]) -> bool:
    return future.done() and not future.cancelled() and isinstance(future.exception(), DeadlineExceeded)
