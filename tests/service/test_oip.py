"""Open Inference Protocol (KServe v2) with Triton's own client (``tritonclient.http``) against the real service
on a loopback socket: health, metadata, inference (JSON and binary tensors, single and batch), errors, and the
output equal to the model's plain forward pass (``tests.support.reference``) and to ``/upscale``'s. Overload and deadlines go through the same batcher as
``/upscale`` (503 + Retry-After, 504)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.support.checks import assert_error
from tests.support.live import ClientFactory, Server, base_settings, hold_worker, sample, serve, wait_until
from tests.support.media import encode, open_image, rgb
from tests.support.reference import assert_model_output

tritonhttp = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402

TIMEOUT = 10.0


@pytest.fixture(scope="module")
def server(tiny_artifact: dict[str, Path]) -> Iterator[Server]:
    models = [str(tiny_artifact["x2"]), str(tiny_artifact["x4"])]
    with serve(base_settings(tiny_artifact["x2"], models=models, max_input_pixels=4096)) as srv:
        yield srv


@pytest.fixture
def triton(server: Server) -> Iterator[Any]:
    client = tritonhttp.InferenceServerClient(url=server.base.removeprefix("http://"), network_timeout=30)
    yield client
    client.close()


def infer(client: Any, image: np.ndarray, *, binary_in: bool, binary_out: bool, model: str = "x2") -> np.ndarray:
    inp = tritonhttp.InferInput("image", list(image.shape), "UINT8")
    inp.set_data_from_numpy(image, binary_data=binary_in)
    out = tritonhttp.InferRequestedOutput("image", binary_data=binary_out)
    result = client.infer(model, [inp], outputs=[out], request_id="r-1")
    assert result.get_response()["id"] == "r-1"
    return result.as_numpy("image")


def upscale_png(server: Server, image: np.ndarray, model: str = "x2") -> np.ndarray:
    r = server.client.post(f"/upscale?model={model}", content=encode(image), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    return np.asarray(open_image(r.content))


def test_health_and_metadata(triton: Any) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("x2") and triton.is_model_ready("x4", model_version="1")
    assert not triton.is_model_ready("nope")
    assert "binary_tensor_data" in triton.get_server_metadata()["extensions"]
    meta = triton.get_model_metadata("x4", model_version="1")
    assert meta["name"] == "x4" and meta["versions"] == ["1"] and meta["scale"] == 4
    assert meta["inputs"] == [{"name": "image", "datatype": "UINT8", "shape": [-1, -1, 3]}]
    assert meta["outputs"][0]["name"] == "image"


@pytest.mark.parametrize(("binary_in", "binary_out"), [(False, False), (True, True), (True, False), (False, True)])
def test_infer_is_the_model_and_equals_upscale(
    server: Server, triton: Any, binary_in: bool, binary_out: bool, tiny_artifact: dict[str, Path]
) -> None:
    image = rgb(24, 32, seed=3)
    got = infer(triton, image, binary_in=binary_in, binary_out=binary_out)
    assert got.dtype == np.uint8 and got.shape == (48, 64, 3)
    assert_model_output(got, image, tiny_artifact["x2"])
    np.testing.assert_array_equal(got, upscale_png(server, image))


def test_batch_and_other_models(server: Server, triton: Any, tiny_artifact: dict[str, Path]) -> None:
    images = np.stack([rgb(16, 20, seed=i) for i in range(3)])
    got = infer(triton, images, binary_in=True, binary_out=True)
    assert got.shape == (3, 32, 40, 3)
    for i in range(3):
        assert_model_output(got[i], images[i], tiny_artifact["x2"])
        np.testing.assert_array_equal(got[i], upscale_png(server, images[i]))
    x4 = infer(triton, images[0], binary_in=True, binary_out=True, model="x4")
    assert_model_output(x4, images[0], tiny_artifact["x4"])
    np.testing.assert_array_equal(x4, upscale_png(server, images[0], model="x4"))
    versioned = server.client.post(
        "/v2/models/x2/versions/1/infer",
        json={"inputs": [{"name": "image", "shape": [2, 2, 3], "datatype": "UINT8", "data": [[[7] * 3] * 2] * 2}]},
    )
    assert versioned.status_code == 200 and versioned.json()["outputs"][0]["shape"] == [4, 4, 3]


def _error(triton: Any, image: np.ndarray, datatype: str = "UINT8", model: str = "x2", **kw: Any) -> str:
    inp = tritonhttp.InferInput(kw.pop("name", "image"), list(image.shape), datatype)
    inp.set_data_from_numpy(image, binary_data=True)
    with pytest.raises(InferenceServerException) as e:
        triton.infer(model, [inp], **kw)
    return str(e.value.message())


def test_errors_reach_the_client(triton: Any) -> None:
    image = rgb(8, 8)
    assert "no model 'x8'" in _error(triton, image, model="x8")
    assert "no version '2'" in _error(triton, image, model_version="2")
    assert "must be UINT8" in _error(triton, image.astype(np.float32), datatype="FP32")
    assert "shape [H, W, 3]" in _error(triton, image[..., :2].copy())
    assert "named 'image'" in _error(triton, image, name="pixels")
    assert "over the limit" in _error(triton, rgb(80, 80))  # 6400 pixels > the fixture's cap of 4096
    with pytest.raises(InferenceServerException, match="no model"):
        triton.get_model_metadata("x8")


BAD_BODIES: list[tuple[Any, str]] = [
    ("not json", "not valid"),
    ({"inputs": "x"}, "not valid"),
    ({"inputs": [{"name": "image", "shape": [1, 1, 3], "datatype": "UINT8"}]}, "no 'data'"),
    ({"inputs": [{"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "data": [1, 2]}]}, "3 integers"),
    ({"inputs": [{"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "data": [1, 2, 256]}]}, "0..255"),
    ({"inputs": [{"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "data": [1.5, 2, 3]}]}, "integers"),
    ({"inputs": [{"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "data": [[1], [2, 3]]}]}, "regular"),
    ({"inputs": [{"name": "image", "shape": [0, 1, 3], "datatype": "UINT8", "data": []}]}, "shape"),
    (
        {
            "inputs": [{"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "data": [1, 2, 3]}],
            "outputs": [{"name": "other"}],
        },
        "only output",
    ),
]


@pytest.mark.parametrize(("body", "message"), BAD_BODIES)
def test_bad_requests_are_400_with_the_v2_error_shape(server: Server, body: Any, message: str) -> None:
    content = body if isinstance(body, str) else json.dumps(body)
    r = server.client.post("/v2/models/x2/infer", content=content)
    assert r.status_code == 400 and r.headers["x-error-code"] == "invalid_inference_request", r.text
    assert set(r.json()) == {"error"} and message in r.json()["error"], r.json()


def test_binary_framing_is_checked(server: Server) -> None:
    header = json.dumps(
        {"inputs": [{"name": "image", "shape": [1, 1, 3], "datatype": "UINT8", "parameters": {"binary_data_size": 3}}]}
    ).encode()
    ok = server.client.post(
        "/v2/models/x2/infer", content=header + b"abc", headers={"inference-header-content-length": str(len(header))}
    )
    assert ok.status_code == 200 and ok.json()["outputs"][0]["shape"] == [2, 2, 3]
    for extra, length in ((b"ab", len(header)), (b"abcd", len(header)), (b"abc", len(header) + 99), (b"abc", -1)):
        r = server.client.post(
            "/v2/models/x2/infer", content=header + extra, headers={"inference-header-content-length": str(length)}
        )
        assert r.status_code == 400 and isinstance(r.json()["error"], str), r.text


def test_v2_errors_are_flat_and_the_rest_keep_their_envelope(server: Server) -> None:
    r = httpx.get(f"{server.base}/v2/models/x8")
    assert r.status_code == 404 and r.json() == {"error": "no model 'x8'; loaded: ['x2', 'x4']"}
    assert r.headers["x-error-code"] == "model_not_found"
    assert isinstance(httpx.get(f"{server.base}/v2/nope").json()["error"], str)
    assert httpx.get(f"{server.base}/upscale").json()["error"]["code"] == "method_not_allowed"


def test_body_cap(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=2048)
    r = client.post("/v2/models/x2/infer", content=b" " * 4096)
    assert_error(r, 413, "payload_too_large")


# ---- same batcher as /upscale: overload and deadlines ------------------------------------------------------------


def _json_infer(client: Any, image: np.ndarray) -> Any:
    body = {
        "inputs": [{"name": "image", "shape": list(image.shape), "datatype": "UINT8", "data": image.ravel().tolist()}]
    }
    return client.post("/v2/models/x2/infer", json=body)


def test_overload_gives_503_with_retry_after(make_client: ClientFactory) -> None:
    client = make_client(queue_limit=1, max_batch_size=1, max_batch_delay_ms=0)
    release = threading.Event()
    blocked = hold_worker(client, until=release)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(_json_infer, client, rgb(seed=0))
        assert blocked.wait(TIMEOUT)
        queued = pool.submit(_json_infer, client, rgb(seed=1))
        end = time.monotonic() + TIMEOUT
        while client.app.state.batcher.qsize() < 1 and time.monotonic() < end:
            time.sleep(0.005)
        refused = _json_infer(client, rgb(seed=2))
        release.set()
        assert first.result(TIMEOUT).status_code == 200 and queued.result(TIMEOUT).status_code == 200
    assert_error(refused, 503, "overloaded")
    assert int(refused.headers["retry-after"]) >= 1
    assert sample(client, "vsr_frames_total", {"source": "oip"}) == 2


def test_deadline_gives_504(make_client: ClientFactory) -> None:
    client = make_client(request_timeout_s=0.3, max_batch_size=1, max_batch_delay_ms=0)
    release = threading.Event()
    blocked = hold_worker(client, until=release)
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(_json_infer, client, rgb(seed=0))
        assert blocked.wait(TIMEOUT)
        time.sleep(0.5)
        release.set()
        assert_error(running.result(TIMEOUT), 504, "deadline_exceeded")
    # recovered (retried: on a loaded machine one request may miss its 0.3 s deadline)
    assert wait_until(lambda: _json_infer(client, rgb()).status_code == 200, 30)
