"""One memory budget: the batcher forms batches within it (splitting and queueing instead of exceeding), refuses a
frame that alone is over it (413), bounds the bytes waiting in its queue, and hands a spike's memory back to the OS;
the engine's per-frame estimate is an upper bound of what a frame really costs (measured in a fresh process)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from service import batcher as batcher_mod
from service.batcher import Batcher, OverBudget, QueueFull
from tests.support.checks import error_body_ok, report
from tests.support.env import REPO
from tests.support.live import Server


class PricedEngine:
    """Echo engine with a fixed price per frame; records batch sizes."""

    names = ["m"]

    def __init__(self, price: int) -> None:
        self.price, self.sizes = price, []  # type: int, list[int]
        self.gate = threading.Event()
        self.gate.set()

    def frame_bytes(self, _model: str, _shape: tuple[int, ...]) -> int:
        return self.price

    def run(self, _model: str, frames: np.ndarray) -> np.ndarray:
        self.gate.wait(10)
        self.sizes.append(len(frames))
        return frames.copy()


def frame(i: int) -> np.ndarray:
    return np.full((4, 4, 3), i, np.uint8)


def test_batches_stay_within_the_budget_and_every_frame_is_served() -> None:
    engine = PricedEngine(price=100_000)
    engine.gate.clear()  # hold the worker so that all frames are queued before the first batch forms
    b = Batcher(engine, max_batch_size=8, max_batch_delay_s=0.05, queue_limit=64, memory_budget_bytes=250_000).start()
    try:
        first = b.submit(frame(0), model="m", source="a")
        futures = [b.submit(frame(i), model="m", source=f"s{i % 3}") for i in range(1, 7)]
        engine.gate.set()
        assert first.result(5)[0, 0, 0] == 0
        assert [int(f.result(5)[0, 0, 0]) for f in futures] == list(range(1, 7))
    finally:
        b.close()
    assert max(engine.sizes) == 2 and sum(engine.sizes) == 7  # 250 kB hold two 100 kB frames, never three


def test_a_frame_over_the_whole_budget_is_refused() -> None:
    b = Batcher(PricedEngine(price=1000), memory_budget_bytes=999).start()
    try:
        with pytest.raises(OverBudget, match="over the memory budget"):
            b.submit(frame(1), model="m", source="a")
    finally:
        b.close()


def test_queued_inputs_hold_at_most_a_quarter_of_the_budget() -> None:
    engine = PricedEngine(price=1)
    engine.gate.clear()
    big = np.zeros((100, 100, 3), np.uint8)  # 30 kB each
    b = Batcher(engine, max_batch_size=1, queue_limit=1000, memory_budget_bytes=400_000).start()
    try:
        accepted = 0
        with pytest.raises(QueueFull):
            for _ in range(100):
                b.submit(big, model="m", source="a")
                accepted += 1
        assert 3 <= accepted <= 5  # 100 kB / 30 kB (+ the one the worker holds)
    finally:
        engine.gate.set()
        b.close()


def test_a_spike_is_handed_back_to_the_os(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(batcher_mod, "release_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(batcher_mod, "IDLE_RELEASE_S", 0.05)
    b = Batcher(PricedEngine(price=300 << 20), memory_budget_bytes=1 << 30).start()
    try:
        b.submit(frame(1), model="m", source="a").result(5)
        threading.Event().wait(0.3)
    finally:
        b.close()
    assert len(calls) == 2  # right after the batch, and once idle (when the callers had let go of the outputs)


def png(w: int, h: int, seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_server_splits_batches_and_refuses_frames_over_the_budget(live_server: Callable[..., Server]) -> None:
    srv = live_server(memory_budget_mb=30, max_batch_size=8, max_batch_delay_ms=50)
    engine = srv.app.state.engine
    cost = engine.frame_bytes("x2", (256, 256, 3))
    per_batch = (30 << 20) // cost
    assert 2 <= per_batch <= 3, cost  # a few fit in 30 MiB, not all 6
    bodies = [png(256, 256, i) for i in range(6)]
    with ThreadPoolExecutor(6) as pool:
        codes = list(
            pool.map(lambda b: srv.client.post("/upscale", content=b, headers={"content-type": "image/png"}), bodies)
        )
    assert [r.status_code for r in codes] == [200] * 6
    sizes = srv.app.state.registry.get_sample_value("vsr_batch_size_count")
    assert sizes and sizes >= -(-6 // per_batch)  # 6 frames in batches of at most per_batch
    huge = srv.client.post("/upscale", content=png(1024, 1024, 9), headers={"content-type": "image/png"})
    assert huge.status_code == 413 and error_body_ok(huge) and huge.json()["error"]["code"] == "over_memory_budget"
    report("memory_budget_ci", {"frame_bytes_256": cost, "budget": 30 << 20, "batches": sizes})


MEASURE = """
import json, sys, numpy as np, torch
torch.set_num_threads(1)
from service.engine import Engine
from service.settings import Settings
s = Settings(models=[sys.argv[1]], device="cpu", dtype="fp32", warmup=False)
e = Engine.load(s)
e.run("x2", np.zeros((1, 32, 32, 3), np.uint8))
h, w = int(sys.argv[2]), int(sys.argv[3])
frames = np.random.default_rng(0).integers(0, 255, (1, h, w, 3), np.uint8)
def status(key):
    return next(int(l.split()[1]) * 1024 for l in open("/proc/self/status") if l.startswith(key + ":"))
base = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
out = e.run("x2", frames)
peak = status("VmHWM")
print(json.dumps({"measured": peak - base, "estimate": e.frame_bytes("x2", (h, w, 3))}))
"""


def test_frame_estimate_is_an_upper_bound_of_the_measured_peak() -> None:
    """The bundled x2 on a 1280x720 frame (tiled at the default 512): estimate >= measured, and not absurdly more."""
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, "x2", "720", "1280"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    report("memory_estimate", m)
    assert m["measured"] <= m["estimate"] <= 2 * m["measured"], m
