"""Fixtures for the service tests: an app (FastAPI TestClient) on a tiny artifact with a fresh metrics registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from tests.support.live import ClientFactory
from tests.support.live import wait_ready as until_ready


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
            until_ready(client, timeout=60)
        return client

    yield factory
    for client in reversed(stack):
        client.__exit__(None, None, None)
