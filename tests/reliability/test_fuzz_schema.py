"""Fuzzing against our own OpenAPI schema (schemathesis) on the real app over a real loopback socket.

Every operation in ``/openapi.json`` gets generated requests — schema-conforming (positive) and schema-violating
(negative) — until at least :data:`MIN_REQUESTS` were sent in all. Every response must be a status the schema
documents for that operation, every 4xx/5xx must carry the JSON error envelope, no response may be a 5xx, and the
inference worker must be alive and serving afterwards.

DNS is never used: the stream URL policy gets a resolver that only accepts numeric hosts (a generated public IP is
accepted and its reader fails to connect, which is the documented ``backoff`` path). The totals are printed
(``-s``) and written to ``$VSR_RELIABILITY_DIR/fuzz.json`` when set (docs/reliability.md quotes them).
"""

from __future__ import annotations

import socket
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from service.urlpolicy import UrlPolicy, parse_cidrs
from tests.support.checks import error_body_ok, report
from tests.support.live import Server
from tests.support.media import png

MIN_REQUESTS = 1000
pytestmark = pytest.mark.slow  # ~30 s: `pytest -m 'not slow'` leaves it out
# Per operation and mode. Operations with bodies or many parameters get more; ~20 operations x 2 modes.
EXAMPLES = {"default": 40, "body": 100}


def numeric_only_resolver(host: str, port: Any, *args: Any, **kwargs: Any) -> list:
    """``getaddrinfo`` that never touches DNS: numeric hosts only, anything else fails to resolve."""
    return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST | socket.AI_NUMERICSERV)


def documented(spec: dict[str, Any], path: str, method: str) -> set[int]:
    responses = spec["paths"][path][method.lower()].get("responses", {})
    return {int(s) for s in responses if s.isdigit()}


def fuzz_operation(
    op: Any,
    mode: GenerationMode,
    n: int,
    base: str,
    session: requests.Session,
    allowed: set[int],
    statuses: Counter[str],
    failures: list[str],
) -> int:
    """Send up to ``n`` generated requests for one operation; record statuses and bad responses."""
    sent = 0

    @settings(
        max_examples=n,
        deadline=None,
        database=None,
        derandomize=True,  # the same requests every run (CI is reproducible; a failure replays)
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        nonlocal sent
        r = case.call(base_url=base, session=session, timeout=15)
        sent += 1
        statuses[f"{op.method.upper()} {op.path} {r.status_code}"] += 1
        problems = []
        if r.status_code >= 500:
            problems.append("server error")
        if r.status_code not in allowed:
            problems.append(f"undocumented status (documented: {sorted(allowed)})")
        if r.status_code >= 400 and not error_body_ok(r):
            problems.append("error without the JSON envelope")
        if problems:
            failures.append(f"{op.label} -> {r.status_code} {problems}: {r.text[:200]}\n  {case!r}"[:800])

    run()
    return sent


def start_fuzz_server(live_server: Callable[..., Server], **overrides: Any) -> Server:
    srv = live_server(
        max_streams=2,
        stream_allow_cidrs=[],  # generated hosts are never our loopback
        stream_open_timeout_s=0.5,
        max_upload_bytes=64 * 1024,
        video_max_bytes=64 * 1024,
        request_timeout_s=5.0,
        **overrides,
    )
    srv.app.state.streams.policy = UrlPolicy(allow_cidrs=parse_cidrs([]), resolver=numeric_only_resolver)
    return srv


def fuzz_all(
    srv: Server, examples: dict[str, int], modes: tuple[GenerationMode, ...]
) -> tuple[int, Counter[str], list[str], int]:
    """Fuzz every operation of the live schema; returns (requests sent, statuses, bad responses, operations)."""
    spec = srv.client.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(spec)
    session = requests.Session()
    statuses: Counter[str] = Counter()
    failures: list[str] = []
    sent = 0
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 10, [op.label for op in operations]
    for op in operations:
        allowed = documented(spec, op.path, op.method)
        n = examples["body"] if op.body or len(op.query) > 1 else examples["default"]
        for mode in modes:
            try:
                sent += fuzz_operation(op, mode, n, srv.base, session, allowed, statuses, failures)
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, op.label  # nothing to violate (no parameters)
    return sent, statuses, failures, len(operations)


def test_fuzz_every_operation(live_server: Callable[..., Server]) -> None:
    srv = start_fuzz_server(live_server)
    sent, statuses, failures, n_ops = fuzz_all(srv, EXAMPLES, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE))
    by_status = Counter(k.rsplit(" ", 1)[1] for k in statuses.elements())
    summary = {"requests": sent, "operations": n_ops, "by_status": dict(sorted(by_status.items()))}
    report("fuzz", summary | {"by_operation_status": dict(sorted(statuses.items()))})
    assert not failures, f"{len(failures)} bad responses:\n" + "\n".join(failures[:15])
    assert sent >= MIN_REQUESTS
    # afterwards: the worker is alive and serves a real image; nothing is stuck in the queue
    assert srv.app.state.batcher.alive
    assert srv.app.state.batcher.qsize() == 0
    r = srv.client.post("/upscale", content=png(), headers={"content-type": "image/png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"


def test_fuzz_with_api_keys_and_private_metrics(live_server: Callable[..., Server]) -> None:
    """Keys configured, none sent: every keyed operation must answer a *documented* 401 with the envelope."""
    srv = start_fuzz_server(live_server, api_keys="fuzz-key", metrics_public=False)
    sent, statuses, failures, _ = fuzz_all(srv, {"default": 5, "body": 10}, (GenerationMode.POSITIVE,))
    assert not failures, f"{len(failures)} bad responses:\n" + "\n".join(failures[:15])
    by_status = Counter(k.rsplit(" ", 1)[1] for k in statuses.elements())
    assert by_status["401"] >= sent - 20, by_status  # all but the probes / server metadata
    report("fuzz_keys", {"requests": sent, "by_status": dict(sorted(by_status.items()))})
