"""Evaluation: the ``vsr evaluate --json`` schema, and the protocol checked against published numbers on Set5."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.support.env import SHARED, require_or_skip
from tests.support.media import write_images
from training.evaluate import evaluate_set, format_table, model_upscaler
from vsr.imageops import upscale_bicubic
from vsr_cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

SET5 = SHARED / "datasets" / "test" / "Set5"


def test_evaluate_json_schema(tmp_path: Path, tiny_artifact, capsys) -> None:
    write_images(tmp_path / "Tiny", 2, height=26, width=30, seed=5)
    write_images(tmp_path / "Other", 1, height=20, width=20, seed=6, ext="bmp")
    argv = ["evaluate", "--model", str(tiny_artifact["x2"]), "--data", str(tmp_path / "Tiny")]
    assert main([*argv, "--data", str(tmp_path / "Other"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"model", "scale", "sets"}
    assert result["model"] == str(tiny_artifact["x2"]) and result["scale"] == 2
    assert list(result["sets"]) == ["Tiny", "Other"]
    for name, n in (("Tiny", 2), ("Other", 1)):
        row = result["sets"][name]
        assert {"psnr_y", "ssim_y", "bicubic_psnr_y", "images"} <= set(row)
        assert row["images"] == n and isinstance(row["images"], int)
        assert all(isinstance(row[k], float) and math.isfinite(row[k]) for k in ("psnr_y", "ssim_y", "bicubic_psnr_y"))
        assert 0 < row["ssim_y"] <= 1 and 10 < row["psnr_y"] < 80
    # the same numbers as a table without --json
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert table.startswith("| set |") and "| Tiny | 2 |" in table


def test_evaluate_rejects_wrong_scale(tmp_path: Path, tiny_artifact, capsys) -> None:
    write_images(tmp_path / "T", 1)
    assert main(["evaluate", "--model", str(tiny_artifact["x4"]), "--data", str(tmp_path / "T"), "--scale", "2"]) == 2
    assert "x4" in capsys.readouterr().err


def test_format_table_gain() -> None:
    res = {"sets": {"S": {"images": 1, "psnr_y": 30.0, "ssim_y": 0.9, "bicubic_psnr_y": 28.5, "bicubic_ssim_y": 0.8}}}
    assert "+1.500" in format_table(res)


def test_bicubic_set5_x2_matches_published() -> None:
    """The protocol (BT.601 Y, border = scale, HR cropped to a multiple, bicubic LR): published 33.66 dB."""
    require_or_skip(SET5.is_dir(), f"test set {SET5} not present")
    res = evaluate_set(lambda lr: upscale_bicubic(lr, 2), SET5, 2, progress=False, with_bicubic=False)
    assert res["images"] == 5
    assert 33.6 <= res["psnr_y"] <= 33.7


@pytest.mark.slow
def test_rlfn_x2_set5_reproduces_readme() -> None:
    """RLFN x2 through our architecture and protocol: 38.066 dB in the teachers' README (paper 38.07)."""
    from training.teachers import load_teacher

    path = SHARED / "teachers" / "RLFN_x2.pth"
    require_or_skip(path.is_file() and SET5.is_dir(), "RLFN_x2.pth or Set5 not present")
    model, _ = load_teacher(path)
    res = evaluate_set(model_upscaler(model, 2), SET5, 2, progress=False, with_bicubic=False)
    assert abs(res["psnr_y"] - 38.066) <= 0.05, res


@pytest.mark.slow
def test_dctlsa_x4_set5_reproduces_readme() -> None:
    """DCTLSA x4 through our architecture (vsr/archs/dctlsa.py) and protocol: 32.531 dB in the teachers' README,
    measured there through spandrel's DCTLSA. The whole of Set5 at x4 takes ~2 s on one thread."""
    from training.teachers import load_teacher

    path = SHARED / "teachers" / "DCTLSA_x4.pt"
    require_or_skip(path.is_file() and SET5.is_dir(), "DCTLSA_x4.pt or Set5 not present")
    model, _ = load_teacher(path)
    res = evaluate_set(model_upscaler(model, 4), SET5, 4, progress=False, with_bicubic=False)
    assert res["images"] == 5
    assert abs(res["psnr_y"] - 32.531) <= 0.02, res
