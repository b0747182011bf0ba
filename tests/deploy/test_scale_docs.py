"""docs/scale.md stays true: its capacity table is what scripts/capacity.py computes from bench/results/ now, the
shard planner agrees with the service's sharding, and the settings it names exist."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from types import ModuleType

from service.settings import Settings
from service.sharding import Shard
from tests.support.env import REPO

DOC = REPO / "docs" / "scale.md"


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"vsr_script_{name}", REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_capacity_table_is_current() -> None:
    cap = script("capacity")
    text = DOC.read_text()
    current = text[text.index(cap.BEGIN) + len(cap.BEGIN) : text.index(cap.END)].strip()
    assert current == cap.render().strip(), "run: python scripts/capacity.py --write"


def test_capacity_rows_say_what_is_measured() -> None:
    rows = [line for line in script("capacity").render().splitlines() if line.startswith("| ")]
    cpu = [r for r in rows if r.endswith(" |") and ("measured" in r or "extrapolated" in r)]
    assert sum("| measured:" in r for r in cpu) == 1 and len(cpu) == 3
    assert all(("360p" in r) == ("measured:" in r) for r in cpu)  # the benchmark's own size is the measured one


def test_shard_plan_matches_the_service() -> None:
    plan = script("shard_plan")
    cams = plan.camera_names(REPO / "deploy" / "k8s" / "cameras.yaml")
    assert len(cams) == len(set(cams)) >= 4
    for n in (1, 3, 4):
        assert plan.placement(cams, n) == {i: Shard(i, n).select(cams) for i in range(n)}
    out = subprocess.run(
        [sys.executable, "scripts/shard_plan.py", "deploy/k8s/cameras.yaml", "3", "4"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    moved = {c for c in cams if Shard(3, 4).owns(c)}
    assert f"3 -> 4: {len(moved)} of {len(cams)} cameras move" in out
    bad = subprocess.run(
        [sys.executable, "scripts/shard_plan.py", "/nonexistent.yml", "2"], cwd=REPO, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


def test_docs_name_only_real_settings() -> None:
    named = set(re.findall(r"\bVSR_[A-Z0-9_]+\b", DOC.read_text()))
    assert {"VSR_SHARD_COUNT", "VSR_SHARD_INDEX", "VSR_STREAMS_FILE"} <= named
    unknown = {v for v in named if v.removeprefix("VSR_").lower() not in Settings.model_fields}
    assert not unknown, unknown
