"""Video job state in SQLite (stdlib ``sqlite3``), one JSON document per job, beside the job files.

With ``VSR_VIDEO_JOBS_DIR`` set (a volume in compose) the database is ``jobs.sqlite3`` in that folder and a restart
finds every job again: finished results stay downloadable until their TTL, unfinished jobs are failed with the
reason (``service.videojobs``). Without it the database lives in memory, like the temporary job folder.

One connection shared by the request handlers and the ``video:{n}`` workers, serialised by a lock: a job changes
state a handful of times in its life, so contention is nil. WAL journaling keeps a crash from corrupting the file.
:func:`open_jobs_dir` proves the folder usable (``vsr serve`` calls it before any thread starts).
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

MEMORY = ":memory:"


class JobStore:
    def __init__(self, path: Path | str = MEMORY) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._closed = False
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != MEMORY:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")

    def save(self, doc: dict[str, Any]) -> None:
        """Record ``doc``; after :meth:`close`, nothing: a worker that outlived the shutdown's wait for it (a slow
        machine) must not fail on the closed database, and its job's last recorded state is what the next start
        resumes from."""
        with self._lock:
            if not self._closed:
                self._db.execute("INSERT OR REPLACE INTO jobs (id, doc) VALUES (?, ?)", (doc["id"], json.dumps(doc)))

    def delete(self, job_id: str) -> None:
        with self._lock:
            if not self._closed:
                self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def load(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM jobs").fetchall()
        return [json.loads(doc) for (doc,) in rows]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._db.close()


class JobsDirUnusable(Exception):
    """``VSR_VIDEO_JOBS_DIR`` cannot be created or written (a settings error: the service does not start)."""


def open_jobs_dir(path: str) -> Path:
    """The jobs folder, created (0700) if missing and proven writable. Raises :class:`JobsDirUnusable`.

    ``vsr serve`` calls it before any thread starts: failing later, in the lifespan, left the inference worker
    running into interpreter shutdown (``terminate called without an active exception``, SIGABRT)."""
    folder = Path(path)
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise JobsDirUnusable(f"VSR_VIDEO_JOBS_DIR: cannot use {path!r} as the jobs folder: {e.strerror}") from None
    return folder
