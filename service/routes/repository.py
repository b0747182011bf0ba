"""Triton's model repository API: ``POST /v2/repository/index``, ``POST /v2/repository/models/{name}/load`` and
``.../unload``, as ``tritonclient.http`` calls them (``get_model_repository_index``, ``load_model``,
``unload_model``). The work is in ``service.repository``; this maps its errors to statuses."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from service.deps import RepositoryDep
from service.errors import ApiError, v2_responses
from service.repository import (
    BadModelName,
    BrokenArtifact,
    ModelInUse,
    ModelNotFound,
    ModelOverBudget,
    RepositoryError,
    UnloadTimeout,
)

router = APIRouter(prefix="/v2/repository", tags=["repository"])

STATUS: dict[type[RepositoryError], tuple[int, str]] = {
    BadModelName: (400, "invalid_model_name"),
    BrokenArtifact: (400, "invalid_artifact"),
    ModelNotFound: (404, "model_not_found"),
    ModelOverBudget: (409, "over_memory_budget"),
    ModelInUse: (409, "model_in_use"),
    UnloadTimeout: (503, "unload_timeout"),
}


class IndexItem(BaseModel):
    name: str
    version: str
    state: str
    reason: str


class LoadResult(BaseModel):
    name: str
    state: str


def _api_error(e: RepositoryError) -> ApiError:
    status, code = STATUS.get(type(e), (400, "repository_error"))
    headers = {"Retry-After": "1"} if status == 503 else None
    return ApiError(status, code, str(e), headers=headers)


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object; Triton's client sends an empty body to the index, ``{}`` to load."""
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return body


@router.post("/index", summary="Every model: bundled, in the repository, loaded", responses=v2_responses(400, 401))
async def index(request: Request, repo: RepositoryDep) -> list[IndexItem]:
    """``{"ready": true}`` lists only the loaded models."""
    ready = (await _json_body(request)).get("ready", False)
    if not isinstance(ready, bool):
        raise ApiError(400, "invalid_parameters", "ready must be true or false")
    return [IndexItem(**e.__dict__) for e in repo.index(ready_only=ready)]


@router.post(
    "/models/{name}/load",
    summary="Load (or reload) a model by name: validated and warmed before it serves",
    responses=v2_responses(400, 401, 404, 409),
)
async def load(name: str, request: Request, repo: RepositoryDep) -> LoadResult:
    params = (await _json_body(request)).get("parameters") or {}
    if params:  # Triton's config override and file upload: a model here is exactly its artifact folder
        raise ApiError(400, "unsupported_parameters", f"load takes no parameters (got {sorted(params)})")
    try:
        await run_in_threadpool(repo.load, name)  # validation and warm-up: off the event loop and the worker
    except RepositoryError as e:
        raise _api_error(e) from None
    return LoadResult(name=name, state="READY")


@router.post(
    "/models/{name}/unload",
    summary="Unload a model once its frames in flight are done",
    responses=v2_responses(400, 401, 404, 409, 503),
)
async def unload(name: str, request: Request, repo: RepositoryDep) -> LoadResult:
    await _json_body(request)  # {"parameters": {"unload_dependents": false}}: no model here has dependents
    try:
        await run_in_threadpool(repo.unload, name)
    except RepositoryError as e:
        raise _api_error(e) from None
    return LoadResult(name=name, state="UNAVAILABLE")
