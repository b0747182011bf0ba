"""Health and model metadata under Open Inference Protocol (KServe v2) names, and ``/metrics``.
Inference itself (``/v2/models/{name}/infer``) is in ``service.routes.oip``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from service.deps import BatcherDep, EngineDep, RegistryDep
from service.errors import ApiError, v2_responses
from service.modelrefs import VERSION, check_model

router = APIRouter(tags=["health"])
models_router = APIRouter(tags=["models"])
metrics_router = APIRouter(tags=["metrics"])


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class TensorSpec(BaseModel):
    name: str
    datatype: str
    shape: list[int]


class ModelMetadata(BaseModel):
    """A loaded model: OIP fields (name, versions, platform, inputs, outputs) plus the artifact's card."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "name": "x2",
                    "versions": ["1"],
                    "platform": "pytorch",
                    "inputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, 3]}],
                    "outputs": [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, 3]}],
                    "ready": True,
                    "arch": "rep_student",
                    "scale": 2,
                    "parameters": 29000,
                    "config": {"scale": 2, "channels": 28, "depth": 3, "fused": True},
                    "dtype": "int8",
                    "runtime": "openvino",
                    "precision": "int8",
                    "ms_per_frame": 1.9,
                    "probe": [96, 160],
                    "ms_per_megapixel": 118.0,
                    "candidates_ms": {"torch/fp32": 6.1, "torch/bf16": 2.4, "openvino/fp32": 4.3, "openvino/int8": 1.9},
                    "device": "cpu",
                    "scores": {"Set5": {"psnr_y": 37.3, "bicubic_psnr_y": 33.7}},
                    "created": "2026-11-28T02:00:00+00:00",
                }
            ]
        }
    )

    name: str
    versions: list[str] = Field(default_factory=lambda: ["1"])
    platform: str = "pytorch"
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    ready: bool
    arch: str
    scale: int
    parameters: int
    config: dict[str, Any]
    dtype: str
    runtime: str = Field(description="torch or openvino: measured at load on this machine (vsr/runner.py)")
    precision: str = Field(description="fp32, bf16, fp16 or int8 (int8: the artifact's own IR, made at export)")
    ms_per_frame: float | None = Field(description="the chosen runtime's time on the probe frame (probe: h, w)")
    probe: list[int]
    ms_per_megapixel: float | None = Field(description="cost per input megapixel: the probe, then served frames")
    candidates_ms: dict[str, float | None] = Field(description="probe ms of every candidate (None: cannot run here)")
    device: str
    scores: dict[str, Any]
    created: str
    git_commit: str | None = None
    license: str | None = None
    notes: str | None = None


class ModelList(BaseModel):
    models: list[ModelMetadata]


class ServerMetadata(BaseModel):
    name: str = "vsr"
    version: str
    extensions: list[str] = Field(default_factory=lambda: ["binary_tensor_data"])


@router.get("/v2/health/live", summary="Liveness: 503 when the inference worker has died", responses=v2_responses(503))
async def live(batcher: BatcherDep) -> Live:
    if not batcher.alive:
        raise ApiError(503, "worker_dead", "the inference worker is not running")
    return Live(live=True)


@router.get(
    "/v2/health/ready", summary="Readiness: 503 until every model is loaded and warm", responses=v2_responses(503)
)
async def ready(engine: EngineDep, batcher: BatcherDep) -> Ready:
    if not batcher.alive:
        raise ApiError(503, "worker_dead", "the inference worker is not running")
    if not engine.ready:
        raise ApiError(503, "not_ready", "models are warming up", headers={"Retry-After": "1"})
    return Ready(ready=True)


@router.get("/v2", summary="Server metadata")
async def server_metadata(request: Request) -> ServerMetadata:
    return ServerMetadata(version=request.app.version)


def _metadata(engine: EngineDep, name: str, version: str = VERSION) -> ModelMetadata:
    check_model(engine, name, version)
    spec = [TensorSpec(name="image", datatype="UINT8", shape=[-1, -1, 3])]
    return ModelMetadata(inputs=spec, outputs=spec, ready=engine.ready, **engine.describe(name))


def _ready(engine: EngineDep, name: str, version: str = VERSION) -> Ready:
    check_model(engine, name, version)
    if not engine.ready:
        raise ApiError(503, "not_ready", "models are warming up", headers={"Retry-After": "1"})
    return Ready(ready=True)


@models_router.get("/v2/models", summary="Every loaded model")
async def list_models(engine: EngineDep) -> ModelList:
    return ModelList(models=[_metadata(engine, n) for n in engine.names])


@models_router.get("/v2/models/{name}", summary="Model metadata", responses=v2_responses(404))
async def model_metadata(name: str, engine: EngineDep) -> ModelMetadata:
    return _metadata(engine, name)


@models_router.get(
    "/v2/models/{name}/versions/{version}", summary="Model metadata (version 1)", responses=v2_responses(404)
)
async def model_version_metadata(name: str, version: str, engine: EngineDep) -> ModelMetadata:
    return _metadata(engine, name, version)


@models_router.get("/v2/models/{name}/ready", summary="Model readiness", responses=v2_responses(404, 503))
async def model_ready(name: str, engine: EngineDep) -> Ready:
    return _ready(engine, name)


@models_router.get(
    "/v2/models/{name}/versions/{version}/ready",
    summary="Model readiness (version 1)",
    responses=v2_responses(404, 503),
)
async def model_version_ready(name: str, version: str, engine: EngineDep) -> Ready:
    return _ready(engine, name, version)


@metrics_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(registry: RegistryDep) -> Response:
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
