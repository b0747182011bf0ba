"""``scripts/gpu_check.sh --dry-run``: the one-shot GPU check runs end to end on CPU (tiny frame, temp results)."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.env import REPO


def test_gpu_check_dry_run() -> None:
    env = {**os.environ, "PY": sys.executable}
    r = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--dry-run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=420,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "gpu_check: ok" in r.stdout
