"""Triton's model repository API: ``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load`` and
``.../unload``, as ``tritonclient.http`` calls them (``get_model_repository_index``, ``load_model``,
``unload_model``). The work, and the domain errors that ``service.errors`` maps to statuses, are in
``service.repository``."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from service.deps import RepositoryDep
from service.errors import ApiError, v2_responses

router = APIRouter(prefix="/v2/repository", tags=["repository"])


class IndexRequest(BaseModel):
    ready: bool = Field(default=False, description="only the loaded (READY) models")


class LoadRequest(BaseModel):
    parameters: dict[str, Any] = Field(
        default_factory=dict, description="Triton's config/file overrides: not supported (a model is its folder)"
    )


class UnloadRequest(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict, description="unload_dependents: no model has any")


class IndexItem(BaseModel):
    name: str
    version: str
    state: str
    reason: str


class LoadResult(BaseModel):
    name: str
    state: str


B = TypeVar("B", bound=BaseModel)


async def _body(request: Request, model: type[B]) -> B:
    """The JSON body as ``model``, read by hand: Triton's client sends no Content-Type (and an empty body to the
    index), which FastAPI's own body parsing would refuse."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw) if raw.strip() else model()
    except ValidationError as e:
        first = e.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"])
        raise ApiError(422, "invalid_parameters", f"{where}: {first['msg']}" if where else first["msg"]) from None


def _documented(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` that documents an optional JSON body read by :func:`_body`."""
    schema = {"content": {"application/json": {"schema": model.model_json_schema()}}, "required": False}
    return {"requestBody": schema}


@router.post(
    "/index",
    summary="Every model: bundled, in the repository, loaded",
    responses=v2_responses(401, 422),
    openapi_extra=_documented(IndexRequest),
)
async def index(request: Request, repo: RepositoryDep) -> list[IndexItem]:
    """Every model with its state (READY, UNAVAILABLE, LOADING, UNLOADING); ``{"ready": true}``: only the loaded."""
    req = await _body(request, IndexRequest)
    return [IndexItem(**e.__dict__) for e in repo.index(ready_only=req.ready)]


@router.post(
    "/models/{name}/load",
    summary="Load (or reload) a model by name: validated and warmed before it serves",
    responses=v2_responses(400, 401, 404, 409, 422),
    openapi_extra=_documented(LoadRequest),
)
async def load(name: str, request: Request, repo: RepositoryDep) -> LoadResult:
    params = (await _body(request, LoadRequest)).parameters
    if params:  # Triton's config override and file upload: a model here is exactly its artifact folder
        raise ApiError(400, "unsupported_parameters", f"load takes no parameters (got {sorted(params)})")
    await run_in_threadpool(repo.load, name)  # validation and warm-up: off the event loop and the worker
    return LoadResult(name=name, state="READY")


@router.post(
    "/models/{name}/unload",
    summary="Unload a model once its frames in flight are done",
    responses=v2_responses(400, 401, 404, 409, 422, 503),
    openapi_extra=_documented(UnloadRequest),
)
async def unload(name: str, request: Request, repo: RepositoryDep) -> LoadResult:
    await _body(request, UnloadRequest)  # {"parameters": {"unload_dependents": false}}: no model has dependents
    await run_in_threadpool(repo.unload, name)
    return LoadResult(name=name, state="UNAVAILABLE")
