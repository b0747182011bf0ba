"""One error shape for every response: ``{"error": {"code": "...", "message": "..."}}`` — except under ``/v2``,
where the Open Inference Protocol fixes it as ``{"error": "<message>"}`` (Triton's and KServe's clients read that
string); there the code travels in the ``X-Error-Code`` header instead.

Domain code raises its own typed errors with no HTTP in them; :data:`DOMAIN_ERRORS` below is the one table that
gives each type its status, code, message and headers (looked up along the exception's MRO, most specific first).
The web layer's own checks (upload reading, API keys, request parsing) raise :class:`ApiError`.
:func:`install_handlers` registers both, and reshapes FastAPI's own 404/405/422 and any unhandled exception (500, no
internals leaked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service.batcher import BatcherClosed, DeadlineExceeded, OverBudget, QueueFull
from service.imaging import DecodeDeadline
from service.modelrefs import ModelNotFound, ModelNotLoaded, VersionNotFound
from service.streams.manager import NotOwner, StreamConflict, TooManyStreams, UnknownModel, UnknownStream
from service.submit import InferenceFailed
from service.urlpolicy import DeniedUrl, UnresolvableHost, UnsupportedUrl, UrlRejected
from service.videojobs import TooManyJobs
from vsr import images
from vsr.video import VideoError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error with its HTTP status, a stable machine-readable ``code`` and a human message."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error response outside ``/v2``."""

    error: ErrorDetail


class V2ErrorBody(BaseModel):
    """The body of every error response under ``/v2`` (Open Inference Protocol)."""

    error: str


OIP_PREFIX = "/v2"


def is_oip(path: str) -> bool:
    return path == OIP_PREFIX or path.startswith(OIP_PREFIX + "/")


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, *, path: str = ""
) -> JSONResponse:
    if is_oip(path):
        return JSONResponse({"error": message}, status_code=status, headers={**(headers or {}), "X-Error-Code": code})
    body = {"error": {"code": code, "message": message}}
    return JSONResponse(body, status_code=status, headers=headers)


@dataclass(frozen=True)
class Answer:
    """The HTTP answer to one domain error type: ``message`` and ``headers`` are read from the exception."""

    status: int
    code: str
    message: Callable[[Exception], str] = str
    headers: Callable[[Exception], dict[str, str]] | None = None


def _fixed(message: str) -> Callable[[Exception], str]:
    return lambda _: message


def _retry_after(e: Exception) -> dict[str, str]:
    return {"Retry-After": str(getattr(e, "retry_after_s", 1))}


_SHUTTING_DOWN = Answer(503, "shutting_down", _fixed("the service is shutting down"), lambda _: {"Retry-After": "1"})

DOMAIN_ERRORS: dict[type[Exception], Answer] = {
    # images (vsr.images, service.imaging)
    images.EmptyImage: Answer(400, "empty_body"),
    images.UndecodableImage: Answer(400, "undecodable_image"),
    images.UnsupportedImageFormat: Answer(415, "unsupported_format"),
    images.TooManyPixels: Answer(413, "too_many_pixels"),
    images.ExtremeAspectRatio: Answer(413, "extreme_aspect_ratio"),
    images.TooManyScans: Answer(413, "too_many_scans"),
    DecodeDeadline: Answer(504, "deadline_exceeded"),
    # models named by a request (service.modelrefs)
    ModelNotLoaded: Answer(422, "unknown_model"),
    ModelNotFound: Answer(404, "model_not_found"),
    VersionNotFound: Answer(404, "version_not_found"),
    # the batcher and the request's wait on it (service.batcher, service.submit)
    QueueFull: Answer(503, "overloaded", headers=_retry_after),
    OverBudget: Answer(413, "over_memory_budget"),
    BatcherClosed: _SHUTTING_DOWN,
    DeadlineExceeded: Answer(504, "deadline_exceeded", _fixed("the request did not finish before its deadline")),
    InferenceFailed: Answer(500, "inference_failed"),
    # streams (service.streams.manager, service.urlpolicy)
    UnknownStream: Answer(404, "not_found", lambda e: f"no stream {e.args[0]!r}"),
    NotOwner: Answer(409, "wrong_shard", headers=lambda e: {"X-Shard-Owner": str(getattr(e, "owner", ""))}),
    StreamConflict: Answer(409, "conflict"),
    UnknownModel: Answer(422, "invalid_model"),
    TooManyStreams: Answer(429, "too_many_streams", headers=_retry_after),
    UrlRejected: Answer(400, "bad_url"),
    UnsupportedUrl: Answer(400, "unsupported_url"),
    UnresolvableHost: Answer(400, "unresolvable_host"),
    DeniedUrl: Answer(403, "url_denied"),
    # video jobs (service.videojobs, vsr.video)
    TooManyJobs: Answer(429, "too_many_jobs", headers=lambda _: {"Retry-After": "10"}),
    VideoError: Answer(415, "unsupported_video", lambda e: f"not a supported video (mp4, mkv, mov, ts, webm): {e}"),
}


def answer_for(exc: Exception) -> Answer | None:
    """The table's answer for ``exc``: its own type's, else its nearest base class's."""
    for cls in type(exc).__mro__:
        if cls in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[cls]
    return None


def _code_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, path=request.url.path)


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    answer = answer_for(exc)
    if answer is None:  # registered for a type of the table, so never; kept total for mypy
        return await _unhandled(request, exc)
    headers = answer.headers(exc) if answer.headers else None
    return error_response(answer.status, answer.code, answer.message(exc), headers, path=request.url.path)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code, headers = _code_for(exc.status_code), dict(exc.headers or {})
    return error_response(exc.status_code, code, str(exc.detail), headers, path=request.url.path)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    parts = []
    for e in exc.errors():
        where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("query", "path", "body", "header"))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
    message = "; ".join(parts) or "invalid parameters"
    return error_response(422, "invalid_parameters", message, path=request.url.path)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    # The client hung up mid-upload: not a server error. 499 (nginx's "client closed request") is what the
    # access metrics record; nobody is left to read the body.
    log.info("client disconnected before its request body was read")
    return error_response(499, "client_closed_request", "the client closed the connection", path=request.url.path)


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal_error", "internal server error", path=request.url.path)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    for error_type in DOMAIN_ERRORS:
        app.add_exception_handler(error_type, _domain_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unhandled)


def responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """OpenAPI ``responses=`` entries for the given error statuses, all with :class:`ErrorBody`."""
    return {s: {"model": ErrorBody, "description": HTTPStatus(s).phrase} for s in statuses}


def v2_responses(*statuses: int) -> dict[int | str, dict[str, object]]:
    """The same for routes under ``/v2``: :class:`V2ErrorBody`."""
    return {s: {"model": V2ErrorBody, "description": HTTPStatus(s).phrase} for s in statuses}
