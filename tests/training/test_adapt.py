"""``vsr adapt`` on a tiny synthetic camera clip: the adapted model beats its (tiny) base on the held-back frames
and is written (a loadable artifact that scores what was reported, with a card); with no time to train nothing is
written and the exit status says so. The data side: the last part of a clip is held back, the teacher's labelling
stops when told and leaves every clip some frames."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.repository import tiny_model
from training.adapt import AdaptConfig, Reporter, adapt
from training.adapt_data import held_back_inputs, label, read_clip, score
from training.evaluate import model_upscaler
from vsr.artifact import load_artifact
from vsr_cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


def camera_clip(path: Path, *, frames: int = 24, h: int = 64, w: int = 96, seed: int = 0) -> Path:
    """A static camera: one textured scene, a little sensor noise per frame, near-lossless H.264 (the HR truth)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    scene = np.stack([(xx * 7 + yy * 3) % 256, (np.sin(xx / 3.0) * 60 + 128), (yy * 11) % 256], -1)
    scene = scene + rng.normal(0, 20, (h, w, 3))  # fine texture: something for a model to get right or wrong
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.codec_context.options = {"crf": "8"}
        for i in range(frames):
            img = np.clip(scene + rng.normal(0, 2, scene.shape), 0, 255).astype(np.uint8)
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, 10)
            c.mux(s.encode(f))
        c.mux(s.encode(None))
    return path


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Path]:
    clips = tmp_path / "clips"
    clips.mkdir()
    camera_clip(clips / "gate.mp4")
    (clips / "notes.txt").write_text("not a video")
    return clips, tiny_model(tmp_path / "base", seed=3, tail=0.1)


def test_adapt_beats_the_base_on_held_back_frames_and_writes_it(site: tuple[Path, Path], tmp_path: Path) -> None:
    clips, base = site
    out = tmp_path / "models" / "site-gate"
    lines = (tmp_path / "progress.jsonl").open("w")
    cfg = AdaptConfig(clips, out, base=str(base), minutes=10, steps=80, teacher=None, frames=16, batch=8, patch=16,
                      lr=3e-3)  # fmt: skip
    r = adapt(cfg, Reporter(lines))
    lines.close()
    assert r.written, r.why
    assert all(r.adapted[k] > r.base[k] + 0.2 for k in r.base), (r.base, r.adapted)  # it learned the site
    events = [json.loads(line)["event"] for line in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert events[0] == "read" and "base" in events and events[-1] == "done"  # JSON lines off a terminal

    model, meta = load_artifact(out)
    assert meta.name == "site-gate" and meta.scores["site"]["psnr_y"] == r.adapted
    # the written artifact scores what was reported, on the same held-back frames, outside the run's code path
    clip = read_clip(clips / "gate.mp4", frames=16, holdout=0.25, scale=2)
    assert len(clip.held) == 4 and len(clip.train) == 12
    again = score(model_upscaler(model, 2), held_back_inputs([clip], 2, 28), 2)
    assert again == pytest.approx(r.adapted["h264-crf28"], abs=0.01)
    card = (out / "MODEL_CARD.md").read_text()
    assert "site-gate" in card and f"{r.adapted['h264-crf28']:.2f}" in card


def test_no_time_to_train_writes_nothing(
    site: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clips, base = site
    out = tmp_path / "site-none"
    argv = ["adapt", "--clips", str(clips), "--out", str(out), "--base", str(base), "--minutes", "0"]
    assert main([*argv, "--teacher", "none", "--frames", "8"]) == 1
    assert not out.exists()
    printed = capsys.readouterr().out
    assert "h264-crf23:" in printed and "h264-crf28:" in printed and "not written" in printed
    assert main([*argv, "--teacher", str(tmp_path / "missing.pth")]) == 2  # a clear error, not a traceback


def test_labelling_stops_when_told_and_covers_every_clip(site: tuple[Path, Path], tmp_path: Path) -> None:
    clips, _ = site
    a = read_clip(clips / "gate.mp4", frames=12, holdout=0.25, scale=2)
    b = read_clip(camera_clip(tmp_path / "b.mp4", frames=10, seed=1), frames=12, holdout=0.5, scale=2)
    assert len(b.train) == 5 and len(b.held) == 5  # a short clip: every frame read, the last half held back
    calls: list[tuple[int, ...]] = []

    def teacher(lr: np.ndarray) -> np.ndarray:
        calls.append(lr.shape)
        return np.zeros((lr.shape[0] * 2, lr.shape[1] * 2, 3), np.float16)

    soft = label([a, b], teacher, 2, stop=lambda: len(calls) >= 5)
    assert [len(s) for s in soft] == [3, 2]  # round-robin: both clips got labels before the cut
    assert calls[0] == (32, 48, 3)  # the teacher sees the clean LR


def test_a_luma_base_adapts_to_a_luma_artifact(site: tuple[Path, Path], tmp_path: Path) -> None:
    """A luma student (one channel: x2-camera-fast's kind) trains on Y and is written as a luma artifact."""
    import torch

    from tests.support.env import export_tiny
    from vsr.archs.student import RepStudent

    clips, _ = site
    torch.manual_seed(0)
    base = export_tiny(RepStudent(scale=2, channels=8, depth=1, expand=0, colors=1), tmp_path / "luma-base")
    out = tmp_path / "luma-site"
    cfg = AdaptConfig(clips, out, base=str(base), minutes=10, steps=40, teacher=None, frames=12, batch=8, patch=16,
                      lr=3e-3)  # fmt: skip
    with (tmp_path / "log").open("w") as log:
        r = adapt(cfg, Reporter(log))
    assert r.written and all(r.gains[k] > 0.1 for k in r.gains), r.gains
    assert load_artifact(out)[1].input_space == "y"


def test_the_teacher_labels_the_training_frames(site: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.support.training import tiny_teacher

    clips, base = site
    teacher = tiny_teacher(tmp_path / "teacher")
    cfg = AdaptConfig(clips, tmp_path / "t-site", base=str(base), minutes=10, steps=5, teacher=str(teacher),
                      frames=12, batch=4, patch=16)  # fmt: skip
    with (tmp_path / "log").open("w") as log:
        r = adapt(cfg, Reporter(log))
    assert r.info["labelled"] == 9  # every training frame (12 read, 3 held back) within the time share
    assert r.info["pairs"] == 9 * 5  # each: clean + 4 CRFs, all carrying the frame's label
    events = [json.loads(line) for line in (tmp_path / "log").read_text().splitlines()]
    assert {"event": "labelled", "frames": 9, "of": 9} in events
