"""Request-body limits for every route, enforced below the routes (an ASGI middleware).

A route's handler cannot be trusted to cap its own body: FastAPI reads a JSON body whole before the handler runs
(a 300 MB ``POST /stream`` cost +600-900 MB of RSS). Here every request gets a byte limit by its path:

- a declared ``Content-Length`` over the limit is answered 413 at once, before a byte of the body is read (and
  before ``100 Continue`` is sent, so a polite client never uploads it);
- a chunked (or lying) body is counted as it arrives; the read that passes the limit raises a 413 ``ApiError`` in
  the handler, so no more than the limit plus one chunk is ever held.

A 413 carries ``Connection: close``: the server stops reading that connection instead of draining the rest of a
body nobody wants.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import ApiError, error_response

MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers allowed on top of a file cap
DEFAULT_JSON_BYTES = 1024 * 1024  # stream specs, job ids: a few hundred bytes; 1 MiB is generous


class BodyTooLarge(ApiError, HTTPException):  # type: ignore[misc]  # both define `headers` (same data)
    """Raised by the body read that passes the limit. Also an ``HTTPException``: FastAPI turns any other error
    raised while it reads a JSON body into a 400, but lets these through."""

    def __init__(self, limit: int) -> None:
        message = f"request body is over the limit of {limit} bytes"
        HTTPException.__init__(self, 413, message)
        ApiError.__init__(self, 413, "payload_too_large", message)


@dataclass(frozen=True)
class BodyLimits:
    """Byte limits by path: the first matching rule wins, else ``default`` (every JSON route)."""

    default: int = DEFAULT_JSON_BYTES
    rules: tuple[tuple[re.Pattern[str], int], ...] = ()

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.rules:
            if pattern.fullmatch(path):
                return limit
        return self.default

    @classmethod
    def build(cls, default: int, routes: dict[str, int]) -> BodyLimits:
        """``routes``: a regular expression of the path -> its limit (bytes)."""
        return cls(default, tuple((re.compile(p), n) for p, n in routes.items()))


class BodyLimitMiddleware:
    """Add outside the routes: ``app.add_middleware(BodyLimitMiddleware, limits=..., on_reject=...)``."""

    def __init__(self, app: ASGIApp, limits: BodyLimits, on_reject: Callable[[], None] | None = None) -> None:
        self.app = app
        self.limits = limits
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limits.limit_for(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            self._rejected()
            message = f"request body is over the limit of {limit} bytes"
            response = error_response(413, "payload_too_large", message, path=scope["path"])  # /v2: its own shape
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    self._rejected()
                    raise BodyTooLarge(limit)
            return message

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 413:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, closing)

    def _rejected(self) -> None:
        if self.on_reject is not None:
            self.on_reject()


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP parser rejects these; count the body instead
    return None
