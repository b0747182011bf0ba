"""Which replica runs which camera, and what moves on a scale event: a dry run of the service's own sharding.

    python scripts/shard_plan.py deploy/k8s/cameras.yaml 3        # the placement on 3 replicas
    python scripts/shard_plan.py cameras.yml 3 4                   # ... and what moves going from 3 to 4

The cameras file is what VSR_STREAMS_FILE takes (a list, or {streams: [...]}); a Kubernetes ConfigMap holding it
under ``cameras.yml`` works too. Placement is deterministic (rendezvous hashing of the names), so this is exactly
what the replicas will do: use it to check the busiest replica against VSR_MAX_STREAMS before scaling.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.sharding import Shard  # noqa: E402  (the repo on the path first, like the other scripts)
from service.streams.config import load_stream_specs  # noqa: E402
from service.streams.manager import camera_key  # noqa: E402


def camera_names(path: Path) -> list[str]:
    data = yaml.safe_load(path.read_text())
    if isinstance(data, dict) and data.get("kind") == "ConfigMap":
        data = yaml.safe_load(data["data"]["cameras.yml"])
    if isinstance(data, dict):
        data = data.get("streams") or []
    return [camera_key(spec) for spec in load_stream_specs(data, None)]


def placement(cameras: list[str], n: int) -> dict[int, list[str]]:
    return {i: Shard(i, n).select(cameras) for i in range(n)}


def plan(cameras: list[str], counts: list[int]) -> str:
    lines = []
    for n in counts:
        shards = placement(cameras, n)
        busiest = max(len(c) for c in shards.values())
        lines.append(f"{len(cameras)} cameras on {n} replicas (busiest runs {busiest}):")
        lines += [f"  vsr-cameras-{i}: {len(c):3d}  {', '.join(c)}" for i, c in shards.items()]
    for a, b in zip(counts, counts[1:], strict=False):
        before, after = placement(cameras, a), placement(cameras, b)
        owner_a = {c: i for i, cams in before.items() for c in cams}
        moved = [(c, owner_a[c], j) for j, cams in after.items() for c in cams if owner_a[c] != j]
        lines.append(f"{a} -> {b}: {len(moved)} of {len(cameras)} cameras move")
        lines += [f"  {c}: {i} -> {j}" for c, i, j in moved]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("cameras", type=Path, help="cameras file (VSR_STREAMS_FILE format) or the cameras ConfigMap")
    p.add_argument("replicas", type=int, nargs="+", help="replica counts, e.g. 3 4")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.replicas):
        p.error("replica counts must be >= 1")
    try:
        cameras = camera_names(args.cameras)
    except (OSError, KeyError, yaml.YAMLError, ValueError) as e:  # pydantic's ValidationError is a ValueError
        sys.stderr.write(f"error: {args.cameras}: {str(e).splitlines()[0]}\n")
        return 2
    sys.stdout.write(plan(cameras, args.replicas) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
