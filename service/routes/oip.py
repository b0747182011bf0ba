"""Open Inference Protocol (KServe v2) inference: ``POST /v2/models/{name}[/versions/{version}]/infer``.

One input ``image``, UINT8, shape ``[H, W, 3]`` (or a batch ``[N, H, W, 3]``); one output ``image``, UINT8,
``[sH, sW, 3]`` (``[N, sH, sW, 3]``). Tensor data travels either as JSON (``data``: a flat or nested list) or with
the binary tensor extension: the body is the JSON header (its length in ``Inference-Header-Content-Length``)
followed by the raw tensors, in the order of ``inputs``, each sized by ``parameters.binary_data_size``. Outputs
come back binary when the requested output says ``"binary_data": true`` (or the request parameters say
``"binary_data_output": true``, as ``tritonclient`` does when no output is named).

The frames go through the same batcher and engine as ``/upscale``, with the same caps (body bytes, pixels per
request) and the same overload/deadline answers (503 + Retry-After, 504). Errors are ``{"error": "<message>"}``
(see ``service.errors``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from service.batcher import Batcher
from service.deps import BatcherDep, EngineDep, MetricsDep, SettingsDep
from service.engine import Engine
from service.errors import ApiError, v2_responses
from service.metrics import Metrics
from service.modelrefs import VERSION, check_model
from service.settings import Settings
from service.submit import decode_counted, infer_all
from service.uploads import read_body
from vsr.images import TooManyPixels

router = APIRouter(tags=["models"])

HEADER_LENGTH = "Inference-Header-Content-Length"
TENSOR = "image"  # the one input and the one output
DATATYPE = "UINT8"
SOURCE = "oip"  # vsr_frames_total{source}


class InputTensor(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None  # validated by numpy (a Python-level check of millions of ints costs seconds)


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] = Field(default_factory=dict)


class InferRequest(BaseModel):
    id: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputTensor]
    outputs: list[RequestedOutput] | None = None


class OutputTensor(BaseModel):
    name: str
    datatype: str
    shape: list[int]
    parameters: dict[str, Any] | None = None
    data: list[int] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    outputs: list[OutputTensor]


_TENSOR_SCHEMA = {
    "type": "object",
    "required": ["name", "shape", "datatype"],
    "properties": {
        "name": {"type": "string", "example": TENSOR},
        "shape": {"type": "array", "items": {"type": "integer"}, "example": [24, 32, 3]},
        "datatype": {"type": "string", "example": DATATYPE},
        "parameters": {"type": "object"},
        "data": {"type": "array", "items": {}},
    },
}
_REQUEST_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["inputs"],
                "properties": {
                    "id": {"type": "string"},
                    "parameters": {"type": "object"},
                    "inputs": {"type": "array", "items": _TENSOR_SCHEMA},
                    "outputs": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {"name": {"type": "string"}, "parameters": {"type": "object"}},
                        },
                    },
                },
            }
        },
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "model": InferResponse,
        "description": "The upscaled tensor (JSON, or JSON header + binary data with the binary extension)",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    },
    **v2_responses(400, 401, 404, 413, 503, 504),
}


def _post(path: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return router.post(
        path,
        summary="Upscale an image tensor (Open Inference Protocol)",
        response_class=Response,
        openapi_extra={"requestBody": _REQUEST_BODY},
        responses=_RESPONSES,
    )


@dataclass(frozen=True)
class Parsed:
    request: InferRequest
    frames: np.ndarray  # uint8 [N, H, W, 3]
    batched: bool  # the input had the batch dimension
    binary_output: bool


@_post("/v2/models/{name}/infer")
async def model_infer(
    name: str, request: Request, settings: SettingsDep, engine: EngineDep, batcher: BatcherDep, metrics: MetricsDep
) -> Response:
    return await _infer(name, VERSION, request, settings, engine, batcher, metrics)


@_post("/v2/models/{name}/versions/{version}/infer")
async def model_version_infer(
    name: str,
    version: str,
    request: Request,
    settings: SettingsDep,
    engine: EngineDep,
    batcher: BatcherDep,
    metrics: MetricsDep,
) -> Response:
    return await _infer(name, version, request, settings, engine, batcher, metrics)


async def _infer(
    name: str,
    version: str,
    request: Request,
    settings: Settings,
    engine: Engine,
    batcher: Batcher,
    metrics: Metrics,
) -> Response:
    deadline = time.monotonic() + settings.request_timeout_s
    check_model(engine, name, version)
    if request.headers.get("content-encoding", "identity").strip().lower() != "identity":
        raise ApiError(400, "unsupported_encoding", "compressed request bodies are not supported")
    body = await read_body(request, settings.max_upload_bytes, metrics)
    header_length = request.headers.get(HEADER_LENGTH)
    parsed = await decode_counted(metrics, parse_request, body, header_length, settings.max_input_pixels)
    del body
    outs = await infer_all(batcher, parsed.frames, model=name, deadline=deadline, metrics=metrics, source=SOURCE)
    result = np.stack(outs) if parsed.batched else outs[0]
    content, header_len = await run_in_threadpool(encode_response, parsed, result, name)
    if header_len is None:
        return Response(content, media_type="application/json")
    return Response(content, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_len)})


def bad(message: str) -> ApiError:
    return ApiError(400, "invalid_inference_request", message)


def parse_request(body: bytes, header_length: str | None, max_pixels: int) -> Parsed:
    """Body -> frames. Raises ApiError 400 (malformed), :class:`TooManyPixels` (over the request's pixel cap)."""
    if header_length is None:
        header, binary = body, b""
    else:
        if not header_length.strip().isdigit() or int(header_length) > len(body):
            raise bad(f"{HEADER_LENGTH} must be a byte count within the body ({len(body)} bytes)")
        n = int(header_length)
        header, binary = body[:n], body[n:]
    try:
        req = InferRequest.model_validate(json.loads(header))
    except (ValueError, ValidationError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad(f"the inference request header is not valid: {_first_line(e)}") from None
    if len(req.inputs) != 1 or req.inputs[0].name != TENSOR:
        raise bad(f"expected one input named {TENSOR!r}, got {[t.name for t in req.inputs]}")
    tensor = req.inputs[0]
    shape = _check_shape(tensor, max_pixels)
    frames = _tensor_data(tensor, shape, binary).reshape(shape if len(shape) == 4 else (1, *shape))
    return Parsed(req, frames, batched=len(shape) == 4, binary_output=_binary_output(req))


def _check_shape(tensor: InputTensor, max_pixels: int) -> tuple[int, ...]:
    if tensor.datatype != DATATYPE:
        raise bad(f"input {TENSOR!r} must be {DATATYPE}, got {tensor.datatype!r}")
    shape = tuple(tensor.shape)
    if len(shape) not in (3, 4) or shape[-1] != 3 or min(shape) < 1:
        raise bad(f"input {TENSOR!r} must have shape [H, W, 3] or [N, H, W, 3] (RGB), got {list(shape)}")
    pixels = int(np.prod(shape[:-1], dtype=np.int64))  # N*H*W: one request's pixels, capped like one image
    if pixels > max_pixels:
        raise TooManyPixels(f"{list(shape)} is {pixels} pixels, over the limit of {max_pixels}")
    return shape


def _tensor_data(tensor: InputTensor, shape: tuple[int, ...], binary: bytes) -> np.ndarray:
    """The input's values as a flat uint8 array (a private copy the engine may write to)."""
    count = int(np.prod(shape))
    size = tensor.parameters.get("binary_data_size")
    if size is not None:
        if tensor.data is not None:
            raise bad(f"input {TENSOR!r} has both 'data' and 'binary_data_size'")
        if not isinstance(size, int) or isinstance(size, bool) or size != len(binary) or size != count:
            raise bad(f"binary_data_size must equal the {len(binary)} bytes sent and {count} values of {list(shape)}")
        return np.frombuffer(binary, dtype=np.uint8).copy()
    if binary:
        raise bad(f"{len(binary)} bytes of binary data but no input declares binary_data_size")
    if tensor.data is None:
        raise bad(f"input {TENSOR!r} has no 'data' (or binary_data_size)")
    try:
        values = np.asarray(tensor.data)
    except (ValueError, TypeError, OverflowError):
        raise bad(f"input {TENSOR!r} data is not a regular array of integers") from None
    if values.dtype.kind not in "iu" or values.size != count:
        raise bad(f"input {TENSOR!r} data must be {count} integers for shape {list(shape)}")
    if values.min() < 0 or values.max() > 255:
        raise bad(f"input {TENSOR!r} data must be within 0..255 ({DATATYPE})")
    return values.astype(np.uint8).ravel()


def _binary_output(req: InferRequest) -> bool:
    default = req.parameters.get("binary_data_output", False)
    if req.outputs is None:
        return default is True
    if len(req.outputs) != 1 or req.outputs[0].name != TENSOR:
        raise bad(f"the only output is {TENSOR!r}, requested {[o.name for o in req.outputs]}")
    return req.outputs[0].parameters.get("binary_data", default) is True


def encode_response(parsed: Parsed, result: np.ndarray, model: str) -> tuple[bytes, int | None]:
    """The response body and, for binary output, the length of its JSON header."""
    out: dict[str, Any] = {"name": TENSOR, "datatype": DATATYPE, "shape": list(result.shape)}
    if parsed.binary_output:
        out["parameters"] = {"binary_data_size": int(result.nbytes)}
    else:
        out["data"] = result.ravel().tolist()
    body: dict[str, Any] = {"model_name": model, "model_version": VERSION, "outputs": [out]}
    if parsed.request.id is not None:
        body["id"] = parsed.request.id
    header = json.dumps(body, separators=(",", ":")).encode()
    if not parsed.binary_output:
        return header, None
    return header + result.tobytes(), len(header)


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:200]
