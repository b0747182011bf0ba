"""A fleet on loopback: replicas of the service sharing 8 looping file cameras through rendezvous sharding.

3 replicas -> each camera runs on exactly one; a replica killed and restarted gets the same cameras back; going to
4 replicas moves only the cameras the new replica takes. One scenario, two kinds of replica:

- in-process (default): the app ``vsr serve`` runs, on uvicorn in a thread, each on its own loopback port. A start
  costs ~0.1 s of CPU, so the scenario stays well under a minute on a loaded 2-core machine.
- ``slow``: real ``vsr serve`` processes, killed with SIGKILL and stopped with SIGTERM. Each start imports torch
  (~2.3 s of CPU, measured); 8 starts took 115 s of wall time at load average 6-12 on the shared 2-core machine.

Cheap either way: a tiny model, 32x24 cameras at 2 fps (an 8 s loop), one torch thread, no warm-up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import av
import httpx
import numpy as np
import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from service.app import create_app
from service.settings import Settings
from service.sharding import Shard
from tests.support.env import REPO
from tests.support.live import free_port, wait_ready

CAMERAS = [f"cam-{i}" for i in range(8)]


def tiny_camera(path: Path, frames: int = 16, fps: int = 2) -> Path:
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for i in range(frames):
            img = np.full((24, 32, 3), 15 * i, dtype=np.uint8)
            out.mux(s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        out.mux(s.encode())
    return path


class Replica(Protocol):
    index: int
    count: int
    base: str

    def wait_ready(self) -> Replica: ...
    def kill(self) -> None: ...  # gone at once, no goodbye
    def stop(self) -> None: ...  # graceful; wait_exit() says how it ended
    def wait_exit(self) -> int: ...


class ProcessReplica:
    """One ``vsr serve`` process: shard ``index`` of ``count``, on a free loopback port."""

    def __init__(self, index: int, count: int, env: dict[str, str], log: Path) -> None:
        self.index, self.count, self.log = index, count, log
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = env | {"VSR_SHARD_COUNT": str(count), "VSR_SHARD_INDEX": str(index)}
        cmd = [sys.executable, "-m", "vsr_cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        with log.open("w") as fh:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)

    def wait_ready(self) -> ProcessReplica:
        wait_ready(
            self.base, timeout=90, alive=lambda: self.proc.poll() is None, describe=lambda: self.log.read_text()[-2000:]
        )
        return self

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def wait_exit(self) -> int:
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(5)


class ThreadReplica:
    """The same app on uvicorn in a thread of this process (what ``vsr serve`` runs, without the interpreter start)."""

    def __init__(self, index: int, count: int, env: dict[str, str], log: Path) -> None:
        self.index, self.count = index, count
        fields = {k.removeprefix("VSR_").lower(): v for k, v in env.items() if k.startswith("VSR_")}
        settings = Settings(**fields, shard_count=count, shard_index=index)  # type: ignore[arg-type]
        self.app = create_app(settings, registry=CollectorRegistry())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(self.app, log_config=None, timeout_graceful_shutdown=1, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()

    def wait_ready(self) -> ThreadReplica:
        wait_ready(self.base, timeout=90, alive=self.thread.is_alive)
        return self

    def kill(self) -> None:
        # A thread cannot die like a process; uvicorn's force_exit would skip the lifespan shutdown and leave this
        # replica's stream and batcher threads running for the rest of the session. Stop it (SIGKILL: `slow`).
        self.stop()
        self.wait_exit()

    def stop(self) -> None:
        self.server.should_exit = True

    def wait_exit(self) -> int:
        self.thread.join(15)
        return 1 if self.thread.is_alive() else 0


def streams(r: Replica) -> dict[str, dict[str, Any]]:
    body = httpx.get(f"{r.base}/stream", timeout=5).json()
    assert body["shard"] == {"index": r.index, "count": r.count}
    return {s["name"]: s for s in body["streams"]}


def cameras(r: Replica) -> set[str]:
    return set(streams(r))


Start = Callable[[list[int], int], list[Replica]]


@pytest.fixture(
    params=[
        pytest.param(ThreadReplica, id="in-process"),
        pytest.param(ProcessReplica, id="processes", marks=pytest.mark.slow),
    ]
)
def fleet(request: pytest.FixtureRequest, tmp_path: Path, tiny_artifact: dict[str, Path]) -> Iterator[Start]:
    """``start(indices, count)`` -> ready replicas (started in parallel); every replica is stopped afterwards."""
    kind: type[ThreadReplica] | type[ProcessReplica] = request.param
    video = tiny_camera(tmp_path / "camera.mp4")
    cams = tmp_path / "cameras.yml"
    cams.write_text(json.dumps({"streams": [{"name": c, "url": f"file://{video}"} for c in CAMERAS]}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSR_")} | {
        "VSR_MODELS": str(tiny_artifact["x2"]),
        "VSR_DEVICE": "cpu",
        "VSR_DTYPE": "fp32",
        "VSR_WARMUP": "false",
        "VSR_TILE_SIZE": "0",
        "VSR_STREAMS_FILE": str(cams),
        "VSR_STREAM_ALLOW_FILE": "true",
        "VSR_MAX_STREAMS": str(len(CAMERAS)),
        "OMP_NUM_THREADS": "1",  # 2 cores, up to 4 replicas: no OpenMP spinning against each other
    }
    replicas: list[Replica] = []
    runs = iter(range(1000))

    def start(indices: list[int], count: int) -> list[Replica]:
        new = [kind(i, count, env, tmp_path / f"replica-{i}-of-{count}-{next(runs)}.log") for i in indices]
        replicas.extend(new)
        with ThreadPoolExecutor(len(new)) as pool:
            return list(pool.map(lambda r: r.wait_ready(), new))

    yield start
    for r in replicas:
        r.kill()


def wait_frames(replicas: list[Replica], timeout: float = 30.0) -> None:
    """Every camera a replica lists is really running: it has upscaled frames."""
    end = time.monotonic() + timeout
    idle: list[str] = []
    while time.monotonic() < end:
        idle = [f"{r.index}:{n}" for r in replicas for n, s in streams(r).items() if s["frames_out"] == 0]
        if not idle:
            return
        time.sleep(0.25)
    raise AssertionError(f"streams without an upscaled frame after {timeout} s: {idle}")


def test_fleet_shards_cameras_restarts_and_scales(fleet: Start) -> None:
    three = fleet([0, 1, 2], 3)
    placed = {r.index: cameras(r) for r in three}
    # exactly one owner per camera, and the one the pure function names
    assert sorted(c for cams in placed.values() for c in cams) == sorted(CAMERAS)
    assert placed == {i: set(Shard(i, 3).select(CAMERAS)) for i in range(3)}
    wait_frames(three)

    # a camera POSTed to a replica that does not own it: 409 naming the owner, and nothing started
    owner, other = next((i, (i + 1) % 3) for i in range(3) if placed[i])
    cam = sorted(placed[owner])[0]
    r = httpx.post(f"{three[other].base}/stream", json={"name": cam, "url": "file:///dev/null"}, timeout=10)
    assert r.status_code == 409 and r.json()["error"]["code"] == "wrong_shard", r.text
    assert f"shard {owner} of 3" in r.json()["error"]["message"] and r.headers["x-shard-owner"] == str(owner)
    assert cameras(three[other]) == placed[other]

    # replica `owner` dies and comes back with the same index: same cameras, running again
    three[owner].kill()
    (back,) = fleet([owner], 3)
    assert cameras(back) == placed[owner]
    wait_frames([back])

    # scale 3 -> 4: every replica restarts with the new count (as a StatefulSet rollout does); only the new
    # replica's cameras moved, each from where it was
    survivors = [r for r in three if r.index != owner] + [back]
    for old in survivors:
        old.stop()
    assert [old.wait_exit() for old in survivors] == [0, 0, 0]  # graceful stops
    four = fleet([0, 1, 2, 3], 4)
    after = {r.index: cameras(r) for r in four}
    assert sorted(c for cams in after.values() for c in cams) == sorted(CAMERAS)
    for i in range(3):
        assert after[i] <= placed[i], f"replica {i} gained {after[i] - placed[i]} on scale-up"
    moved = {c for c in CAMERAS if c not in after[next(i for i in range(3) if c in placed[i])]}
    assert moved == after[3]
    wait_frames(four)
