"""One run folder, one training process: the lock ``scripts/train.sh`` reads to tell running runs from waiting ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from training.run import hold_run_lock


def test_a_run_is_trained_by_one_process_at_a_time(tmp_path: Path) -> None:
    held = hold_run_lock(tmp_path)
    with pytest.raises(RuntimeError, match="another process"):
        hold_run_lock(tmp_path)
    # what train.sh asks: flock(1) cannot take the lock while the run is held, and can once it is released
    assert subprocess.run(["flock", "-n", str(tmp_path / ".lock"), "true"]).returncode != 0
    held.close()
    assert subprocess.run(["flock", "-n", str(tmp_path / ".lock"), "true"]).returncode == 0
    hold_run_lock(tmp_path).close()
