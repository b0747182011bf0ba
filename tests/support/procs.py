"""Process resources read from ``/proc`` (threads, open fds, RSS) and the temporary directory's entries."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path


def rss_bytes(pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def thread_count(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def temp_entries() -> set[str]:
    """Names in the temporary directory (uploads, spooled multipart parts and video jobs live there)."""
    return set(os.listdir(tempfile.gettempdir()))


@dataclass
class Resources:
    rss: int
    fds: int
    threads: int

    @classmethod
    def now(cls, pid: int | str = "self") -> Resources:
        return cls(rss_bytes(pid), open_fds(pid), thread_count(pid))
