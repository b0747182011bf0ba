"""Rendezvous sharding of cameras (service/sharding.py): the three properties the fleet relies on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.sharding import Shard, ordinal, owner, resolve_shard, score

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.", min_size=1, max_size=64)
camera_sets = st.lists(names, min_size=1, max_size=40, unique=True)
counts = st.integers(min_value=1, max_value=16)
EIGHT = [f"cam-{i}" for i in range(8)]


@given(camera_sets, counts)
def test_exactly_one_shard_owns_each_camera(cameras: list[str], n: int) -> None:
    for cam in cameras:
        owners = [i for i in range(n) if Shard(i, n).owns(cam)]
        assert owners == [owner(cam, n)]


@given(camera_sets, counts)
def test_adding_a_replica_moves_cameras_only_to_it(cameras: list[str], n: int) -> None:
    for cam in cameras:
        before, after = owner(cam, n), owner(cam, n + 1)
        assert after in (before, n), f"{cam} moved {before} -> {after} when shard {n} was added"


@given(names, st.integers(min_value=2, max_value=64), st.data())
def test_hostname_ordinal_equals_explicit_index(cam: str, n: int, data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=n - 1))
    by_host = resolve_shard(n, None, f"vsr-{i}")
    by_host_fqdn = resolve_shard(n, None, f"vsr-{i}.vsr-cameras.default.svc.cluster.local")
    assert by_host == by_host_fqdn == resolve_shard(n, i, "unrelated-host") == Shard(i, n)
    assert by_host.owns(cam) == Shard(i, n).owns(cam)


def test_eight_cameras_three_to_four_replicas() -> None:
    """The issue's case, spelled out: every camera placed once; 3 -> 4 moves only the new replica's cameras."""
    three = {i: Shard(i, 3).select(EIGHT) for i in range(3)}
    four = {i: Shard(i, 4).select(EIGHT) for i in range(4)}
    assert sorted(c for cams in three.values() for c in cams) == sorted(EIGHT)
    assert sorted(c for cams in four.values() for c in cams) == sorted(EIGHT)
    for i in range(3):
        assert set(four[i]) <= set(three[i])
    moved = {c for c in EIGHT if owner(c, 3) != owner(c, 4)}
    assert moved == set(four[3])
    # not a degenerate hash: with 8 cameras no replica of three is left idle
    assert all(three.values())


def test_spread_is_roughly_even() -> None:
    cams = [f"site-a/cam-{i:04d}" for i in range(3000)]
    loads = [len(Shard(i, 6).select(cams)) for i in range(6)]
    assert min(loads) > 400 and max(loads) < 600, loads  # expected 500 each; binomial sd ~ 20


def test_stable_across_processes() -> None:
    """Python's hash() is salted per process; ours must not be: another interpreter computes the same owners."""
    code = "from service.sharding import owner; print([owner(f'cam-{i}', 5) for i in range(50)])"
    env = {"PYTHONHASHSEED": "12345", "PYTHONPATH": ":".join(sys.path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert out.strip() == str([owner(f"cam-{i}", 5) for i in range(50)])


def test_score_is_pinned() -> None:
    """A change of hash would reshuffle every camera of every fleet on upgrade: pin a few values."""
    assert score("cam-0", 0) == SCORE_CAM0_SHARD0
    assert [owner(c, 3) for c in EIGHT] == [1, 2, 0, 2, 0, 0, 1, 0]
    assert [owner(c, 4) for c in EIGHT] == [3, 2, 0, 2, 0, 0, 3, 0]


SCORE_CAM0_SHARD0 = 0x5CCCBC4C2FDB8098  # BLAKE2b-64 of b"0:cam-0"


@pytest.mark.parametrize(
    ("host", "expected"),
    [("vsr-0", 0), ("vsr-cameras-12", 12), ("vsr-3.vsr.ns.svc.cluster.local", 3), ("laptop", None), ("vsr-", None)],
)
def test_ordinal(host: str, expected: int | None) -> None:
    assert ordinal(host) == expected


def test_one_shard_needs_no_index() -> None:
    assert resolve_shard(1, None, "laptop") == Shard(0, 1)
    assert Shard().owns("anything")


def test_missing_index_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"VSR_SHARD_COUNT=3 needs .*VSR_SHARD_INDEX.*'laptop'"):
        resolve_shard(3, None, "laptop")


@pytest.mark.parametrize(("count", "index"), [(3, 3), (3, -1), (0, 0)])
def test_index_out_of_range_is_refused(count: int, index: int) -> None:
    with pytest.raises(ValueError, match="VSR_SHARD_COUNT"):
        Shard(index, count)


def test_scaled_statefulset_without_new_count_is_refused() -> None:
    """Pod vsr-3 of a StatefulSet scaled to 4 while VSR_SHARD_COUNT still says 3: refuse to start, loudly."""
    with pytest.raises(ValueError, match="scaled without updating VSR_SHARD_COUNT"):
        resolve_shard(3, None, "vsr-3")


def test_serve_refuses_a_bad_shard_with_one_line_and_exit_2() -> None:
    """What an operator sees: `vsr serve` exits 2 before loading anything, with one `error:` line naming the fix."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSR_")} | {
        "PYTHONPATH": ":".join(sys.path),
        "VSR_SHARD_COUNT": "3",
        "VSR_SHARD_INDEX": "7",  # explicit: a CI host name may itself end in -<ordinal>
    }
    r = subprocess.run(
        [sys.executable, "-m", "vsr_cli", "serve", "--port", "0"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "shard index 7 is outside 0..2" in lines[0], lines
