"""Fixtures for the service tests: an app on a tiny artifact with a fresh metrics registry, and image helpers."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from tests.conftest import synthetic_image

ClientFactory = Callable[..., TestClient]


@pytest.fixture
def make_client(tiny_artifact: dict[str, Path]) -> Iterator[ClientFactory]:
    """``make_client(**settings)`` -> a started TestClient (lifespan run, engine warm) on the tiny x2 artifact.

    Defaults: fp32 (exact comparisons), 2 ms batch delay. Every client gets its own registry.
    """
    stack: list[TestClient] = []

    def factory(*, wait_ready: bool = True, **overrides: Any) -> TestClient:
        kw: dict[str, Any] = {"models": [str(tiny_artifact["x2"])], "dtype": "fp32", "max_batch_delay_ms": 2.0}
        kw.update(overrides)
        client = TestClient(create_app(Settings(**kw), registry=CollectorRegistry()))
        client.__enter__()
        stack.append(client)
        if wait_ready:
            wait_ready_or_fail(client)
        return client

    yield factory
    for client in reversed(stack):
        client.__exit__(None, None, None)


def wait_ready_or_fail(client: TestClient, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if client.get("/v2/health/ready").status_code == 200:
            return
        time.sleep(0.01)
    pytest.fail("service did not become ready")


def sample(client: TestClient, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample's current value from the app's registry (0 when absent)."""
    value = client.app.state.registry.get_sample_value(name, labels or {})  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def rgb(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    return synthetic_image(np.random.default_rng(seed), height, width)


def encode(img: Image.Image | np.ndarray, fmt: str = "PNG", **options: Any) -> bytes:
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def open_image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def assert_error(response: Any, status: int, code: str | None = None) -> dict[str, str]:
    """The response has ``status`` and the error envelope (with ``code`` when given); returns the error.

    Under ``/v2`` the envelope is the Open Inference Protocol's ``{"error": "<message>"}`` and the code is in the
    ``X-Error-Code`` header."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if response.request.url.path.startswith("/v2"):
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
        if code is not None:
            assert response.headers["x-error-code"] == code, response.headers
        return {"code": response.headers["x-error-code"], "message": body["error"]}
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]
