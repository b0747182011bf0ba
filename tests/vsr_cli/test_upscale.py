"""``vsr upscale``: files and folders (tiled), grey and alpha images, videos, and clear errors. What it writes is
compared with the model's plain forward pass (``tests.support.reference``): exactly for PNG, within the codec's
error for JPEG and H.264, and always clearly apart from nearest-neighbour and bicubic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.env import REPO
from tests.support.media import synthetic_image, write_images
from tests.support.reference import assert_model_output
from vsr_cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


def test_file(tmp_path: Path, tiny_artifact) -> None:
    (src,) = write_images(tmp_path / "in", 1, height=24, width=32)
    out = tmp_path / "out" / "big.jpg"  # format from OUT's extension; parent folder created
    assert main(["upscale", str(src), str(out), "--model", str(tiny_artifact["x2"])]) == 0
    with Image.open(out) as im:
        assert im.format == "JPEG" and im.size == (64, 48) and im.mode == "RGB"
        got = np.asarray(im)
    assert_model_output(got, np.asarray(Image.open(src)), tiny_artifact["x2"], tol=10.0)  # JPEG q95 (+ 4:2:0)


def test_folder_tiled_and_untiled_are_the_model(tmp_path: Path, tiny_artifact) -> None:
    write_images(tmp_path / "in", 3, height=40, width=36, seed=4)
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    x4 = str(tiny_artifact["x4"])
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "tiled"), "--model", x4, "--tile", "16"]) == 0
    assert main(["upscale", str(tmp_path / "in"), str(tmp_path / "whole"), "--model", x4, "--tile", "0"]) == 0
    names = sorted(p.name for p in (tmp_path / "tiled").iterdir())
    assert names == ["img0.png", "img1.png", "img2.png"]
    for n in names:
        a = np.asarray(Image.open(tmp_path / "tiled" / n)).astype(int)
        b = np.asarray(Image.open(tmp_path / "whole" / n)).astype(int)
        assert a.shape == (160, 144, 3)
        assert np.abs(a - b).max() <= 1
        lr = np.asarray(Image.open(tmp_path / "in" / n).convert("RGB"))
        assert_model_output(a.astype(np.uint8), lr, x4, tol=1.5)  # PNG; auto dtype may round a bf16 residual


@pytest.mark.parametrize("mode, ext", [("L", "png"), ("RGBA", "png"), ("LA", "png"), ("RGBA", "webp"), ("P", "bmp")])
def test_grey_and_alpha(tmp_path: Path, tiny_artifact, mode: str, ext: str) -> None:
    rgb = synthetic_image(np.random.default_rng(0), 20, 26)
    if mode in ("RGBA", "LA"):
        base = Image.fromarray(rgb).convert(mode[:-1])
        alpha = Image.fromarray(np.tile(np.linspace(0, 255, 26, dtype=np.uint8), (20, 1)))
        base.putalpha(alpha)
        img = base
    else:
        img = Image.fromarray(rgb).convert(mode)
    src = tmp_path / f"in.{ext}"
    img.save(src)
    out = tmp_path / f"out.{ext}"
    assert main(["upscale", str(src), str(out), "--model", str(tiny_artifact["x2"])]) == 0
    with Image.open(out) as res:
        assert res.size == (52, 40)
        expected_mode = {"L": "L", "RGBA": "RGBA", "LA": "LA", "P": "RGB"}[mode]
        assert res.mode == expected_mode
        if "A" in mode:
            a = np.asarray(res.getchannel("A")).astype(int)
            assert a[:, 0].max() < 40 and a[:, -1].min() > 215  # the alpha ramp survived (bicubic)


def test_alpha_dropped_for_jpeg(tmp_path: Path, tiny_artifact) -> None:
    img = Image.fromarray(synthetic_image(np.random.default_rng(0), 16, 16)).convert("RGBA")
    img.save(tmp_path / "a.png")
    assert main(["upscale", str(tmp_path / "a.png"), str(tmp_path / "a.jpg"), "--model", str(tiny_artifact["x2"])]) == 0
    assert Image.open(tmp_path / "a.jpg").mode == "RGB"


def test_output_folder_for_a_file(tmp_path: Path, tiny_artifact) -> None:
    (src,) = write_images(tmp_path / "in", 1)
    (tmp_path / "dest").mkdir()
    assert main(["upscale", str(src), str(tmp_path / "dest"), "--model", str(tiny_artifact["x2"])]) == 0
    assert (tmp_path / "dest" / src.name).is_file()


@pytest.mark.parametrize(
    "make, out, message",
    [
        (lambda d: d / "missing.png", "o.png", "input not found"),
        (lambda d: (d / "a.gif").write_bytes(b"GIF89a") and d / "a.gif", "o.png", "unsupported input"),
        (lambda d: write_images(d / "in", 1)[0], "o.tiff", "unsupported output"),
        (lambda d: (d / "empty").mkdir() or d / "empty", "outdir", "no images"),
    ],
    ids=["missing", "input-ext", "output-ext", "empty-folder"],
)
def test_errors_exit_2(tmp_path: Path, tiny_artifact, capsys, make, out, message) -> None:
    src = make(tmp_path)
    assert main(["upscale", str(src), str(tmp_path / out), "--model", str(tiny_artifact["x2"])]) == 2
    assert message in capsys.readouterr().err


def test_unknown_model_exit_2(tmp_path: Path, capsys) -> None:
    (src,) = write_images(tmp_path / "in", 1)
    assert main(["upscale", str(src), str(tmp_path / "o.png"), "--model", str(tmp_path / "nope")]) == 2
    assert "no artifact" in capsys.readouterr().err


def test_video(tmp_path: Path, tiny_artifact) -> None:
    av = pytest.importorskip("av")  # a runtime dependency; always present after `make install`
    src, out = tmp_path / "in.mp4", tmp_path / "out.mp4"
    with av.open(str(src), "w") as c:
        s = c.add_stream("libx264", rate=10)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        rng = np.random.default_rng(0)
        for _ in range(4):
            for pkt in s.encode(av.VideoFrame.from_ndarray(synthetic_image(rng, 24, 32), format="rgb24")):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    assert main(["upscale", str(src), str(out), "--model", str(tiny_artifact["x2"])]) == 0
    with av.open(str(out)) as c:
        frames = list(c.decode(video=0))
    assert len(frames) == 4 and (frames[0].width, frames[0].height) == (64, 48)
    with av.open(str(src)) as c:  # the frames the CLI read, decoded here (the codec is not the path under test)
        lrs = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    for lr, f in zip(lrs, frames, strict=True):
        assert_model_output(f.to_ndarray(format="rgb24"), lr, tiny_artifact["x2"], tol=12.0)  # H.264 + 4:2:0


def test_video_needs_video_output(tmp_path: Path, tiny_artifact, capsys) -> None:
    src = tmp_path / "in.mp4"
    src.write_bytes(b"")
    assert main(["upscale", str(src), str(tmp_path / "o.png"), "--model", str(tiny_artifact["x2"])]) == 2
    assert "video OUT" in capsys.readouterr().err


def test_progress_off_a_terminal_is_json_log_lines(tmp_path: Path, tiny_artifact) -> None:
    """The real command with stderr to a pipe (as under nohup): no carriage-return bar, every line one JSON object,
    and the folder's progress among them with its counts."""
    write_images(tmp_path / "in", 3, height=24, width=32)
    cmd = [sys.executable, "-m", "vsr_cli", "upscale", str(tmp_path / "in"), str(tmp_path / "out")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "VSR_LOG_FORMAT": "auto"}
    proc = subprocess.run(
        [*cmd, "--model", str(tiny_artifact["x2"])], capture_output=True, text=True, timeout=120, cwd=REPO, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    records = [json.loads(line) for line in proc.stderr.splitlines() if line.strip()]
    done = [r for r in records if r.get("progress") == "upscale x2"]
    assert done and (done[-1]["step"], done[-1]["steps"], done[-1]["unit"]) == (3, 3, "file"), records
