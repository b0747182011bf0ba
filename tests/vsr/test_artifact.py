"""The artifact contract: export -> load gives the same outputs; bad metadata or weights raise ArtifactError."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from tests.support.env import export_tiny
from vsr.archs import count_parameters
from vsr.archs.edsr import EDSR
from vsr.archs.student import RepStudent
from vsr.artifact import META_NAME, WEIGHTS_NAME, ArtifactError, ArtifactMeta, load_artifact, resolve

pytestmark = pytest.mark.usefixtures("one_thread")


def _student(seed: int = 0) -> RepStudent:
    torch.manual_seed(seed)
    m = RepStudent(scale=2, channels=8, depth=2, expand=2)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval()


def _export(model: torch.nn.Module, out: Path, arch: str = "rep_student") -> Path:
    return export_tiny(
        model, out, arch=arch, name="tiny", training={"steps": 3}, data={"train": ["x"]}, scores={"val": 1.0}
    )


def test_round_trip_student(tmp_path: Path) -> None:
    model = _student()
    folder = _export(model, tmp_path / "a")
    loaded, meta = load_artifact(folder)
    x = torch.rand(1, 3, 10, 12)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=1e-5)
    assert not loaded.training
    assert meta.arch == "rep_student" and meta.scale == 2 and meta.name == "tiny"
    assert meta.config["fused"] is True  # inference layout: re-parameterised branches collapsed
    assert meta.parameters == count_parameters(loaded) < count_parameters(model)
    assert meta.training == {"steps": 3} and meta.scores == {"val": 1.0} and meta.created
    # the same folder resolves through its json or safetensors path too
    assert resolve(folder / META_NAME) == folder == resolve(folder / WEIGHTS_NAME)
    # loading twice is deterministic
    again, _ = load_artifact(folder)
    with torch.no_grad():
        assert torch.equal(again(x), loaded(x))


def test_round_trip_edsr(tmp_path: Path) -> None:
    model = EDSR(scale=3, channels=8, blocks=1).eval()
    folder = export_tiny(model, tmp_path / "e", arch="edsr", config={"scale": 3, "channels": 8, "blocks": 1})
    loaded, meta = load_artifact(folder)
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert meta.scale == 3 and meta.arch == "edsr"


def test_metadata_is_valid_json_schema(tmp_path: Path) -> None:
    folder = _export(_student(), tmp_path / "a")
    raw = json.loads((folder / META_NAME).read_text())
    meta = ArtifactMeta.model_validate(raw)
    assert set(raw) >= {"arch", "config", "scale", "parameters", "created", "git_commit", "data", "training", "scores"}
    assert meta.format_version == 1


def _corrupt(folder: Path, **changes) -> None:
    raw = json.loads((folder / META_NAME).read_text())
    raw.update(changes)
    (folder / META_NAME).write_text(json.dumps(raw))


@pytest.mark.parametrize(
    "breakage",
    [
        lambda f: (f / META_NAME).write_text("{not json"),
        lambda f: (f / META_NAME).unlink(),
        lambda f: (f / WEIGHTS_NAME).unlink(),
        lambda f: _corrupt(f, arch="no_such_arch"),
        lambda f: _corrupt(f, scale=0),
        lambda f: _corrupt(f, format_version=99),
        lambda f: _corrupt(f, parameters=123),
        lambda f: _corrupt(f, scale=4),  # disagrees with config (scale 2)
        lambda f: _corrupt(f, config={"scale": 2, "channels": 16, "depth": 2, "fused": True}),
    ],
    ids=["bad-json", "no-json", "no-weights", "arch", "scale-range", "future-format", "param-count", "scale", "config"],
)
def test_broken_artifacts_raise(tmp_path: Path, breakage) -> None:
    folder = _export(_student(), tmp_path / "a")
    breakage(folder)
    with pytest.raises(ArtifactError):
        load_artifact(folder)


def test_wrong_shape_weights_raise(tmp_path: Path) -> None:
    folder = _export(_student(), tmp_path / "a")
    other = RepStudent(scale=2, channels=6, depth=2, fused=True)
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(folder / WEIGHTS_NAME))
    with pytest.raises(ArtifactError, match="do not match"):
        load_artifact(folder)


def test_missing_artifact_names_bundled(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="no artifact"):
        load_artifact(tmp_path / "nowhere")
