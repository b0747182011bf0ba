"""Property-based tests (hypothesis) of the two pieces every frame goes through.

- The tiler (``vsr.tiling``): for any frame size, tile grid, overlap and scale, a model whose receptive field fits
  inside the overlap gives exactly the untiled output; the grid planned for a pixel budget fits that budget.
- The batcher: for any mix of sizes, models, sources, arrival times, batch limits and deadlines, every caller gets
  exactly its own result (the fake engine's output encodes the input's identity), batches never mix models or
  shapes nor exceed the size limit, expired work never runs, and nothing is left queued.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from service.batcher import Batcher, DeadlineExceeded, QueueFull
from vsr.tiling import TileGrid, plan_grid, run_tiled

# ---- tiler -----------------------------------------------------------------------------------------------------


def local_model(radius: int, scale: int, seed: int) -> nn.Module:
    """``radius`` 3x3 convs (receptive field radius = ``radius`` LR pixels) + PixelShuffle; float64 for exactness."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    ch = 3
    for i in range(radius):
        out = 3 * scale * scale if i == radius - 1 else 6
        layers += [nn.Conv2d(ch, out, 3, padding=1)]
        if i < radius - 1:
            layers += [nn.ReLU()]
        ch = out
    layers += [nn.PixelShuffle(scale)]
    return nn.Sequential(*layers).double().eval()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    h=st.integers(1, 36),
    w=st.integers(1, 36),
    rows=st.integers(1, 6),
    cols=st.integers(1, 6),
    radius=st.integers(1, 3),
    extra_overlap=st.integers(0, 4),
    scale=st.integers(1, 3),
    batch=st.integers(1, 2),
)
def test_tiled_equals_untiled(
    one_thread: None, h: int, w: int, rows: int, cols: int, radius: int, extra_overlap: int, scale: int, batch: int
) -> None:
    model = local_model(radius, scale, seed=h * 41 + w)
    x = torch.rand(batch, 3, h, w, dtype=torch.float64, generator=torch.Generator().manual_seed(rows * 7 + cols))
    with torch.inference_mode():
        whole = model(x)
        tiled = run_tiled(model, x, TileGrid(rows, cols, radius + extra_overlap), scale)
    assert tiled.shape == (batch, 3, h * scale, w * scale)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-12)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    h=st.integers(1, 2000),
    w=st.integers(1, 2000),
    budget=st.integers(1_000, 2_000_000),
    overlap=st.integers(0, 16),
    batch=st.integers(1, 4),
)
def test_planned_tiles_fit_the_budget(h: int, w: int, budget: int, overlap: int, batch: int) -> None:
    grid = plan_grid(h, w, budget=budget, overlap=overlap, batch=batch)
    tile_h = -(-h // grid.rows) + (2 * overlap if grid.rows > 1 else 0)
    tile_w = -(-w // grid.cols) + (2 * overlap if grid.cols > 1 else 0)
    assert 1 <= grid.rows <= h and 1 <= grid.cols <= w
    assert grid.tiled == (h * w * batch > budget)
    if (1 + 2 * overlap) ** 2 * batch <= budget:  # else even 1-px cores overflow: the finest grid is all it can do
        assert not grid.tiled or min(tile_h, h) * min(tile_w, w) * batch <= budget


# ---- batcher ---------------------------------------------------------------------------------------------------

MODELS = {"a": 1, "b": 2}  # model -> the value it adds: outputs differ by model


class IdentityEngine:
    """Output = input + the model's offset (mod 256); pixel [0, 0] carries a unique id per request.

    Records each batch so the test can check that batches never mix models or shapes.
    """

    names = tuple(MODELS)

    def __init__(self, max_batch: int, delay_s: float) -> None:
        self.batches: list[tuple[str, tuple[int, ...], int]] = []
        self.ran: set[int] = set()
        self.max_batch = max_batch
        self.delay_s = delay_s
        self.lock = threading.Lock()

    def frame_bytes(self, model: str, shape: tuple[int, ...]) -> int:
        return int(np.prod(shape))  # never asked: these batchers have no memory budget

    def run(self, model: str, frames: np.ndarray) -> np.ndarray:
        assert frames.dtype == np.uint8 and frames.ndim == 4
        with self.lock:
            self.batches.append((model, frames.shape[1:], len(frames)))
            self.ran.update(ident(f) for f in frames)
        if self.delay_s:
            time.sleep(self.delay_s)
        return ((frames.astype(np.int32) + MODELS[model]) % 256).astype(np.uint8)


def ident(frame: np.ndarray) -> int:
    return int(frame[0, 0, 0]) + 256 * int(frame[0, 0, 1])


def make_frame(i: int, h: int, w: int) -> np.ndarray:
    f = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
    f[0, 0, 0], f[0, 0, 1] = i % 256, i // 256
    return f


request = st.tuples(
    st.sampled_from(list(MODELS)),  # model
    st.sampled_from([(2, 2), (2, 3), (3, 2), (4, 4)]),  # shape
    st.sampled_from(["s0", "s1", "s2", "upload"]),  # source
    st.floats(0, 0.003),  # pause before submitting
    st.sampled_from([None, None, None, -1.0, 0.5]),  # deadline: none / already passed / ahead
)


@settings(max_examples=100, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    requests=st.lists(request, min_size=1, max_size=40),
    max_batch=st.integers(1, 6),
    delay_ms=st.sampled_from([0.0, 1.0, 5.0]),
    queue_limit=st.integers(1, 50),
    engine_ms=st.sampled_from([0.0, 1.0]),
    threads=st.integers(1, 3),
)
def test_every_caller_gets_its_own_result(
    requests: list, max_batch: int, delay_ms: float, queue_limit: int, engine_ms: float, threads: int
) -> None:
    engine = IdentityEngine(max_batch, engine_ms / 1000)
    batcher = Batcher(engine, max_batch_size=max_batch, max_batch_delay_s=delay_ms / 1000, queue_limit=queue_limit)
    batcher.start()
    submitted: dict[int, tuple[Future, np.ndarray, str, float | None]] = {}
    rejected: list[int] = []
    lock = threading.Lock()

    def producer(part: list[tuple[int, tuple]]) -> None:
        for i, (model, (h, w), source, pause, deadline) in part:
            time.sleep(pause)
            f = make_frame(i, h, w)
            dl = None if deadline is None else time.monotonic() + deadline
            try:
                fut = batcher.submit(f, model=model, source=source, deadline=dl)
            except QueueFull:
                with lock:
                    rejected.append(i)
                continue
            with lock:
                submitted[i] = (fut, f, model, deadline)

    indexed = list(enumerate(requests))
    workers = [threading.Thread(target=producer, args=(indexed[k::threads],)) for k in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(10)
    try:
        for i, (fut, f, model, deadline) in submitted.items():
            try:
                out = fut.result(timeout=10)
            except DeadlineExceeded:
                assert deadline is not None, f"request {i} had no deadline"
                assert i not in engine.ran, f"expired request {i} was run"
                continue
            assert deadline is None or deadline > 0, f"request {i} ran past an already-passed deadline"
            expected = ((f.astype(np.int32) + MODELS[model]) % 256).astype(np.uint8)
            np.testing.assert_array_equal(out, expected, err_msg=f"request {i} got someone else's result")
        assert len(submitted) + len(rejected) == len(requests)
        if queue_limit >= len(requests):
            assert not rejected
        for model, _shape, n in engine.batches:
            assert model in MODELS and 1 <= n <= max_batch
        assert sum(n for *_, n in engine.batches) == len(engine.ran)  # every frame ran at most once
        assert batcher.qsize() == 0
    finally:
        batcher.close(drain=False, timeout=5)
    assert not batcher.alive
