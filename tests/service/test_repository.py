"""The model repository (``VSR_MODEL_REPOSITORY``) with Triton's own client against the real service: index, load,
readiness, inference on a loaded model (pixels vs the artifact's plain forward), unload after work in flight,
broken artifacts and paths refused with nothing else harmed, API keys, the memory budget."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.checks import assert_error
from tests.support.live import Server, hold_worker, wait_until
from tests.support.media import rgb
from tests.support.repository import reference, tiny_model

tritonhttp = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    tiny_model(root / "site-a", seed=11)
    tiny_model(root / "site-b", seed=12, tail=0.3)
    return root


def triton(srv: Server, **kw: Any) -> Any:
    return tritonhttp.InferenceServerClient(url=srv.base.removeprefix("http://"), network_timeout=30, **kw)


def infer(client: Any, model: str, image: np.ndarray, headers: dict[str, str] | None = None) -> np.ndarray:
    inp = tritonhttp.InferInput("image", list(image.shape), "UINT8")
    inp.set_data_from_numpy(image, binary_data=True)
    out = tritonhttp.InferRequestedOutput("image", binary_data=True)
    return client.infer(model, [inp], outputs=[out], headers=headers).as_numpy("image")


def states(client: Any, **kw: Any) -> dict[str, str]:
    return {e["name"]: e["state"] for e in client.get_model_repository_index(**kw)}


def close(a: np.ndarray, b: np.ndarray) -> bool:
    """The service's fused kernel against the plain forward: equal up to rounding."""
    return a.shape == b.shape and int(np.abs(a.astype(int) - b.astype(int)).max()) <= 1


def test_load_infer_unload_with_tritonclient(live_server: Callable[..., Server], repo: Path) -> None:
    srv = live_server(model_repository=str(repo))
    client = triton(srv)
    index = states(client)
    assert index["x2"] == "READY"  # the tiny x2 the server started with
    assert index["site-a"] == index["site-b"] == "UNAVAILABLE"
    assert {"x4", "x2-camera"} <= set(index)  # bundled models are always in the index
    assert not client.is_model_ready("site-a")

    image = rgb(24, 32, seed=3)
    client.load_model("site-a")
    assert client.is_model_ready("site-a")
    assert states(client)["site-a"] == "READY"
    assert set(e["name"] for e in client.get_model_repository_index(query_params={})) >= {"site-a"}
    got = infer(client, "site-a", image)
    assert close(got, reference(repo / "site-a", image))
    assert not close(got, reference(repo / "site-b", image))  # the two test models really differ

    client.unload_model("site-a")
    assert not client.is_model_ready("site-a")
    with pytest.raises(InferenceServerException):
        infer(client, "site-a", image)
    assert close(infer(client, "x2", image), infer(client, "x2", image))  # the server's own model still serves
    r = srv.client.post("/v2/repository/index", json={"ready": True})
    assert [e["name"] for e in r.json()] == ["x2"]
    client.close()


def test_models_named_at_start_load_from_the_repository(live_server: Callable[..., Server], repo: Path) -> None:
    srv = live_server(model_repository=str(repo), models=["site-b"])
    client = triton(srv)
    assert client.is_model_ready("site-b") and not client.is_model_ready("site-a")
    image = rgb(16, 16, seed=5)
    assert close(infer(client, "site-b", image), reference(repo / "site-b", image))
    client.close()


def broken(repo: Path) -> dict[str, str]:
    """Broken artifacts in the repository; -> name: what is wrong."""
    tiny_model(repo / "no-weights", seed=1)
    (repo / "no-weights" / "model.safetensors").unlink()
    tiny_model(repo / "torn", seed=2)
    w = repo / "torn" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    tiny_model(repo / "bad-json", seed=3)
    (repo / "bad-json" / "model.json").write_text("{not json")
    tiny_model(repo / "misnamed", seed=4)
    meta = repo / "misnamed" / "model.json"
    meta.write_text(meta.read_text().replace('"name": "misnamed"', '"name": "other"'))
    tiny_model(repo / "wrong-shape", seed=5)
    meta = repo / "wrong-shape" / "model.json"
    meta.write_text(meta.read_text().replace('"channels": 8', '"channels": 16'))
    return {
        "no-weights": "model.safetensors",
        "torn": "",
        "bad-json": "invalid",
        "misnamed": "other",
        "wrong-shape": "",
    }


def test_broken_artifacts_are_refused_and_nothing_else_is_harmed(
    live_server: Callable[..., Server], repo: Path
) -> None:
    cases = broken(repo)
    srv = live_server(model_repository=str(repo))
    client = triton(srv)
    client.load_model("site-a")
    image = rgb(24, 32, seed=4)
    before = infer(client, "site-a", image)
    for name, says in cases.items():
        r = srv.client.post(f"/v2/repository/models/{name}/load", json={})
        err = assert_error(r, 400, "invalid_artifact")
        assert says in err["message"], err
        with pytest.raises(InferenceServerException):
            client.load_model(name)
        assert not client.is_model_ready(name)
    reasons = {e["name"]: e.get("reason", "") for e in client.get_model_repository_index()}
    assert all(reasons[n] and reasons[n] != "unloaded" for n in cases), reasons
    assert np.array_equal(infer(client, "site-a", image), before)  # the loaded models serve as before
    assert client.is_model_ready("x2")
    client.close()


def test_a_load_names_a_folder_never_a_path(live_server: Callable[..., Server], repo: Path, tmp_path: Path) -> None:
    outside = tiny_model(tmp_path / "outside", seed=7)
    (repo / "escape").symlink_to(outside, target_is_directory=True)
    (repo / "inside").symlink_to(repo / "site-a", target_is_directory=True)  # a link within the repository is fine
    srv = live_server(model_repository=str(repo))
    for raw in (".hidden", "escape", "..."):
        r = srv.client.post(f"/v2/repository/models/{raw}/load", json={})
        assert_error(r, 400, "invalid_model_name")
    # dot segments are normalised by the client and a decoded separator never matches the route: never a load
    for raw in ("..", "%2E%2E", "%2E%2E%2Frepo%2Fsite-a", "%2Fetc", "..%2Foutside"):
        r = srv.client.post(f"/v2/repository/models/{raw}/load", json={})
        assert r.status_code in (400, 404), r.text
    assert srv.app.state.engine.names == ["x2"]
    assert srv.client.post("/v2/repository/models/nope/load").status_code == 404
    index = {e["name"] for e in srv.client.post("/v2/repository/index").json()}
    assert "outside" not in index and "escape" in index
    assert srv.client.post("/v2/repository/models/inside/load", json={}).status_code == 400  # its json says site-a
    assert states(triton(srv))["escape"] == "UNAVAILABLE"


def test_names_resolve_inside_the_repository_only(repo: Path, tmp_path: Path) -> None:
    from service.repository import BadModelName, ModelRepository

    outside = tiny_model(tmp_path / "outside", seed=7)
    (repo / "escape").symlink_to(outside, target_is_directory=True)
    (repo / "up").symlink_to(repo.parent, target_is_directory=True)
    engine = type("E", (), {"names": [], "models": {}})()
    batcher = type("B", (), {"budget": None})()
    r = ModelRepository(repo, engine=engine, batcher=batcher, budget_bytes=1 << 30)  # type: ignore[arg-type]
    assert r.folder("site-a") == (repo / "site-a").resolve()
    assert r.folder("x2") is None  # a bundled name never means a repository folder
    for bad in ("..", ".", "../outside", str(outside), "/etc", "a/b", "escape", "up", "", "a\\b", "site-a\x00"):
        with pytest.raises(BadModelName):
            r.folder(bad)


def test_api_keys_apply(live_server: Callable[..., Server], repo: Path) -> None:
    srv = live_server(model_repository=str(repo), api_keys=["k1"])
    client = triton(srv)
    with pytest.raises(InferenceServerException, match="API key"):
        client.load_model("site-a")
    with pytest.raises(InferenceServerException, match="API key"):
        client.get_model_repository_index()
    key = {"X-API-Key": "k1"}
    client.load_model("site-a", headers=key)
    assert client.is_model_ready("site-a", headers=key)
    with pytest.raises(InferenceServerException, match="API key"):
        client.unload_model("site-a")
    client.unload_model("site-a", headers=key)
    client.close()


def test_unload_waits_for_work_in_flight(live_server: Callable[..., Server], repo: Path) -> None:
    srv = live_server(model_repository=str(repo))
    client = triton(srv)
    client.load_model("site-a")
    image = rgb(24, 32, seed=9)
    release = threading.Event()
    blocked = hold_worker(srv, until=release)
    result: dict[str, Any] = {}

    def run_infer() -> None:
        with triton(srv) as c:
            result["out"] = infer(c, "site-a", image)

    def run_unload() -> None:
        with triton(srv) as c:
            c.unload_model("site-a")
            result["unloaded"] = True

    t_infer = threading.Thread(target=run_infer)
    t_infer.start()
    assert blocked.wait(30)  # the frame is on the worker now
    t_unload = threading.Thread(target=run_unload)
    t_unload.start()
    assert wait_until(lambda: states(client).get("site-a") == "UNLOADING", 10)
    assert "unloaded" not in result  # it waits for the frame
    with pytest.raises(InferenceServerException):
        infer(client, "site-a", image)  # no new work for a model being unloaded
    release.set()
    t_infer.join(30)
    t_unload.join(30)
    assert close(result["out"], reference(repo / "site-a", image))  # the frame in flight finished on its model
    assert result.get("unloaded") and not client.is_model_ready("site-a")
    client.close()


def test_loaded_models_count_against_the_memory_budget(live_server: Callable[..., Server], repo: Path) -> None:
    tiny_model(repo / "big", seed=8, channels=64, depth=8)  # ~1.3 MiB of fp32 weights
    srv = live_server(model_repository=str(repo), memory_budget_mb=1)
    r = srv.client.post("/v2/repository/models/big/load", json={})
    assert_error(r, 409, "over_memory_budget")
    client = triton(srv)
    client.load_model("site-a")  # a small one fits
    assert srv.app.state.batcher.budget < 1 << 20  # frames get what the models leave
    assert not client.is_model_ready("big")
    client.close()


def test_unload_refuses_a_model_in_use(live_server: Callable[..., Server], repo: Path) -> None:
    srv = live_server(model_repository=str(repo))
    r = srv.client.post("/v2/repository/models/x2/unload", json={})
    assert_error(r, 409, "model_in_use")  # the service's last model (and the default of new streams)
    r = srv.client.post("/v2/repository/models/site-a/load", json={"parameters": {"config": "{}"}})
    assert_error(r, 400, "unsupported_parameters")


def test_models_named_at_start_resolve_to_repository_folders(repo: Path) -> None:
    from service.repository import BadModelName, repository_entry
    from vsr.artifact import ArtifactError

    assert repository_entry(repo, "site-a") == str(repo / "site-a")
    assert repository_entry(repo, "x2") == "x2"  # a bundled name stays the bundled model
    assert repository_entry(repo, "/some/path") == "/some/path"  # a path is resolved by the engine as before
    assert repository_entry(None, "site-a") == "site-a"
    meta = repo / "site-b" / "model.json"
    meta.write_text(meta.read_text().replace('"name": "site-b"', '"name": "other"'))
    with pytest.raises(ArtifactError, match="other"):
        repository_entry(repo, "site-b")  # served under its folder's name or not at all
    (repo / "out").symlink_to(repo.parent, target_is_directory=True)
    with pytest.raises(BadModelName):
        repository_entry(repo, "out")
