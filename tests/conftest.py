"""Fixtures shared by the test folders. Plain helpers are in ``tests/support/`` (import them from there; nothing
imports a ``conftest`` or a test module).

- ``one_thread``: torch on one thread for the test (use on anything that trains or runs many small forwards).
- ``tiny_artifact``: tiny x2 and x4 student artifacts, built once per session.
- ``live_server``: the one live-server fixture: ``live_server(**settings)`` -> the real app on a free loopback port
  (uvicorn in a thread), on the tiny x2 artifact, stopped after the test (``tests.support.live.serve``).
- ``rtsp_server`` / ``rtsp_server_factory``: a real loopback RTSP source (skips locally, fails in CI without it).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.support.env import export_tiny, require_or_skip
from tests.support.live import Server, base_settings, serve
from tests.support.rtsp import RtspServer, rtsp_server_available

# -- torch ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def one_thread():
    """Run torch on one thread for the test: tiny models gain nothing from two, and on a busy 2-core machine
    OpenMP spin-waiting makes two threads ~20x slower (measured here while training ran beside the tests)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- artifacts -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``{"x2": folder, "x4": folder}``: tiny RepStudent artifacts (random but non-trivial weights, seeded), whose
    output is far (~30 levels RMS) from nearest-neighbour and bicubic even after a lossy codec."""
    import torch

    from vsr.archs.student import RepStudent

    root = tmp_path_factory.mktemp("artifacts")
    out: dict[str, Path] = {}
    for scale in (2, 4):
        torch.manual_seed(scale)
        model = RepStudent(scale=scale, channels=8, depth=1, expand=0)
        with torch.no_grad():  # the tail starts at zero (pure anchor); perturb it so outputs depend on the body
            for p in model.tail.parameters():
                p.add_(0.01 * torch.randn_like(p))
            # ... and add a part shared by each colour's scale x scale sub-pixels: a residual as smooth as the image
            # (~30 levels RMS) that JPEG/H.264 keep, so codec paths can tell this model from nearest and bicubic
            # (the random part alone is a sub-pixel pattern that chroma subsampling wipes out). tests.support.reference
            w = model.tail.conv3.weight  # (3 * scale * scale, channels, 3, 3), PixelShuffle order (colour, i, j)
            tied = 0.1 * torch.randn(3, 1, *w.shape[1:])
            w.add_(tied.expand(3, scale * scale, *w.shape[1:]).reshape(w.shape))
        out[f"x{scale}"] = export_tiny(model, root / f"x{scale}")
    return out


@pytest.fixture(scope="session")
def tiny_luma_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny x2 luma student (one channel in and out, ``input_space: "y"``) whose output is far from nearest and
    bicubic, as :func:`tiny_artifact`'s."""
    import torch

    from vsr.archs.student import RepStudent

    torch.manual_seed(5)
    model = RepStudent(scale=2, channels=8, depth=1, expand=0, colors=1)
    with torch.no_grad():  # as tiny_artifact: a smooth residual that a codec keeps
        for p in model.tail.parameters():
            p.add_(0.01 * torch.randn_like(p))
        w = model.tail.conv3.weight  # (scale * scale, channels, 3, 3)
        w.add_((0.1 * torch.randn(1, *w.shape[1:])).expand_as(w))
    return export_tiny(model, tmp_path_factory.mktemp("luma") / "x2-luma-tiny")


# -- live servers --------------------------------------------------------------------------------------------------


@pytest.fixture
def live_server(tiny_artifact: dict[str, Path]) -> Iterator[Callable[..., Server]]:
    """``live_server(**settings)`` -> a started :class:`~tests.support.live.Server` on the tiny x2 artifact
    (settings: ``tests.support.live.base_settings`` plus the overrides); every one is stopped after the test."""
    with ExitStack() as stack:

        def make(**overrides: Any) -> Server:
            return stack.enter_context(serve(base_settings(tiny_artifact["x2"], **overrides)))

        yield make


@pytest.fixture
def rtsp_server_factory() -> Iterator[Callable[..., RtspServer]]:
    ok, why = rtsp_server_available()
    require_or_skip(ok, why)
    servers: list[RtspServer] = []

    def make(**kw: Any) -> RtspServer:
        srv = RtspServer(**kw)
        srv.start()
        servers.append(srv)
        return srv

    yield make
    for srv in servers:
        srv.stop()
        if srv.deaths:  # the test server itself crashed (it was restarted): worth seeing, not a failure of the code
            warnings.warn(f"RTSP test server on port {srv.port} died and was restarted: {srv.deaths}", stacklevel=1)


@pytest.fixture
def rtsp_server(rtsp_server_factory: Callable[..., RtspServer]) -> RtspServer:
    return rtsp_server_factory()
