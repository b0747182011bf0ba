"""The web page at ``/`` (plain HTML/JS/CSS from ``service/static``, no build step, nothing loaded from outside)
and ``POST /upscale/bicubic``, the baseline the page compares the model against."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.concurrency import run_in_threadpool

from service.deps import ApiKey, DecodeLimiterDep, EngineDep, MetricsDep, SettingsDep
from service.errors import ApiError, responses
from service.imaging import OUTPUT_MEDIA_TYPES, decode_async
from service.modelrefs import pick_model
from service.uploads import read_image_bytes
from vsr.imageops import upscale_bicubic
from vsr.images import default_output_format, encode

STATIC = Path(__file__).resolve().parent.parent / "static"
FILES = {"app.js": "text/javascript", "style.css": "text/css"}
SECURITY_HEADERS = {
    # Only our own scripts, styles and images (blob: for frames read through fetch); nothing from outside.
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

router = APIRouter(tags=["web"])


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=SECURITY_HEADERS)


@router.get("/static/{name}", include_in_schema=False)
async def static(name: str) -> FileResponse:
    if name not in FILES:  # a fixed list: no path handling at all
        raise ApiError(404, "not_found", f"no static file {name!r}")
    return FileResponse(STATIC / name, media_type=FILES[name], headers=SECURITY_HEADERS)


@router.post(
    "/upscale/bicubic",
    dependencies=[ApiKey],
    response_class=Response,
    summary="Bicubic baseline",
    responses={200: {"content": {t: {} for t in OUTPUT_MEDIA_TYPES.values()}}, **responses(400, 401, 413, 415, 422)},
)
async def bicubic(
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    metrics: MetricsDep,
    limiter: DecodeLimiterDep,
    model: Annotated[str | None, Query(description="match this model's scale; default: the stills model")] = None,
) -> Response:
    """The same image resized with bicubic interpolation at the model's scale (what the model must beat)."""
    name = pick_model(settings, engine, model, "image")
    data = await read_image_bytes(request, settings.max_upload_bytes, metrics)
    deadline = time.monotonic() + settings.request_timeout_s
    decoded = await decode_async(data, limits=settings.image_limits(), deadline=deadline, limiter=limiter)
    scale = engine.scale(name)
    out = await run_in_threadpool(upscale_bicubic, decoded.rgb, scale)
    fmt = default_output_format(decoded)
    body = await run_in_threadpool(encode, out, decoded, fmt)
    return Response(body, media_type=OUTPUT_MEDIA_TYPES[fmt], headers={"X-VSR-Scale": str(scale)})
