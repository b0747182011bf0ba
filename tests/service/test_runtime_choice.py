"""The runtime chosen at load serves every route and is reported by ``GET /v2/models/{name}``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.live import ClientFactory
from tests.support.media import encode, rgb

pytest.importorskip("openvino")


def upscale(client: object, img: np.ndarray) -> np.ndarray:
    r = client.post("/upscale", content=encode(img), headers={"Content-Type": "image/png"})  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    return np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))


def test_models_report_runtime_and_routes_use_it(make_client: ClientFactory, tmp_path: Path) -> None:
    on_ov = make_client(runtime="openvino", ov_cache_dir=str(tmp_path / "ov"))
    on_torch = make_client(runtime="torch")
    meta = on_ov.get("/v2/models/x2").json()
    assert (meta["runtime"], meta["precision"], meta["dtype"]) == ("openvino", "fp32", "fp32")
    assert meta["ms_per_frame"] > 0 and set(meta["candidates_ms"]) == {"openvino/fp32"} and meta["probe"] == [96, 160]
    assert on_torch.get("/v2/models/x2").json()["runtime"] == "torch"
    assert any((tmp_path / "ov").iterdir())  # compiled through the configured cache folder
    img = rgb(seed=3)
    a, b = upscale(on_ov, img), upscale(on_torch, img)
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= 1
    metrics = on_ov.get("/metrics").text
    assert 'runtime="openvino"' in metrics and "vsr_model_info" in metrics
