"""``python -m bench.arch_speed``: candidate specs, and a tiny run whose rows and per-layer groups are filled."""

from __future__ import annotations

import pytest

from bench import arch_speed

pytestmark = pytest.mark.usefixtures("one_thread")


def test_specs() -> None:
    assert arch_speed.parse("20x3/2") == {
        "scale": 2,
        "channels": 20,
        "depth": 3,
        "colors": 1,
        "fused": True,
        "unshuffle": 2,
    }
    assert arch_speed.parse("16x5")["unshuffle"] == 1
    for bad in ("16", "x5", "16x5/", "a16x5"):
        with pytest.raises(ValueError, match="CxD"):
            arch_speed.parse(bad)


def test_a_tiny_run_times_and_profiles_every_candidate() -> None:
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    res = arch_speed.run(["8x1", "8x2/2"], threads=1, size=(24, 40), rounds=2, profile=True)
    rows = res["rows"]
    assert list(rows) == ["bundled x2", "bundled x2-camera-fast", "8x1", "8x2/2"]
    assert rows["8x1"]["params"] == 1 * 8 * 9 + 8 + 8 * 8 * 9 + 8 + 8 * 4 * 9 + 4
    assert rows["8x2/2"]["params"] == 4 * 8 * 9 + 8 + 2 * (8 * 8 * 9 + 8) + 8 * 16 * 9 + 16
    assert rows["bundled x2"]["x2_over_this"] == 1.0
    for r in rows.values():
        assert r["ms"] > 0 and r["best_ms"] <= r["ms"]
        # every conv of a student is found by its module name, and the rest (shuffle, rounding) is counted apart
        assert {"head", "body", "tail", "other"} <= set(r["layers_ms"]), r["layers_ms"]


def test_bad_candidate_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert arch_speed.main(["16x"]) == 2
    assert capsys.readouterr().err.startswith("error: bad candidate")
