"""The service as a whole: health/metadata, metrics, batching under concurrency, overload, deadlines, failures."""

from __future__ import annotations

import argparse
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from service.batcher import BatcherClosed, QueueFull
from service.engine import Engine
from service.main import describe_errors, load_settings
from service.settings import Settings
from tests.support.checks import assert_error
from tests.support.live import ClientFactory, hold_worker, sample, wait_ready, wait_until
from tests.support.media import encode, rgb
from tests.support.reference import assert_model_output
from vsr.errors import UsageError

PNG = {"content-type": "image/png"}
TIMEOUT = 10.0


def post(client: Any, img: np.ndarray) -> Any:
    return client.post("/upscale", content=encode(img), headers=PNG)


def concurrently(client: Any, images: list[np.ndarray]) -> list[Any]:
    """POST every image at once; every request must finish (no stuck requests)."""
    with ThreadPoolExecutor(len(images)) as pool:
        futures = [pool.submit(post, client, img) for img in images]
        return [f.result(timeout=TIMEOUT) for f in futures]


# ---- health and metadata ---------------------------------------------------------------------------------------


def test_not_ready_until_warm(make_client: ClientFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    warmup = Engine.warmup

    def slow_warmup(self: Engine) -> None:
        release.wait(TIMEOUT)
        warmup(self)

    monkeypatch.setattr(Engine, "warmup", slow_warmup)
    client = make_client(wait_ready=False)
    assert client.get("/v2/health/live").json() == {"live": True}
    r = client.get("/v2/health/ready")
    assert_error(r, 503, "not_ready")
    assert r.headers["retry-after"] == "1"
    assert sample(client, "vsr_ready") == 0
    release.set()
    wait_ready(client)
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert sample(client, "vsr_ready") == 1


def test_model_metadata(make_client: ClientFactory, tiny_artifact: dict[str, Any]) -> None:
    client = make_client(models=f"{tiny_artifact['x2']},{tiny_artifact['x4']}")
    meta = client.get("/v2/models/x4").json()
    assert meta["name"] == "x4" and meta["scale"] == 4 and meta["arch"] == "rep_student"
    assert meta["dtype"] == "fp32" and meta["device"] == "cpu" and meta["parameters"] > 0 and meta["ready"]
    assert "scores" in meta and meta["inputs"][0]["datatype"] == "UINT8"
    assert [m["name"] for m in client.get("/v2/models").json()["models"]] == ["x2", "x4"]
    assert client.get("/v2/models/x4/ready").json() == {"ready": True}
    assert_error(client.get("/v2/models/x8"), 404, "model_not_found")
    out = client.post("/upscale?model=x4", content=encode(rgb()), headers=PNG)
    assert out.status_code == 200 and out.headers["x-vsr-scale"] == "4"


def test_framework_errors_use_the_envelope(make_client: ClientFactory) -> None:
    client = make_client()
    assert_error(client.get("/nope"), 404)
    assert_error(client.get("/upscale"), 405)


def test_docs_toggle(make_client: ClientFactory) -> None:
    spec = make_client().get("/openapi.json").json()
    assert "/upscale" in spec["paths"] and "/v2/models/{name}" in spec["paths"]
    body = spec["paths"]["/upscale"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "image/png" in body
    assert make_client(docs_public=False).get("/openapi.json").status_code == 404


# ---- metrics ---------------------------------------------------------------------------------------------------


def test_metrics_are_present_and_move(make_client: ClientFactory) -> None:
    client = make_client()
    text = client.get("/metrics").text
    for name in (
        "vsr_http_requests_total",
        "vsr_http_request_duration_seconds_bucket",
        "vsr_queue_wait_seconds_bucket",
        "vsr_queue_depth",
        "vsr_batch_size_bucket",
        "vsr_batch_compute_seconds_bucket",
        "vsr_rejected_total",
        "vsr_model_info",
        "vsr_ready",
    ):
        assert name in text, name
    before = sample(client, "vsr_frames_total", {"source": "upload"})
    assert post(client, rgb()).status_code == 200
    client.get("/v2/models/x2")
    assert sample(client, "vsr_frames_total", {"source": "upload"}) == before + 1
    labels = {"route": "/upscale", "method": "POST", "status": "200"}
    assert sample(client, "vsr_http_requests_total", labels) == 1
    assert (
        sample(client, "vsr_http_requests_total", {"route": "/v2/models/{name}", "method": "GET", "status": "200"}) == 1
    )
    assert sample(client, "vsr_http_request_duration_seconds_count", {"route": "/upscale"}) == 1
    assert sample(client, "vsr_batch_compute_seconds_count") >= 1
    assert 'route="/v2/models/x2"' not in client.get("/metrics").text  # templates, never raw URLs


def test_concurrent_requests_form_batches(make_client: ClientFactory) -> None:
    client = make_client(max_batch_size=8, max_batch_delay_ms=20)
    release = threading.Event()
    blocked = hold_worker(client, until=release)
    first = threading.Thread(target=post, args=(client, rgb(seed=99)))
    first.start()
    assert blocked.wait(TIMEOUT)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(post, client, rgb(seed=i)) for i in range(6)]
        deadline = time.monotonic() + TIMEOUT
        while client.app.state.batcher.qsize() < 6 and time.monotonic() < deadline:
            time.sleep(0.005)
        release.set()
        assert all(f.result(TIMEOUT).status_code == 200 for f in futures)
    first.join(TIMEOUT)
    count, total = sample(client, "vsr_batch_size_count"), sample(client, "vsr_batch_size_sum")
    assert total == 7 and count < total  # average batch size > 1
    assert sample(client, "vsr_batch_size_bucket", {"le": "1.0"}) < count


def test_batched_http_outputs_equal_unbatched(make_client: ClientFactory) -> None:
    client = make_client(max_batch_size=4, max_batch_delay_ms=200)
    images = [rgb(seed=i) for i in range(4)]
    batched = [r.content for r in concurrently(client, images)]
    assert sample(client, "vsr_batch_size_count") < 4
    single = make_client(max_batch_size=1)
    assert [post(single, img).content for img in images] == batched


# ---- overload, deadlines, failures -----------------------------------------------------------------------------


def test_overload_gives_503_and_nothing_gets_stuck(make_client: ClientFactory) -> None:
    client = make_client(queue_limit=2, max_batch_size=1, max_batch_delay_ms=0)
    release = threading.Event()
    blocked = hold_worker(client, until=release)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(post, client, rgb(seed=0))
        assert blocked.wait(TIMEOUT)
        others = [pool.submit(post, client, rgb(seed=i)) for i in range(1, 8)]
        deadline = time.monotonic() + TIMEOUT
        while sample(client, "vsr_rejected_total", {"reason": "queue_full"}) < 5 and time.monotonic() < deadline:
            time.sleep(0.005)
        release.set()
        responses = [first.result(TIMEOUT)] + [f.result(TIMEOUT) for f in others]
    codes = sorted(r.status_code for r in responses)
    assert codes == [200, 200, 200, 503, 503, 503, 503, 503]
    for r in responses:
        if r.status_code == 503:
            assert_error(r, 503, "overloaded")
            assert int(r.headers["retry-after"]) >= 1
    assert client.app.state.batcher.qsize() == 0
    assert post(client, rgb()).status_code == 200


def test_deadlines_give_504_and_the_service_recovers(make_client: ClientFactory) -> None:
    client = make_client(request_timeout_s=0.3, max_batch_size=1, max_batch_delay_ms=0)
    release = threading.Event()
    blocked = hold_worker(client, until=release)
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(post, client, rgb(seed=0))
        assert blocked.wait(TIMEOUT)
        queued = [pool.submit(post, client, rgb(seed=i)) for i in (1, 2)]
        batcher = client.app.state.batcher
        assert wait_until(lambda: batcher.qsize() == 2, TIMEOUT)  # both queued behind the held batch
        time.sleep(0.5)  # every deadline (0.3 s from its request's start) passes while the worker is held
        release.set()
        responses = [running.result(TIMEOUT)] + [f.result(TIMEOUT) for f in queued]
    for r in responses:
        assert_error(r, 504, "deadline_exceeded")
    assert sample(client, "vsr_rejected_total", {"reason": "deadline"}) == 3
    # recovered: a request is served again (retried: on a loaded machine one may miss its 0.3 s deadline)
    assert wait_until(lambda: post(client, rgb()).status_code == 200, 30)


def test_a_failing_batch_fails_only_its_requests(make_client: ClientFactory) -> None:
    client = make_client(max_batch_size=8, max_batch_delay_ms=100)

    def fail_tall_frames(model: str, frames: np.ndarray) -> None:
        if frames.shape[1] == 30:
            raise RuntimeError("simulated fault")

    client.app.state.engine.fault_hook = fail_tall_frames
    images = [rgb(30, 32, seed=i) for i in range(2)] + [rgb(24, 32, seed=i) for i in range(2)]
    responses = concurrently(client, images)
    for r in responses[:2]:
        assert_error(r, 500, "inference_failed")
    assert [r.status_code for r in responses[2:]] == [200, 200]
    assert sample(client, "vsr_batch_errors_total", {"model": "x2"}) == 1
    assert post(client, rgb()).status_code == 200  # the worker keeps serving


# ---- settings and startup --------------------------------------------------------------------------------------


def test_settings_from_env_and_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSR_MODELS", "x2, x4")
    monkeypatch.setenv("VSR_PORT", "9000")
    monkeypatch.setenv("VSR_API_KEYS", "a,b")
    s = load_settings(argparse.Namespace(host=None, port=None, models=None, device=None))
    assert s.models == ["x2", "x4"] and s.port == 9000 and s.api_keys == ["a", "b"]
    s = load_settings(argparse.Namespace(host="0.0.0.0", port=8001, models="x4", device="cpu"))
    assert (s.host, s.port, s.models, str(s.torch_device())) == ("0.0.0.0", 8001, ["x4"], "cpu")
    assert "api_keys" not in repr(s)  # keys stay out of logs


def test_invalid_settings_are_explained_without_values(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as e:
        Settings(port=70000, device="gpu", api_keys="secret", max_batch_size=0)
    text = describe_errors(e.value)
    assert "VSR_PORT" in text and "VSR_DEVICE" in text and "VSR_MAX_BATCH_SIZE" in text and "secret" not in text
    with pytest.raises(ValidationError, match="tile_overlap"):
        Settings(tile_size=16, tile_overlap=8)
    with pytest.raises(ValidationError, match="at least one model"):
        Settings(models=" , ")


def test_shutdown_finishes_queued_work_with_the_models_output(
    make_client: ClientFactory, tiny_artifact: dict[str, Any]
) -> None:
    """The lifespan's shutdown drains: work queued behind a busy worker when the app stops still gets the model's
    output (not BatcherClosed), and only then does the worker exit."""
    client = make_client()
    batcher, model = client.app.state.batcher, client.app.state.engine.default_model
    release = threading.Event()
    blocked = hold_worker(client, until=release)
    lr = rgb(24, 32, seed=3)
    futures = [batcher.submit(lr, model=model, source="t") for _ in range(3)]
    assert blocked.wait(TIMEOUT)  # the first frame is in the worker, the others queued behind it
    closer = threading.Thread(target=client.__exit__, args=(None, None, None), name="test-shutdown")
    closer.start()

    def closing() -> bool:  # the batcher refuses new work once shutdown has begun (a frame taken before is kept)
        try:
            futures.append(batcher.submit(lr, model=model, source="t"))
        except BatcherClosed:
            return True
        except QueueFull:
            pass
        return False

    try:
        assert wait_until(closing, TIMEOUT), "shutdown never reached the batcher"
    finally:
        release.set()
    closer.join(TIMEOUT)
    assert not closer.is_alive() and not batcher.alive
    for f in futures:
        assert_model_output(f.result(0), lr, tiny_artifact["x2"])


def test_health_reports_a_dead_worker(make_client: ClientFactory) -> None:
    client = make_client()
    client.app.state.batcher.close(drain=True, timeout=TIMEOUT)
    assert_error(client.get("/v2/health/live"), 503, "worker_dead")
    assert_error(client.get("/v2/health/ready"), 503, "worker_dead")
    assert_error(post(client, rgb()), 503, "shutting_down")


def test_serve_refuses_bad_settings_and_missing_models(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.main import cmd_serve

    args = argparse.Namespace(host=None, port=None, models="/nonexistent/model", device=None)
    with pytest.raises(UsageError, match="cannot serve model"):  # before binding any port; the CLI prints it
        cmd_serve(args)
    monkeypatch.setenv("VSR_MAX_BATCH_SIZE", "0")
    with pytest.raises(UsageError, match="VSR_MAX_BATCH_SIZE"):
        cmd_serve(argparse.Namespace(host=None, port=None, models=None, device=None))
