"""The app factory. Resources (engine, batcher, stream manager) are created in the lifespan and kept on
``app.state``; handlers get them through ``service.deps``. Nothing is built at import time.

    app = create_app(Settings(models=["/path/to/artifact"]), registry=CollectorRegistry())
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import anyio
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.batcher import Batcher
from service.bodylimit import MULTIPART_OVERHEAD, BodyLimitMiddleware, BodyLimits
from service.deps import ApiKey
from service.engine import Engine
from service.errors import install_handlers, responses, v2_responses
from service.metrics import Metrics, new_registry
from service.repository import ModelRepository, in_use_by, repository_entry
from service.routes import health, oip, record, repository, stream, upscale, video, web
from service.settings import PREFERRED_MODEL, Settings
from service.streams.auto import AUTO, AutoModel
from service.streams.config import load_stream_specs
from service.streams.manager import StreamManager
from service.streams.record import ClipStore
from service.urlpolicy import policy_from
from service.videojobs import JobManager
from vsr.runner import Cost

log = logging.getLogger(__name__)

DESCRIPTION = """Real-time super-resolution of images (and video streams) with knowledge-distilled students.

* `POST /upscale` — an image in, the upscaled image out (PNG, JPEG, WebP, BMP).
* `GET /v2/health/live`, `GET /v2/health/ready`, `GET /v2/models/{name}` and `POST /v2/models/{name}/infer` —
  the Open Inference Protocol (KServe v2; JSON and binary tensors), e.g. for Triton's `tritonclient.http`.
* `POST /v2/repository/index`, `POST /v2/repository/models/{name}/load` and `.../unload` — Triton's model
  repository API over `VSR_MODEL_REPOSITORY` (a folder of artifact folders) and the bundled models.
* `GET /metrics` — Prometheus.

When API keys are configured (`VSR_API_KEYS`), send one as `X-API-Key: <key>` or `Authorization: Bearer <key>`.
Every error body is `{"error": {"code": "...", "message": "..."}}`, except under `/v2`, where the protocol fixes it
as `{"error": "<message>"}` (the code is in the `X-Error-Code` header).
"""


def create_app(settings: Settings | None = None, *, registry: CollectorRegistry | None = None) -> FastAPI:
    """Build the service. ``settings`` default to the environment; ``registry`` to a fresh one with the
    process/platform/GC collectors (tests pass a bare ``CollectorRegistry()``)."""
    settings = settings if settings is not None else Settings()
    registry = registry if registry is not None else new_registry()
    metrics = Metrics(registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        root = Path(settings.model_repository) if settings.model_repository else None
        entries = [repository_entry(root, e) for e in settings.models]  # a repository name means its folder
        engine = await run_in_threadpool(Engine.load, settings.model_copy(update={"models": entries}), metrics)
        for use in PREFERRED_MODEL:  # a VSR_<USE>_MODEL that names no loaded model fails the start, not a request
            settings.model_for(use, engine.names)  # type: ignore[arg-type]
        batcher = Batcher(
            engine,
            max_batch_size=settings.batch_size(engine.device),
            max_batch_delay_s=settings.max_batch_delay_s,
            queue_limit=settings.queue_limit,
            metrics=metrics,
            on_start=engine.warmup if settings.warmup else engine.mark_ready,  # runs on the worker thread
            memory_budget_bytes=settings.memory_budget_bytes(),
        )
        # The jobs folder first: a failure after the worker started left it running the model into interpreter
        # shutdown (SIGABRT). Anything that fails after it is started stops it again.
        app.state.video_jobs = JobManager(batcher.submit, settings.job_options(), metrics)
        app.state.clips = (
            ClipStore(Path(settings.clips_dir), settings.clips_max_mb << 20) if settings.clips_dir else None
        )
        batcher.start()
        app.state.engine = engine
        app.state.decode_limiter = anyio.CapacityLimiter(max(os.cpu_count() or 1, 1))  # decodes at once
        app.state.batcher = batcher
        try:
            app.state.streams = await run_in_threadpool(start_streams, settings, engine, batcher, metrics)
        except BaseException:
            await run_in_threadpool(app.state.video_jobs.close)
            await run_in_threadpool(lambda: batcher.close(drain=False, timeout=settings.request_timeout_s))
            raise
        app.state.repository = ModelRepository(
            root,
            engine=engine,
            batcher=batcher,
            budget_bytes=settings.memory_budget_bytes(),
            in_use=in_use_by(settings, app.state.streams, app.state.video_jobs),
            on_change=app.state.streams.set_models,
            unload_timeout_s=settings.request_timeout_s,
        )
        log.info("serving %s on %s (%s)", engine.names, engine.device, engine.dtype)
        try:
            yield
        finally:
            await run_in_threadpool(app.state.streams.close)
            await run_in_threadpool(app.state.video_jobs.close)
            await run_in_threadpool(lambda: batcher.close(drain=True, timeout=settings.request_timeout_s))

    docs = settings.docs_public
    app = FastAPI(
        title="vsr",
        version=_version(),
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.registry = registry
    install_handlers(app)
    app.add_middleware(BodyLimitMiddleware, limits=body_limits(settings), on_reject=_count_too_large(metrics))
    app.add_middleware(HttpMetricsMiddleware)

    unauthorized = responses(401)  # documented wherever a key is checked (the schema fuzzer holds us to it)
    app.include_router(health.router)
    app.include_router(health.models_router, dependencies=[ApiKey], responses=v2_responses(401))
    app.include_router(oip.router, dependencies=[ApiKey], responses=v2_responses(401))
    app.include_router(repository.router, dependencies=[ApiKey], responses=v2_responses(401))
    if settings.metrics_public:
        app.include_router(health.metrics_router)
    else:
        app.include_router(health.metrics_router, dependencies=[ApiKey], responses=unauthorized)
    app.include_router(upscale.router, dependencies=[ApiKey], responses=unauthorized)
    app.include_router(stream.router, dependencies=[ApiKey], responses=unauthorized)
    app.include_router(record.router, dependencies=[ApiKey], responses=unauthorized)
    app.include_router(video.router, dependencies=[ApiKey], responses=unauthorized)
    app.include_router(web.router)  # the page and its static files; its API calls carry the key
    return app


def camera_models(engine: Engine, default: str) -> list[str]:
    """``auto``'s candidates, best first: the loaded models trained on camera degradations at ``default``'s scale,
    the larger first (of one family, the larger student scores higher on camera footage); ``[default]`` if none."""
    metas = {n: engine.models[n].meta for n in engine.names}
    scale = metas[default].scale
    cams = [
        n
        for n, m in metas.items()
        if m.scale == scale and (m.training.get("config", {}).get("camera", {}).get("enabled") or "camera" in n)
    ]
    return sorted(cams, key=lambda n: -metas[n].parameters) or [default]


def start_streams(settings: Settings, engine: Engine, batcher: Batcher, metrics: Metrics) -> StreamManager:
    """The stream manager, wired here so that ``service.streams`` knows neither the settings nor the engine (they
    import the stream config): ``auto`` model choice over the camera models, the cameras of ``VSR_STREAMS`` /
    ``VSR_STREAMS_FILE`` started."""
    default = settings.model_for("stream", engine.names)

    def takes_y(model: str) -> bool:  # a luma model gets a stream frame's Y from the decoder's planes
        return settings.stream_planes and model in engine.models and engine.runner(model).luma

    def cost(model: str) -> Cost:  # of the frames its streams send
        return engine.runner(model).costs[1 if takes_y(model) else 3]

    auto = None
    if settings.stream_model in (None, AUTO):
        auto = AutoModel(
            camera_models(engine, default),
            lambda m, h, w: cost(m).frame_ms(h, w),
            budget=settings.stream_budget,
            on_choice=lambda c: metrics.stream_budget.set(c.load),
            age=lambda m: cost(m).age_s(),
        )
    manager = StreamManager(
        submit=batcher.submit,
        models={name: engine.scale(name) for name in engine.names},
        metrics=metrics,
        policy=policy_from(settings.stream_allow_cidrs, settings.stream_allow_file),
        opts=replace(settings.stream_options(), cuda=engine.device.type == "cuda"),
        max_streams=settings.max_streams,
        default_model=default,
        shard=settings.shard(),
        auto=auto,
        takes_y=takes_y,
    )
    manager.start_configured(load_stream_specs(settings.streams, settings.streams_file))
    return manager


def body_limits(settings: Settings) -> BodyLimits:
    """Each route's body cap; every route not named here (the JSON ones) gets ``max_json_bytes``."""
    image = settings.max_upload_bytes + MULTIPART_OVERHEAD
    return BodyLimits.build(
        settings.max_json_bytes,
        {
            r"/upscale(/bicubic)?": image,
            r"/upscale/video": settings.video_max_bytes + MULTIPART_OVERHEAD,
            r"/v2/models/[^/]+(/versions/[^/]+)?/infer": image,  # its own reader caps at max_upload_bytes
        },
    )


def _count_too_large(metrics: Metrics) -> Callable[[], None]:
    return metrics.rejected.labels(reason="too_large").inc


def _version() -> str:
    try:
        return importlib.metadata.version("vsr")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


class HttpMetricsMiddleware:
    """Counts requests and times them by route *template* (``/v2/models/{name}``), never the raw URL."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            metrics: Metrics | None = getattr(scope["app"].state, "metrics", None) if "app" in scope else None
            if metrics is not None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                metrics.http_requests.labels(route=route, method=scope["method"], status=str(status)).inc()
                metrics.http_duration.labels(route=route).observe(time.perf_counter() - start)
