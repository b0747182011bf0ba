"""The CLI's bad inputs: each ends in exactly one ``error: ...`` line on stderr and exit status 2, never a traceback;
folders go on past unreadable files (exit 1, listed at the end); OUT never overwrites its input; ``--tile`` reaches
the video path; ``--version``; every flag has help text."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.env import REPO
from tests.support.media import synthetic_image, write_images
from vsr_cli.main import _parser, main

pytestmark = pytest.mark.usefixtures("one_thread")


def make_video(path: Path, frames: int = 4, *, audio_only: bool = False) -> Path:
    import av

    with av.open(str(path), "w") as c:
        if audio_only:
            s = c.add_stream("aac", rate=16000)
            for i in range(8):
                f = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
                f.sample_rate, f.pts = 16000, i * 1024
                for pkt in s.encode(f):
                    c.mux(pkt)
        else:
            s = c.add_stream("libx264", rate=10)
            s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
            rng = np.random.default_rng(0)
            for _ in range(frames):
                for pkt in s.encode(av.VideoFrame.from_ndarray(synthetic_image(rng, 24, 32), format="rgb24")):
                    c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    return path


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, err
    return errors[0]


Case = Callable[[Path, str], list[str]]
CASES: dict[str, tuple[Case, str]] = {
    "garbage video": (
        lambda d, m: ["upscale", str(_write(d / "g.mp4", b"not a video" * 50)), str(d / "o.mp4"), "--model", m],
        "not a readable video",
    ),
    "audio-only video": (
        lambda d, m: ["upscale", str(make_video(d / "a.mp4", audio_only=True)), str(d / "o.mp4"), "--model", m],
        "no video stream",
    ),
    "unknown device": (
        lambda d, m: ["upscale", str(write_images(d / "in", 1)[0]), str(d / "o.png"), "--model", m, "--device", "foo"],
        "unknown device 'foo'",
    ),
    "unknown model (evaluate)": (lambda d, m: ["evaluate", "--model", "nope"], "no artifact at 'nope'"),
    "unknown model (export)": (
        lambda d, m: ["export", "--model", "nope", "--onnx", str(d / "x.onnx")],
        "no artifact at 'nope'",
    ),
    "missing teacher weights (evaluate)": (
        lambda d, m: ["evaluate", "--model", str(d / "t.pth")],
        "file not found",
    ),
    "missing checkpoint": (lambda d, m: ["export", "--checkpoint", str(d / "missing.pt")], "file not found"),
    "not a checkpoint": (
        lambda d, m: ["export", "--checkpoint", str(_write(d / "c.pt", b"junk"))],
        "cannot read",
    ),
    "missing data folder": (
        lambda d, m: ["evaluate", "--model", m, "--data", str(d / "nodata")],
        "data folder not found",
    ),
    "distill without --teacher": (
        lambda d, m: ["distill", "--steps", "1", "--out-dir", str(d)],
        "distill needs --teacher",
    ),
    "missing training data": (
        lambda d, m: ["distill", "--teacher", m, "--data-root", str(d / "none"), "--out-dir", str(d)],
        "data folder not found",
    ),
    "bad flag value": (lambda d, m: ["upscale", "a.png", "b.png", "--tile", "x"], "invalid int value"),
    "unknown command": (lambda d, m: ["bogus"], "invalid choice"),
}


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_error_line_and_exit_2(
    case: str, tmp_path: Path, tiny_artifact: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    make, message = CASES[case]
    argv = make(tmp_path, str(tiny_artifact["x2"]))
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code  # type: ignore[assignment]
    assert code == 2
    assert message in one_error_line(capsys)


def test_serve_refuses_cuda_without_a_gpu_and_unparseable_streams(
    tiny_artifact: dict[str, Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    if not torch.cuda.is_available():
        assert main(["serve", "--device", "cuda", "--models", str(tiny_artifact["x2"])]) == 2
        assert "VSR_DEVICE" in one_error_line(capsys)
    monkeypatch.setenv("VSR_STREAMS", "not json")
    assert main(["serve", "--models", str(tiny_artifact["x2"])]) == 2
    line = one_error_line(capsys)
    assert "VSR_STREAMS" in line and "not json" not in line  # named, value not echoed


def test_a_real_process_prints_no_traceback(tmp_path: Path) -> None:
    bad = _write(tmp_path / "g.mp4", b"not a video" * 50)
    r = subprocess.run(
        [sys.executable, "-m", "vsr_cli", "upscale", str(bad), str(tmp_path / "o.mp4")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert [line for line in r.stderr.splitlines() if line.startswith("error:")], r.stderr


def test_folder_goes_on_past_bad_files_and_handles_videos(
    tmp_path: Path, tiny_artifact: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    write_images(src, 2)
    _write(src / "broken.png", b"junk")
    make_video(src / "clip.mp4")
    code = main(["upscale", str(src), str(tmp_path / "out"), "--model", str(tiny_artifact["x2"])])
    err = capsys.readouterr().err
    assert code == 1 and "error: 1 of 4 files failed" in err and "broken.png" in err, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["clip.mp4", "img0.png", "img1.png"]
    assert Image.open(tmp_path / "out" / "img0.png").size == (64, 48)
    import av

    with av.open(str(tmp_path / "out" / "clip.mp4")) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (64, 48)


def test_refuses_to_overwrite_the_input(
    tmp_path: Path, tiny_artifact: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (img,) = write_images(tmp_path / "in", 1)
    before = img.read_bytes()
    model = ["--model", str(tiny_artifact["x2"])]
    assert main(["upscale", str(img), str(img), *model]) == 2
    assert "overwrite the input" in one_error_line(capsys)
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "in"), *model]) == 2
    assert "overwrite the input" in one_error_line(capsys)
    video = make_video(tmp_path / "v.mp4")
    assert main(["upscale", str(video), str(tmp_path / "." / "v.mp4"), *model]) == 2
    assert "overwrite the input" in one_error_line(capsys)
    (tmp_path / "hard.png").hardlink_to(img)  # same inode under another name: was overwritten, rc 0
    assert main(["upscale", str(img), str(tmp_path / "hard.png"), *model]) == 2
    assert "overwrite the input" in one_error_line(capsys)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / img.name).hardlink_to(img)  # a folder whose OUT holds a hard link to one input
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "out"), *model]) == 2
    assert "overwrite the input" in one_error_line(capsys)
    (tmp_path / "hard.mp4").hardlink_to(video)
    assert main(["upscale", str(video), str(tmp_path / "hard.mp4"), *model]) == 2
    assert "overwrite the input" in one_error_line(capsys)
    assert img.read_bytes() == before


def test_fifos_are_refused_not_waited_on(
    tmp_path: Path, tiny_artifact: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A FIFO as IN blocked the read forever (a folder already skipped them); as OUT it would block the write."""
    fifo = tmp_path / "f.png"
    os.mkfifo(fifo)
    (img,) = write_images(tmp_path / "in", 1)
    model = ["--model", str(tiny_artifact["x2"])]
    for argv, message in (
        (["upscale", str(fifo), str(tmp_path / "o.png"), *model], "not a regular file or a folder"),
        (["upscale", str(img), str(fifo), *model], "not a regular file"),
    ):
        codes: list[int] = []
        t = threading.Thread(target=lambda a, c: c.append(main(a)), args=(argv, codes), daemon=True)
        t.start()
        t.join(30)
        if t.is_alive():  # blocked on the FIFO: open its other end so the thread can finish, then fail
            fd = os.open(fifo, os.O_RDWR)
            os.close(fd)
            pytest.fail(f"vsr {' '.join(argv[:3])} blocked on a FIFO")
        assert codes == [2] and message in one_error_line(capsys)


def test_tile_is_honoured_for_video(
    tmp_path: Path, tiny_artifact: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from vsr.engine import Engine

    seen: list[int] = []
    infer = Engine._infer

    def spy(self: Engine, lm: object, frames: np.ndarray, tiles: object) -> np.ndarray:
        seen.append(tiles.tile)  # type: ignore[attr-defined]
        return infer(self, lm, frames, tiles)  # type: ignore[arg-type]

    monkeypatch.setattr(Engine, "_infer", spy)
    video = make_video(tmp_path / "v.mp4")
    model = ["--model", str(tiny_artifact["x2"])]
    assert main(["upscale", str(video), str(tmp_path / "tiled.mp4"), *model, "--tile", "16"]) == 0
    assert seen and set(seen) == {16}


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("vsr ")


def _parsers(p: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out = [p]
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            for sub in a.choices.values():
                out += _parsers(sub)
    return out


def test_every_flag_has_help() -> None:
    missing = [
        f"{p.prog} {a.option_strings or a.dest}"
        for p in _parsers(_parser())
        for a in p._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction) and not (a.help or "").strip()
    ]
    assert missing == []
