"""The one dependencies module: the lifespan's resources from ``app.state`` as ``Annotated`` aliases (routes never
read ``app.state`` themselves), and API-key checking."""

from __future__ import annotations

import hmac
from typing import Annotated, cast

import anyio
from fastapi import Depends, Request
from prometheus_client import CollectorRegistry

from service.batcher import Batcher
from service.engine import Engine
from service.errors import ApiError
from service.metrics import Metrics
from service.repository import ModelRepository
from service.settings import Settings
from service.streams.manager import StreamManager
from service.streams.record import ClipStore
from service.videojobs import JobManager

# app.state is untyped (Starlette's State); these are the one place that reads it, each with the type the lifespan
# (service.app) stored there.


def get_settings(request: Request) -> Settings:
    return cast(Settings, request.app.state.settings)


def get_engine(request: Request) -> Engine:
    return cast(Engine, request.app.state.engine)


def get_batcher(request: Request) -> Batcher:
    return cast(Batcher, request.app.state.batcher)


def get_metrics(request: Request) -> Metrics:
    return cast(Metrics, request.app.state.metrics)


def get_registry(request: Request) -> CollectorRegistry:
    return cast(CollectorRegistry, request.app.state.registry)


def get_streams(request: Request) -> StreamManager:
    return cast(StreamManager, request.app.state.streams)


def get_jobs(request: Request) -> JobManager:
    return cast(JobManager, request.app.state.video_jobs)


def get_repository(request: Request) -> ModelRepository:
    return cast(ModelRepository, request.app.state.repository)


def get_clips(request: Request) -> ClipStore | None:
    """The clips folder of stream recordings; None when ``VSR_CLIPS_DIR`` is unset."""
    return cast(ClipStore | None, request.app.state.clips)


def get_decode_limiter(request: Request) -> anyio.CapacityLimiter:
    """Bounds the image decodes running at once (one per core)."""
    return cast(anyio.CapacityLimiter, request.app.state.decode_limiter)


SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
BatcherDep = Annotated[Batcher, Depends(get_batcher)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RegistryDep = Annotated[CollectorRegistry, Depends(get_registry)]
StreamsDep = Annotated[StreamManager, Depends(get_streams)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
RepositoryDep = Annotated[ModelRepository, Depends(get_repository)]
ClipsDep = Annotated[ClipStore | None, Depends(get_clips)]
DecodeLimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_decode_limiter)]


def presented_key(request: Request) -> str | None:
    """The key from ``X-API-Key`` or ``Authorization: Bearer <key>``."""
    key = request.headers.get("x-api-key")
    if key:
        return key
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def key_matches(key: str | None, keys: list[str]) -> bool:
    """Constant-time comparison against every configured key (no early exit on a match)."""
    if key is None:
        return False
    given = key.encode()
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(given, k.encode())
    return ok


def require_api_key(request: Request, settings: SettingsDep) -> None:
    """401 unless no keys are configured or a configured key was presented."""
    if not settings.api_keys:
        return
    if not key_matches(presented_key(request), settings.api_keys):
        raise ApiError(
            401,
            "unauthorized",
            "missing or wrong API key (send X-API-Key or Authorization: Bearer)",
            headers={"WWW-Authenticate": "Bearer"},
        )


ApiKey = Depends(require_api_key)
