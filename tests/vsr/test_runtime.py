"""Run-time hygiene (``vsr.runtime``): freed big buffers stay in the heap; OpenMP settings reach child processes."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.support.env import REPO

PROBE = textwrap.dedent(
    """
    import os, resource, sys
    if sys.argv[1] == "on":
        from vsr.runtime import configure
        configure()
    import numpy as np
    def faults():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    n = 11 << 17                         # 11 MB float64: one 24-channel activation of a 640x360 frame, roughly
    a = np.ones(n); b = np.ones(n); del a; del b   # first touch faults in any case
    f0 = faults()
    for _ in range(5):
        a = np.ones(n); b = np.ones(n); del b; del a   # the same sizes again: kept buffers fault no more
    print(faults() - f0, os.environ.get("OMP_WAIT_POLICY"))
    """
)


def _probe(mode: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "OMP_"))}
    env["PYTHONPATH"] = str(REPO)
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, env=env, check=True)
    faults, policy = out.stdout.split()
    return int(faults), policy


def test_freed_buffers_are_kept() -> None:
    off, policy_off = _probe("off")
    on, policy_on = _probe("on")
    assert off > 1_000, off  # glibc's default: freed buffers go back to the OS (mmap / heap trim) and fault back
    assert on < 100, on
    assert policy_off == "None" and policy_on == "PASSIVE"


def test_user_settings_win() -> None:
    from vsr import runtime

    saved = dict(os.environ)
    try:
        os.environ["OMP_WAIT_POLICY"] = "ACTIVE"
        os.environ.pop("OMP_NUM_THREADS", None)
        os.environ["VSR_THREADS"] = "1"
        applied = runtime.configure()
        assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and "OMP_WAIT_POLICY" not in applied
        assert os.environ["OMP_NUM_THREADS"] == "1" and applied["OMP_NUM_THREADS"] == "1"
        os.environ.pop("OMP_NUM_THREADS")
        os.environ["VSR_THREADS"] = "²"  # a digit to str.isdigit, not to int(): ignored, not a traceback
        assert "OMP_NUM_THREADS" not in runtime.configure() and "OMP_NUM_THREADS" not in os.environ
    finally:
        os.environ.clear()
        os.environ.update(saved)
