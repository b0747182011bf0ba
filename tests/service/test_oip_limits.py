"""OIP requests built to break the parser or the sizes get a 4xx in the ``/v2`` shape, never a 500: absurd shapes,
deep nesting, a non-ASCII header length, data nested against its shape, a batch larger than the queue can ever hold,
an output too large for JSON, a body over the cap (refused below the routes). Legitimate neighbours still pass."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.bodylimit import MULTIPART_OVERHEAD
from service.oip_tensors import JSON_OUTPUT_MAX_VALUES
from tests.support.checks import assert_error
from tests.support.live import base_settings, wait_ready
from tests.support.media import rgb

URL = "/v2/models/x2/infer"
QUEUE_LIMIT = 4
UPLOAD_CAP = 1 << 20
LENGTH = "inference-header-content-length"


@pytest.fixture(scope="module")
def client(tiny_artifact: dict[str, Path]) -> Iterator[TestClient]:
    models = [str(tiny_artifact["x2"]), str(tiny_artifact["x4"])]
    settings = base_settings(tiny_artifact["x2"], models=models, queue_limit=QUEUE_LIMIT, max_upload_bytes=UPLOAD_CAP)
    with TestClient(create_app(settings, registry=CollectorRegistry())) as c:
        wait_ready(c, timeout=60)
        yield c


def tensor(shape: Any, **extra: Any) -> dict[str, Any]:
    return {"inputs": [{"name": "image", "shape": shape, "datatype": "UINT8", **extra}]}


def binary(image: np.ndarray, **request: Any) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {**tensor(list(image.shape), parameters={"binary_data_size": image.nbytes}), **request}
    ).encode()
    return header + image.tobytes(), {LENGTH: str(len(header))}


@pytest.mark.parametrize(
    ("shape", "status"),
    [
        ([2**100, 1, 3], 413),  # overflowed numpy's int64 (OverflowError: 500)
        ([2**62 + 1, 2, 2, 3], 413),  # wrapped negative in np.prod and passed the pixel cap
        (["2", "2", "3"], 400),  # pydantic took "2" for 2
        ([True, True, 3], 400),  # and true for 1
        ([2.0, 2, 3], 400),
        ([[2], 2, 3], 400),
        ("223", 400),
        ([2, 2, 3, 3, 3], 400),
    ],
)
def test_absurd_shapes_are_refused_in_the_v2_shape(client: TestClient, shape: Any, status: int) -> None:
    r = client.post(URL, json=tensor(shape, data=[1] * (3 if shape == [True, True, 3] else 12)))
    message = assert_error(r, status)["message"]
    assert "shape" in message or "pixel" in message, message


def test_deep_nesting_and_a_unicode_length_are_400(client: TestClient) -> None:
    r = client.post(URL, content=b"[" * 100_000)
    assert_error(r, 400, "invalid_inference_request")
    assert "nested deeper" in r.json()["error"]
    deep_data = tensor([1, 1, 3], data=json.loads("[" * 20 + "1" + "]" * 20))
    assert "nested deeper" in client.post(URL, json=deep_data).json()["error"]
    body, _ = binary(rgb(2, 2))
    r = client.post(URL, content=body, headers={"inference-header-content-length": "²".encode()})
    assert_error(r, 400, "invalid_inference_request")
    assert "Inference-Header-Content-Length" in r.json()["error"]
    # brackets inside strings are not nesting: a request id full of them passes
    rid = 'a "' + "[" * 50 + " \\"  # an escaped quote, then brackets, then a backslash: all inside the string
    ok = client.post(URL, json={**tensor([1, 1, 3], data=[[[1, 2, 3]]]), "id": rid})
    assert ok.status_code == 200 and ok.json()["id"] == rid, ok.text


def test_data_must_be_flat_or_nested_as_the_shape(client: TestClient) -> None:
    image = rgb(2, 2, seed=1)
    wrong = image.reshape(3, 4).tolist()  # 12 values, nested 3x4 for [2, 2, 3]
    r = client.post(URL, json=tensor([2, 2, 3], data=wrong))
    assert_error(r, 400, "invalid_inference_request")
    assert "nested as [3, 4]" in r.json()["error"]
    flat = client.post(URL, json=tensor([2, 2, 3], data=image.ravel().tolist())).json()["outputs"][0]
    nested = client.post(URL, json=tensor([2, 2, 3], data=image.tolist())).json()["outputs"][0]
    assert flat == nested and flat["shape"] == [4, 4, 3] and len(flat["data"]) == 48
    bools = client.post(URL, json=tensor([1, 1, 3], data=[True, False, True]))
    assert_error(bools, 400, "invalid_inference_request")


def test_a_batch_the_queue_can_never_hold_is_a_413_naming_the_limit(client: TestClient) -> None:
    body, headers = binary(np.zeros((1000, 1, 1, 3), np.uint8))
    r = client.post(URL, content=body, headers=headers)
    assert_error(r, 413, "batch_too_large")  # not 503 + Retry-After: retrying could never succeed
    assert f"limit of {QUEUE_LIMIT} frames" in r.json()["error"] and "retry-after" not in r.headers
    body, headers = binary(np.stack([rgb(2, 2, seed=i) for i in range(QUEUE_LIMIT)]))
    ok = client.post(URL, content=body, headers=headers)
    assert ok.status_code == 200, ok.text
    assert ok.json()["outputs"][0]["shape"] == [QUEUE_LIMIT, 4, 4, 3]  # at the limit: served


def header_of(r: Any) -> Any:
    return json.loads(r.content[: int(r.headers[LENGTH])])


def test_large_outputs_go_binary_unless_json_is_asked_for(client: TestClient) -> None:
    side = int((JSON_OUTPUT_MAX_VALUES / 3) ** 0.5) // 4 + 1  # x4: just over the JSON output cap
    image = rgb(side, side, seed=2)
    body, headers = binary(image)
    r = client.post("/v2/models/x4/infer", content=body, headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream", r.text[:200]
    out = header_of(r)["outputs"][0]
    assert out["shape"] == [4 * side, 4 * side, 3]
    assert out["parameters"]["binary_data_size"] == len(r.content) - int(r.headers[LENGTH]) == 16 * image.nbytes
    asked_json = {"outputs": [{"name": "image", "parameters": {"binary_data": False}}]}
    body, headers = binary(image, **asked_json)
    r = client.post("/v2/models/x4/infer", content=body, headers=headers)
    assert_error(r, 413, "output_too_large")
    assert str(JSON_OUTPUT_MAX_VALUES) in r.json()["error"] and "binary_data" in r.json()["error"]
    small = client.post(URL, json=tensor([1, 1, 3], data=[1, 2, 3]))  # small outputs stay JSON by default
    assert small.headers["content-type"] == "application/json" and len(small.json()["outputs"][0]["data"]) == 12


def test_a_body_over_the_cap_is_refused_in_the_v2_shape(client: TestClient) -> None:
    """Refused by the body-limit middleware from its Content-Length, before a route runs."""
    r = client.post(URL, content=b" " * (UPLOAD_CAP + MULTIPART_OVERHEAD + 1))
    assert_error(r, 413, "payload_too_large")
    assert isinstance(r.json()["error"], str) and r.headers["connection"] == "close"
