"""The restoration-teacher experiment's two pieces: a run initialised from a teacher weight file starts from exactly
those weights (and an RLFN trains, exports and reloads through the camera pipeline); with ``teacher_input`` =
"degraded" the camera pool's soft targets are the teacher's SR of the very input the student sees, cached apart
from the clean-LR labels.

Tiny throughout: an RLFN(8 channels, 1 block) saved as a ``.pth`` here, the EDSR(8, 1) test teacher as an artifact,
five 64x64 synthetic images cut into one 4-frame clip each (h264 ultrafast only).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from tests.support.training import camera_workdir
from tests.training.test_camera_distill import _cfg as camera_cfg
from training.camera_train import teachers_id
from training.config import TrainConfig
from training.loop import build_state, load_teachers, prepare_data
from vsr.archs.rlfn import RLFN, rlfn_config_from_state
from vsr.artifact import load_artifact
from vsr.inference import to_tensor

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Five training images, the tiny teacher artifact, cwd there (the camera pool caches to ./.cache)."""
    camera_workdir(tmp_path)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _tiny_rlfn_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A randomly initialised RLFN(8, 1) saved as published weights are ({"params": state}); (state, config)."""
    torch.manual_seed(3)
    state = RLFN(scale=2, channels=8, mid_channels=8, esa_channels=4, blocks=1).state_dict()
    torch.save({"params": state}, path)
    return state, rlfn_config_from_state(state)


def _restore_cfg(root: Path, init: Path, config: dict[str, Any], **kw: Any) -> TrainConfig:
    """The restore recipe in small: arch rlfn from ``init``, no teacher (alpha 1), RGB, patch 16 (RLFN's attention
    branch needs >= 15 px)."""
    base = {"arch": "rlfn", "arch_config": dict(config), "init": str(init), "teachers": [], "alpha": 1.0}
    return camera_cfg(root, **(base | {"patch": 16, "ema": 0.9} | kw))


def test_init_from_a_teacher_file_is_exactly_its_weights(workdir: Path) -> None:
    state, config = _tiny_rlfn_file(workdir / "tiny_rlfn.pth")
    built = build_state(_restore_cfg(workdir, workdir / "tiny_rlfn.pth", config), CPU, None)
    assert built.ema is not None
    for model in (built.model, built.ema):
        got = model.state_dict()
        assert got.keys() == state.keys()
        assert all(torch.equal(got[k], state[k]) for k in state)
    with pytest.raises(ValueError, match="run's model is rlfn"):  # another network than the file's: refused
        build_state(_restore_cfg(workdir, workdir / "tiny_rlfn.pth", config | {"blocks": 2}), CPU, None)


def test_rlfn_fine_tune_runs_exports_and_reloads(workdir: Path) -> None:
    """The whole run on the camera pool: rlfn as the trained model, EMA, checkpoint, held-out validation, artifact."""
    from training.run import train

    _, config = _tiny_rlfn_file(workdir / "tiny_rlfn.pth")
    cfg = _restore_cfg(workdir, workdir / "tiny_rlfn.pth", config, steps=2, eval_every=2, ckpt_every=2, batch=4)
    summary = train(cfg, progress=False)
    assert np.isfinite(summary["val"]["holdout-h264-crf28"]["psnr_y"])
    model, meta = load_artifact(summary["artifact"])
    assert (meta.arch, meta.config, meta.input_space) == ("rlfn", config, "rgb")
    ck = torch.load(cfg.run_dir / "checkpoint.pt", weights_only=False)
    ema = RLFN(**config)
    ema.load_state_dict(ck["ema"])
    x = torch.rand(1, 3, 20, 24)
    with torch.no_grad():  # what was exported is the EMA, in RLFN's own [0, 1] contract
        torch.testing.assert_close(model(x), ema(x))
    assert json.loads((cfg.run_dir / "config.json").read_text())["init"] == str(workdir / "tiny_rlfn.pth")


def _plain_sr(teacher: nn.Module, lr: np.ndarray) -> np.ndarray:
    """The teacher's plain forward on one uint8 HWC frame (the reference, outside the pool's tiled path)."""
    with torch.no_grad():
        out = teacher(to_tensor(lr, device=CPU, dtype=torch.float32)).clamp(0, 1)
    return out[0].permute(1, 2, 0).numpy()


def _labels(cfg: TrainConfig) -> dict[bytes, np.ndarray]:
    """Soft target of every distinct training input of ``cfg``'s camera pool, by the input's bytes."""
    teachers, weights, descs = load_teachers(cfg, CPU)
    return {p.lr.tobytes(): p.soft for p in prepare_data(cfg, CPU, teachers, weights, descs).pairs}


def test_degraded_teacher_input_labels_what_the_student_sees(workdir: Path) -> None:
    teacher, _ = load_artifact(workdir / "teacher")
    cache = workdir / ".cache" / "camera" / "x2"
    clean = _labels(camera_cfg(workdir))
    clean_files = set(cache.glob("soft-*.npy"))
    degraded = _labels(camera_cfg(workdir, teacher_input="degraded"))
    assert clean.keys() == degraded.keys() and len(clean) == 2 * 4 * 4, "4 images x 4 frames, clean + degraded"
    lrs = {k: np.frombuffer(k, np.uint8).reshape(24, 24, 3) for k in clean}
    for k, soft in degraded.items():  # every input, clean or degraded, labelled by the teacher on that input
        np.testing.assert_allclose(soft.astype(np.float32), _plain_sr(teacher, lrs[k]), atol=2e-3)
    moved = [k for k in clean if np.abs(clean[k].astype(np.float32) - degraded[k]).mean() > 1e-3]
    assert len(moved) == 4 * 4, "the degraded inputs' labels change, the clean inputs' stay"
    assert all(np.abs(clean[k].astype(np.float32) - _plain_sr(teacher, lrs[k])).mean() > 1e-3 for k in moved)
    # the degraded labels are cached under keys of their own (the clean ones are reused), and hit next time
    files = set(cache.glob("soft-*.npy"))
    assert clean_files < files and len(files) == 2 * len(clean_files) == 2 * 4
    again = _labels(camera_cfg(workdir, teacher_input="degraded"))
    assert set(cache.glob("soft-*.npy")) == files
    assert all(np.array_equal(again[k], degraded[k]) for k in degraded)


def test_degraded_teacher_input_is_checked_at_parse_time(workdir: Path) -> None:
    with pytest.raises(ValueError, match="teacher_input must be one of"):
        camera_cfg(workdir, teacher_input="restored")
    with pytest.raises(ValueError, match="needs camera training and KD"):
        camera_cfg(workdir, teacher_input="degraded", camera={"enabled": False})
    with pytest.raises(ValueError, match="needs camera training and KD"):
        camera_cfg(workdir, teacher_input="degraded", alpha=1.0, teachers=[])


def test_an_artifact_teacher_is_named_by_its_weights() -> None:
    """A run's own artifact is retrained in place: its labels are cached by its weights, not its path; a published
    weight file keeps the name its caches were written under."""
    a, b = (RLFN(scale=2, channels=8, mid_channels=8, esa_channels=4, blocks=1) for _ in range(2))
    same_path = [{"source": "training/runs/x/artifact"}]
    assert teachers_id([a], [1.0], same_path) != teachers_id([b], [1.0], same_path)
    assert teachers_id([a], [1.0], [{"source": "RLFN_x2.pth"}]) == "RLFN_x2.pth:1.0"


def test_distill_refuses_a_wrong_init_file_or_teacher_input_up_front(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One error line (exit 2) before any data is prepared: a missing or mismatched init file, an unknown input."""
    from vsr_cli.main import main

    _, config = _tiny_rlfn_file(workdir / "tiny_rlfn.pth")
    cases = {
        "init weights not found": {"init": str(workdir / "missing.pth")},
        "the run's model is rlfn": {"arch_config": config | {"channels": 16}},
        "teacher_input must be one of": {"teacher_input": "restored"},
    }
    for message, change in cases.items():
        recipe = _restore_cfg(workdir, workdir / "tiny_rlfn.pth", config, val_sets=[]).to_dict() | change
        (workdir / "recipe.json").write_text(json.dumps(recipe))
        assert main(["distill", "--config", str(workdir / "recipe.json")]) == 2
        assert message in capsys.readouterr().err
    assert not (workdir / ".cache").exists()
