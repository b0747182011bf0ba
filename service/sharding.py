"""Which replica runs which camera: rendezvous (highest-random-weight) hashing of the camera's name.

Every replica scores every camera against every shard index with a stable hash and keeps the cameras whose top
score is its own index. No coordination, no shared state: each replica decides alone and they all agree. Going from
N to N+1 replicas moves exactly the cameras whose top score is now the new index — each to the new replica, none
between old ones (a modulo hash would move about N/(N+1) of them).

The hash is BLAKE2b over the bytes, never Python's ``hash()`` (salted per process: replicas would disagree).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass

# A StatefulSet pod is named <statefulset>-<ordinal>, and that is its host name: "vsr-3" is shard 3.
_ORDINAL = re.compile(r"-(\d+)$")


def score(key: str, index: int) -> int:
    """The weight of shard ``index`` for ``key``: 64 bits of BLAKE2b, the same in every process and on every host."""
    digest = hashlib.blake2b(f"{index}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, count: int) -> int:
    """The shard (0..count-1) that runs ``key``: the one with the highest score (ties go to the lowest index)."""
    if count < 1:
        raise ValueError(f"shard count must be >= 1, got {count}")
    return max(range(count), key=lambda i: (score(key, i), -i))


@dataclass(frozen=True)
class Shard:
    """This replica's place: shard ``index`` of ``count``. ``Shard()`` (1 of 1) owns everything."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise ValueError(f"VSR_SHARD_COUNT must be >= 1, got {self.count}")
        if not 0 <= self.index < self.count:
            raise ValueError(
                f"shard index {self.index} is outside 0..{self.count - 1} (VSR_SHARD_COUNT={self.count}); "
                "was the StatefulSet scaled without updating VSR_SHARD_COUNT?"
            )

    def owner(self, key: str) -> int:
        return 0 if self.count == 1 else owner(key, self.count)

    def owns(self, key: str) -> bool:
        return self.owner(key) == self.index

    def select(self, keys: Iterable[str]) -> list[str]:
        """The keys this shard runs, in their given order."""
        return [k for k in keys if self.owns(k)]


def ordinal(hostname: str) -> int | None:
    """The StatefulSet ordinal at the end of a host name (``vsr-3`` -> 3, ``vsr-3.vsr.ns.svc`` -> 3), else None."""
    m = _ORDINAL.search(hostname.split(".", 1)[0])
    return int(m.group(1)) if m else None


def resolve_shard(count: int, index: int | None, hostname: str) -> Shard:
    """The shard from ``VSR_SHARD_COUNT`` and ``VSR_SHARD_INDEX``, else the host name's ordinal.

    Raises ValueError with a message meant for the operator when count > 1 and neither gives an index.
    """
    if index is None and count > 1:
        index = ordinal(hostname)
        if index is None:
            raise ValueError(
                f"VSR_SHARD_COUNT={count} needs this replica's index: set VSR_SHARD_INDEX (0..{count - 1}), or run "
                f"where the host name ends in -<ordinal> like a StatefulSet pod (vsr-0); host name {hostname!r} does not"
            )
    return Shard(index or 0, count)
