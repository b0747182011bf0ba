"""The HTTP/1.1 connection protocol ``vsr serve`` runs uvicorn with: uvicorn's httptools protocol plus two guards.

1. **Slow clients** (slowloris). uvicorn times out only an idle keep-alive connection; a client that sends its
   headers one byte every few seconds, or connects and sends nothing, or stops half-way through a body, holds a
   connection (and a file descriptor) forever — 300 of them failed the health check under a 256-fd limit. Here:
   - the request line and headers must be complete within ``header_timeout_s`` of the connection (or of the
     first byte of the next request on a kept-alive connection), else the connection is closed;
   - a body must make progress: no new body bytes for ``body_timeout_s`` while the app waits for them closes the
     connection (the app sees a disconnect: 499, logged at info). Time the app itself spends not reading (flow
     control paused by us) does not count.
2. **Pipelined requests and a client hang-up.** uvicorn marks only the newest parsed request as disconnected when
   the client goes; a pipelined request that starts (or runs) after that wrote to the closed transport and logged
   two tracebacks per request. Here every request of the connection learns of the hang-up.

Nothing here changes a well-behaved client's requests; ``uvicorn.Config(http=guarded_protocol(...))`` uses it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

log = logging.getLogger(__name__)

HEADER_TIMEOUT_S = 10.0  # nginx's client_header_timeout is 60 s; a camera page or curl sends headers in ms
BODY_TIMEOUT_S = 30.0  # between body reads (nginx's client_body_timeout: 60 s); a stalled upload, not a slow one


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header/body read timeouts and hang-ups passed to pipelined requests."""

    header_timeout_s: float = HEADER_TIMEOUT_S
    body_timeout_s: float = BODY_TIMEOUT_S

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guard: asyncio.TimerHandle | None = None
        self._guard_reason = ""
        self._headers_done = False
        self._running: set[RequestResponseCycle] = set()

    # -- timers --

    def _arm(self, seconds: float, reason: str) -> None:
        self._disarm()
        self._guard_reason = reason
        self._guard = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None

    def _expired(self) -> None:
        self._guard = None
        if self.transport is None or self.transport.is_closing():
            return
        if self._guard_reason == "body" and self.flow is not None and self.flow.read_paused:
            self._arm(self.body_timeout_s, "body")  # we stopped reading (the app is busy): not the client's fault
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "client"
        log.info("closing a slow connection from %s (%s not received in time)", client, self._guard_reason)
        self.transport.close()

    # -- uvicorn's protocol hooks --

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout_s, "headers")

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        # Every request of this connection — running, queued behind it (pipelined), or the newest — sees the
        # hang-up: uvicorn tells only the newest, and the others wrote to a closed transport.
        for cycle in [*self._running, *(c for c, _ in self.pipeline)]:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.message_event.set()
        self.pipeline.clear()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._headers_done = False
        if self._guard is None:  # the first byte of a later request on a kept-alive connection
            self._arm(self.header_timeout_s, "headers")

    def on_headers_complete(self) -> None:
        self._headers_done = True
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None and self._expects_body():
            self._arm(self.body_timeout_s, "body")

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        if self._guard_reason == "body" and self._guard is not None:
            self._arm(self.body_timeout_s, "body")

    def on_message_complete(self) -> None:
        super().on_message_complete()
        if self._guard_reason == "body":
            self._disarm()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        self._running = {c for c in self._running if not (c.response_complete or c.disconnected)}
        self._running.add(cycle)
        super()._start_asgi_task(cycle, app)

    def _expects_body(self) -> bool:
        headers = dict(self.headers)
        length = headers.get(b"content-length", b"0")
        return b"chunked" in headers.get(b"transfer-encoding", b"").lower() or (length.isdigit() and int(length) > 0)


def guarded_protocol(header_timeout_s: float, body_timeout_s: float) -> type[GuardedHttpToolsProtocol]:
    """The protocol class with these timeouts (``uvicorn.Config(http=...)`` takes a class)."""
    return type(
        "GuardedHttpToolsProtocol",
        (GuardedHttpToolsProtocol,),
        {"header_timeout_s": header_timeout_s, "body_timeout_s": body_timeout_s},
    )


class OneLineStartupErrors:
    """Wraps the app for uvicorn: a failed start-up is reported as one line (the exception), not a traceback.

    Starlette reports a lifespan failure to the server with the whole traceback as the message, and uvicorn logs
    it; an operator (and a crash-looping orchestrator's log) needs the last line: what went wrong.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def one_line(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and message.get("message"):
                last = str(message["message"]).strip().splitlines()[-1]
                message = {**message, "message": f"cannot start: {last}"}
            await send(message)

        await self.app(scope, receive, one_line)
