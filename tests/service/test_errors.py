"""The web layer's one table of domain errors (service.errors.DOMAIN_ERRORS): each type's status, code, message and
headers, in both body shapes, with the most specific type winning."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.batcher import BatcherClosed, QueueFull
from service.errors import install_handlers
from service.sharding import Shard
from service.streams.manager import NotOwner, StreamConflict, TooManyStreams, UnknownModel, UnknownStream
from service.urlpolicy import DeniedUrl, UrlRejected
from vsr.images import TooManyPixels

CASES: dict[str, tuple[Exception, int, str, str, dict[str, str]]] = {
    # name: (raised, status, code, message, headers)
    "queue-full": (QueueFull(3), 503, "overloaded", "inference queue is full; retry after 3 s", {"retry-after": "3"}),
    "closed": (BatcherClosed(), 503, "shutting_down", "the service is shutting down", {"retry-after": "1"}),
    "pixels": (TooManyPixels("too big"), 413, "too_many_pixels", "too big", {}),
    "no-stream": (UnknownStream("abc"), 404, "not_found", "no stream 'abc'", {}),
    "conflict": (StreamConflict("taken"), 409, "conflict", "taken", {}),
    "stream-model": (UnknownModel("no x9"), 422, "invalid_model", "no x9", {}),  # a StreamConflict, but more specific
    "streams-cap": (
        TooManyStreams("at most 2", retry_after_s=7),
        429,
        "too_many_streams",
        "at most 2",
        {"retry-after": "7"},
    ),
    "denied": (DeniedUrl("private address"), 403, "url_denied", "private address", {}),
    "bad-url": (UrlRejected("no host"), 400, "bad_url", "no host", {}),
}


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = FastAPI()
    install_handlers(app)

    @app.get("/raise/{case}")
    @app.get("/v2/raise/{case}")
    async def raise_it(case: str) -> None:
        raise CASES[case][0]

    @app.get("/owner")
    async def owner() -> None:
        raise NotOwner("cam-1", 2, Shard(index=0, count=3))

    return TestClient(app)


@pytest.mark.parametrize("case", CASES)
def test_each_type_gets_its_answer_in_both_shapes(client: TestClient, case: str) -> None:
    _, status, code, message, headers = CASES[case]
    r = client.get(f"/raise/{case}")
    assert (r.status_code, r.json()) == (status, {"error": {"code": code, "message": message}})
    assert {k: r.headers[k] for k in headers} == headers
    v2 = client.get(f"/v2/raise/{case}")  # the Open Inference Protocol's shape: the code in a header
    assert (v2.status_code, v2.json(), v2.headers["x-error-code"]) == (status, {"error": message}, code)
    assert {k: v2.headers[k] for k in headers} == headers


def test_headers_are_read_from_the_error(client: TestClient) -> None:
    r = client.get("/owner")
    assert r.status_code == 409 and r.json()["error"]["code"] == "wrong_shard"
    assert r.headers["x-shard-owner"] == "2" and "shard 2 of 3" in r.json()["error"]["message"]
