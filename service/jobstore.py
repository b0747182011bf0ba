"""Video job state in SQLite (stdlib ``sqlite3``), one JSON document per job, beside the job files.

With ``VSR_VIDEO_JOBS_DIR`` set (a volume in compose) the database is ``jobs.sqlite3`` in that folder and a restart
finds every job again: finished results stay downloadable until their TTL, unfinished jobs are failed with the
reason (``service.videojobs``). Without it the database lives in memory, like the temporary job folder.

One connection shared by the request handlers and the ``video:{n}`` workers, serialised by a lock: a job changes
state a handful of times in its life, so contention is nil. WAL journaling keeps a crash from corrupting the file.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

MEMORY = ":memory:"


class JobStore:
    def __init__(self, path: Path | str = MEMORY) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        if self.path != MEMORY:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, doc TEXT NOT NULL)")

    def save(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO jobs (id, doc) VALUES (?, ?)", (doc["id"], json.dumps(doc)))

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def load(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT doc FROM jobs").fetchall()
        return [json.loads(doc) for (doc,) in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()
