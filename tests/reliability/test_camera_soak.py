"""``scripts/camera_soak.py``'s verdict and plots on made-up samples (the run itself takes minutes: see
docs/reliability.md): a flat, fair run passes; RSS growth, a thread leak, an unfair share, a slow upload or a 503
without Retry-After each fail their own check; the SVG fallback draws every series."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import REPO


def load() -> Any:
    spec = importlib.util.spec_from_file_location("vsr_camera_soak", REPO / "scripts" / "camera_soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


cs = load()


def run_of(n: int = 20, *, rss_step: int = 0, thread_step: float = 0, fps: tuple[float, ...] = (10, 10)) -> dict:
    samples = [
        {
            "t": 5.0 * i,
            "rss_bytes": (300 << 20) + rss_step * i,
            "threads": 20 + int(thread_step * i),
            "fds": 21,
            "temp_files": 0,
            "streams": {
                f"cam-{j}": {"state": "live", "fps": f, "latency_p99_s": 0.3, "worker_share": 0.5, "dropped": 0}
                for j, f in enumerate(fps)
            },
            "worker": {"busy": 0.5, "overloaded": False, "shares": {}},
        }
        for i in range(n)
    ]
    return {"samples": samples, "exit_code": 0, "sample_errors": []}


def with_sample_error(run: dict) -> dict:
    return run | {"sample_errors": [{"t": 12.0, "error": "ConnectError: connection refused"}]}


def probes(uploads: list[tuple[float, int, bool]] | None = None, health: float = 0.01) -> Any:
    p = cs.Probes("http://127.0.0.1:1", 0)
    p.uploads = uploads if uploads is not None else [(0.2, 200, False), (0.5, 503, True)]
    p.health = [health] * 50
    return p


def checks(result: dict, p: Any | None = None) -> dict[str, bool]:
    cfg = cs.CameraSoakConfig(seconds=100.0)
    return cs.summarize(result, cfg, p or probes())["checks"]


def test_a_flat_fair_run_passes_every_check() -> None:
    assert all(checks(run_of()).values()), checks(run_of())


@pytest.mark.parametrize(
    ("run", "p", "failing"),
    [
        (run_of(rss_step=4 << 20), None, "rss_growth_le_5pct"),  # +4 MiB a sample: ~20 % over the run
        (run_of(thread_step=0.5), None, "threads_flat"),
        (run_of(fps=(10, 6)), None, "fair_fps_ratio_ge_0.7"),
        (run_of(), probes([(12.0, 200, False)]), "uploads_answered_le_10s"),
        (run_of(), probes([(0.1, 503, False)]), "uploads_answered_le_10s"),  # 503 without Retry-After
        (run_of(), probes(health=0.3), "health_p99_le_100ms"),
        (with_sample_error(run_of()), None, "every_sample_answered"),  # the server stopped answering for a while
    ],
)
def test_each_fault_fails_its_check(run: dict, p: Any, failing: str) -> None:
    got = checks(run, p)
    assert [k for k, ok in got.items() if not ok] == [failing], got


def test_the_svg_fallback_draws_every_series(tmp_path: Path) -> None:
    result = run_of(fps=(10, 8, 9))
    result["config"] = {"label": "smoke", "seconds": 100.0, "cameras": 3, "stream_size": [320, 180], "fps": 15}
    result["summary"] = cs.summarize(result, cs.CameraSoakConfig(seconds=100.0), probes())
    data = cs.series(result)
    panels = [("resources", ["RSS (MiB)", "threads", "open fds"]), ("fps", [k for k in data if k.endswith(" fps")])]
    out = cs.svg(data, panels, cs.title(result), tmp_path / "plot.svg")
    text = out.read_text()
    assert text.startswith("<svg") and text.count("<polyline") == 6 and "[smoke]" in text
