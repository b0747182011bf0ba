"""``POST /upscale``: an image in (multipart field ``file`` or the raw body), the upscaled image out."""

from __future__ import annotations

import time
from typing import Annotated, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BeforeValidator
from starlette.concurrency import run_in_threadpool

from service.deps import BatcherDep, DecodeLimiterDep, EngineDep, MetricsDep, SettingsDep
from service.engine import Engine
from service.errors import responses
from service.imaging import OUTPUT_MEDIA_TYPES, decode_async
from service.modelrefs import pick_model
from service.submit import admit, count_too_large, infer
from service.uploads import read_image_bytes
from vsr.images import DecodedImage, default_output_format, encode, model_input, model_output, output_notes

router = APIRouter(tags=["upscale"])

SOURCE = "upload"  # the vsr_frames_total{source} of this route

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
            "description": "The upscaled image (headers X-VSR-Model, X-VSR-Scale, X-VSR-Notes).",
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

    The image is read as `vsr upscale` reads it (`vsr.images`): EXIF orientation applied, ICC profile kept, CMYK
    converted to sRGB, 16 bits per channel reduced to 8; grey images stay grey; alpha is upscaled with bicubic
    (dropped for JPEG output). What the output lost or changed is listed in `X-VSR-Notes`.
    """
    deadline = time.monotonic() + settings.request_timeout_s
    name = pick_model(settings, engine, model, "image")
    admit(batcher, SOURCE, metrics)  # a full queue: 503 before the upload is read
    data = await read_image_bytes(request, settings.max_upload_bytes, metrics)
    luma = engine.runner(name).luma  # a luma model takes a JPEG's Y as decoded, and JPEG goes out from planes
    limits, ycc = settings.image_limits(), luma and format in (None, "jpeg")
    decoded = await count_too_large(
        metrics, decode_async(data, limits=limits, deadline=deadline, limiter=limiter, ycc=ycc)
    )
    del data
    fmt = format or default_output_format(decoded)
    x = model_input(decoded, fmt, engine.scale(name), luma=luma)
    out = await infer(batcher, x, model=name, deadline=deadline, metrics=metrics, source=SOURCE)
    body = await run_in_threadpool(lambda: encode(model_output(out, decoded), decoded, fmt, quality=quality))
    return Response(body, media_type=OUTPUT_MEDIA_TYPES[fmt], headers=image_headers(engine, name, decoded, fmt))


def image_headers(engine: Engine, name: str, decoded: DecodedImage, fmt: str) -> dict[str, str]:
    """X-VSR-Model, X-VSR-Scale, and X-VSR-Notes when the output lost or changed something (16 -> 8 bits, CMYK,
    a dropped alpha or ICC profile)."""
    headers = {"X-VSR-Model": name, "X-VSR-Scale": str(engine.scale(name))}
    if notes := output_notes(decoded, fmt):
        headers["X-VSR-Notes"] = "; ".join(notes)
    return headers
