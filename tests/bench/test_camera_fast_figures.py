"""The README's figures for `x2-camera-fast` are the ones its commands wrote: the held-out real-clip gains
(`python -m training.clip_eval`, bench/results/clip_eval.json) and the clean Set5 score in the bundled model.json."""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _gain(per: dict[str, dict[str, float]], model: str) -> str:
    return f"{per[model]['psnr_y'] - per['bicubic']['psnr_y']:+.2f}"


def test_readme_camera_fast_paragraph_matches_its_results() -> None:
    readme = (ROOT / "README.md").read_text()
    res = json.loads((ROOT / "bench/results/clip_eval.json").read_text())["result"]
    c23, c28 = res["h264 CRF 23"], res["h264 CRF 28"]
    fast = f"{_gain(c23, 'x2-camera-fast')} / {_gain(c28, 'x2-camera-fast')} dB over bicubic at CRF 23 / 28"
    base = f"(`x2-camera` {_gain(c23, 'x2-camera')} / {_gain(c28, 'x2-camera')})"
    assert fast in readme and base in readme
    meta = json.loads((ROOT / "vsr/models/x2-camera-fast/model.json").read_text())
    assert f"Set5 {meta['scores']['test']['Set5']['psnr_y']:.2f} dB" in readme
    assert f"{meta['parameters']:,} parameters" in readme
