"""Default models by use: stills get x2, streams and video jobs get x2-camera, each changeable; a default install
loads x2, x4 and x2-camera (so ``model=x4`` is served, not 422)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from service.settings import DEFAULT_MODELS, Settings
from tests.support.env import export_tiny
from tests.support.live import ClientFactory
from tests.support.media import encode, rgb
from vsr.archs.student import RepStudent
from vsr.artifact import resolve


@pytest.fixture(scope="module")
def camera_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(9)
    return export_tiny(RepStudent(scale=2, channels=8, depth=1, expand=0), tmp_path_factory.mktemp("m") / "x2-camera")


def _models(tiny_artifact: dict[str, Any], camera: Path) -> list[str]:
    return [str(tiny_artifact["x2"]), str(tiny_artifact["x4"]), str(camera)]


def test_a_default_install_loads_four_bundled_models() -> None:
    assert Settings().models == list(DEFAULT_MODELS) == ["x2", "x4", "x2-camera", "x2-camera-fast", "x2-camera-lite"]
    for name in DEFAULT_MODELS:
        assert (resolve(name) / "model.safetensors").is_file()


def test_each_use_has_its_default(
    make_client: ClientFactory, tiny_artifact: dict[str, Any], camera_artifact: Path
) -> None:
    client = make_client(models=_models(tiny_artifact, camera_artifact))
    img = encode(rgb())
    r = client.post("/upscale", content=img, headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.headers["X-VSR-Model"] == "x2"
    r = client.post("/upscale?model=x4", content=img, headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.headers["X-VSR-Model"] == "x4"
    assert client.app.state.streams.default_model == "x2-camera"  # type: ignore[attr-defined]
    settings = client.app.state.settings  # type: ignore[attr-defined]
    assert settings.model_for("video", client.app.state.engine.names) == "x2-camera"  # type: ignore[attr-defined]


def test_defaults_are_settings_and_fall_back_to_the_first(tiny_artifact: dict[str, Any], camera_artifact: Path) -> None:
    loaded = ["x2", "x4", "x2-camera"]
    s = Settings(image_model="x4", stream_model="x2", video_model="x4")
    assert [s.model_for(u, loaded) for u in ("image", "stream", "video")] == ["x4", "x2", "x4"]
    plain = Settings()
    assert [plain.model_for(u, ["x4"]) for u in ("image", "stream", "video")] == ["x4"] * 3
    with pytest.raises(ValueError, match="VSR_STREAM_MODEL='x9' is not loaded"):
        Settings(stream_model="x9").model_for("stream", loaded)


def test_a_default_naming_an_unloaded_model_fails_the_start(
    make_client: ClientFactory, tiny_artifact: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="VSR_VIDEO_MODEL"):
        make_client(models=[str(tiny_artifact["x2"])], video_model="x2-camera")
