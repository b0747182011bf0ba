"""The short soak of CI: ``scripts/soak.py`` for ``$VSR_SOAK_SECONDS`` (default 35 s) — the real ``vsr serve`` in a
subprocess, images at 5/s, 2 live file streams with an MJPEG viewer each, a video job every 10 s — asserting bounded
RSS growth after warm-up and no leaked threads, file descriptors or temporary files, no frame backlog, a clean exit.

The 10-minute run is ``python scripts/soak.py`` (docs/reliability.md). A short run is noisier, so the RSS bound
here is 10 % (the 10-minute run is held to the issue's 5 %).
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

from tests.support.env import REPO

pytestmark = pytest.mark.slow


def load_soak():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("vsr_soak_script", REPO / "scripts" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_short_soak(tmp_path: Path) -> None:
    soak = load_soak()
    seconds = float(os.environ.get("VSR_SOAK_SECONDS", "35"))
    cfg = soak.SoakConfig(
        seconds=seconds,
        streams=2,
        image_rps=5.0,
        video_every_s=10.0,
        sample_every_s=1.0,
        warmup_frac=0.4,  # past the first video job (at 10 s): its codec buffers are part of the steady state
        max_rss_growth=0.10,
        dtype="fp32",
    )
    result = soak.run_soak(cfg, tmp_path)
    if out := os.environ.get("VSR_RELIABILITY_DIR"):
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "soak_short.json").write_text(json.dumps(result, indent=1))
        soak.plot(result, Path(out) / "soak_short.png")
    v = result["verdict"]
    print("\nsoak:", json.dumps({k: v[k] for k in v if k != "checks"} | {"load": result["load"]}))
    assert result["load"].get("image_200", 0) >= seconds * 3, result["load"]
    assert result["load"].get("mjpeg_frames", 0) > 0 and result["load"].get("video_done", 0) >= 1, result["load"]
    assert not [k for k in result["load"] if k.startswith("image_") and k != "image_200"], result["load"]
    assert v["ok"], v
