"""One upload reader for every route that takes a file (``/upscale``, the web page's compare, ``/upscale/video``, OIP).

A file arrives as a multipart field ``file`` or as the raw body. Either way the byte cap is enforced while the bytes
arrive (nothing is buffered past it) and a declared ``Content-Length`` over it is refused before reading; multipart
parts are spooled by Starlette to an anonymous temporary file (private, removed on close).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NoReturn

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from service.bodylimit import MULTIPART_OVERHEAD
from service.errors import ApiError
from service.imaging import IMAGE_CONTENT_TYPES
from service.metrics import Metrics

CHUNK = 1 << 20  # bytes per read of a spooled multipart part

OnTooLarge = Callable[[], None]


@dataclass(frozen=True)
class Upload:
    """What arrived: its media type (the raw body's, or the multipart part's as the client declared it) and its
    bytes, capped."""

    media_type: str
    chunks: AsyncIterator[bytes]

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.chunks])


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


@asynccontextmanager
async def open_upload(
    request: Request,
    limit: int,
    *,
    raw_types: Collection[str],
    unsupported: str,
    on_too_large: OnTooLarge | None = None,
) -> AsyncIterator[Upload]:
    """The upload of ``request``: 415 (``unsupported``, formatted with ``got``) unless multipart or one of
    ``raw_types``; 413 past ``limit`` bytes of file; 400/422 for a broken multipart body or one without ``file``."""
    too_large = _refuse(limit, on_too_large)
    ctype = media_type(request)
    multipart = ctype == "multipart/form-data"
    if not multipart and ctype not in raw_types:
        raise ApiError(415, "unsupported_media_type", unsupported.format(got=ctype or "no content type"))
    body_limit = limit + (MULTIPART_OVERHEAD if multipart else 0)
    _check_declared(request, body_limit, too_large)
    if not multipart:
        yield Upload(ctype, _capped(request.stream(), limit, too_large))
        return
    try:
        parser = MultiPartParser(
            request.headers, _capped(request.stream(), body_limit, too_large), max_files=1, max_fields=8
        )
        form = await parser.parse()
    except MultiPartException as e:
        raise ApiError(400, "bad_multipart", str(e)) from None
    try:
        part = form.get("file")
        if not isinstance(part, UploadFile):
            raise ApiError(422, "missing_file", "multipart body has no file field named 'file'")
        part_type = (part.content_type or "").split(";")[0].strip().lower()
        yield Upload(part_type, _capped(_spooled(part), limit, too_large))
    finally:
        await form.close()


async def read_image_bytes(request: Request, limit: int, metrics: Metrics) -> bytes:
    """The image bytes of a multipart ``file`` field or a raw image body (refusals counted as ``too_large``)."""
    async with open_upload(
        request,
        limit,
        raw_types=IMAGE_CONTENT_TYPES,
        unsupported="send multipart/form-data with a 'file' field, or a raw image body (got {got})",
        on_too_large=_counter(metrics),
    ) as upload:
        part = upload.media_type
        if part.startswith("image/") and part not in IMAGE_CONTENT_TYPES:
            raise ApiError(415, "unsupported_media_type", f"{part} is not supported; send PNG, JPEG, WebP or BMP")
        return await upload.read()


async def read_body(request: Request, limit: int, metrics: Metrics) -> bytes:
    """The whole request body whatever its type, refused with 413 once it is (or declares to be) over ``limit``."""
    too_large = _refuse(limit, _counter(metrics))
    _check_declared(request, limit, too_large)
    return b"".join([chunk async for chunk in _capped(request.stream(), limit, too_large)])


def _counter(metrics: Metrics) -> OnTooLarge:
    return metrics.rejected.labels(reason="too_large").inc


def _refuse(limit: int, on_too_large: OnTooLarge | None) -> Callable[[], NoReturn]:
    def too_large() -> NoReturn:
        if on_too_large is not None:
            on_too_large()
        raise ApiError(413, "payload_too_large", f"upload is over the limit of {limit} bytes")

    return too_large


def _check_declared(request: Request, body_limit: int, too_large: Callable[[], NoReturn]) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > body_limit:  # '²'.isdigit(), int('²') fails
        too_large()


async def _capped(
    chunks: AsyncIterator[bytes], limit: int, too_large: Callable[[], NoReturn]
) -> AsyncGenerator[bytes, None]:
    """``chunks``, stopped with 413 as soon as they pass ``limit`` bytes (never buffered beyond it)."""
    n = 0
    async for chunk in chunks:
        n += len(chunk)
        if n > limit:
            too_large()
        yield chunk


async def _spooled(part: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await part.read(CHUNK):
        yield chunk
