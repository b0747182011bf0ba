"""The stream tests run tiny models on one torch thread (every test here)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def one_torch_thread(one_thread: None) -> Iterator[None]:
    """Tiny models on one thread: on this shared 2-core box (training jobs beside the tests) two OpenMP threads
    make a 160x90 frame take ~300 ms instead of ~7 ms, which would turn every live test into a load test."""
    yield
