"""One error shape for every response: ``{"error": {"code": "...", "message": "..."}}`` — except under ``/v2``,
where the Open Inference Protocol fixes it as ``{"error": "<message>"}`` (Triton's and KServe's clients read that
string); there the code travels in the ``X-Error-Code`` header instead.

Handlers raise :class:`ApiError`; :func:`install_handlers` also reshapes FastAPI's own 404/405/422 and any
unhandled exception (500, no internals leaked).
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

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


def _code_for(status: int) -> str:
    try:
        return HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


async def _api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.headers, path=request.url.path)


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
