"""Recorded-video jobs: an upload becomes a job; ``video:{n}`` worker threads transcode it through the shared batcher.

Why jobs, not one long response: a long video takes minutes, longer than proxies and clients wait, and a job lets
the client poll progress and download the result when it is ready (``202`` + ``GET /jobs/{id}`` +
``GET /jobs/{id}/result``). Files live in one private folder (0700, files 0600); a job's files are
removed when it is deleted, fails or expires (``ttl_s`` after it finished). Job state is kept in SQLite
(``service.jobstore``): with ``VSR_VIDEO_JOBS_DIR`` (a volume) jobs survive a restart — results stay downloadable,
and an unfinished job (a kill, a power cut, a stop) resumes after its last durable segment (``vsr.segments``:
frames already encoded are not redone); a job whose upload is missing or changed on disk fails with the reason.
Without it the folder is temporary and removed at shutdown, and a stop fails unfinished jobs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import queue
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from service.batcher import QueueFull, SubmitFn
from service.jobstore import JobStore
from service.metrics import VIDEO_JOB_STATES, Metrics
from vsr.frames import FrameCaps
from vsr.segments import Segment, SegmentPlan, encode_segments, join_segments
from vsr.video import SAFE_INPUT_OPTIONS, EncodeOptions, VideoError, VideoInfo

log = logging.getLogger(__name__)

FRAME_TIMEOUT_S = 300.0  # a wedged worker fails the job instead of hanging it forever
STOPPED = "the service stopped before the job finished; upload the video again"
MISSING = "the uploaded video is missing from the jobs folder; upload the video again"
CHANGED = "the uploaded video changed on disk since the job started (corrupt or replaced); upload it again"


class TooManyJobs(Exception):
    """The job cap is reached."""


@dataclass(frozen=True)
class JobOptions:
    max_jobs: int = 8  # jobs kept at once (queued, running or finished and not yet expired)
    workers: int = 1
    ttl_s: float = 3600.0
    tmp_dir: str | None = None
    jobs_dir: str | None = None  # kept across restarts (files + jobs.sqlite3); None: a temporary folder
    segment_s: float = 10.0  # output seconds per durable segment (the work a crash can cost)
    encode: EncodeOptions = EncodeOptions()
    caps: FrameCaps = FrameCaps()  # checked on every decoded frame


@dataclass
class Job:
    id: str
    model: str
    scale: int
    info: VideoInfo
    in_path: Path
    out_path: Path
    state: str = "queued"  # queued | running | done | failed | cancelled
    frames_done: int = 0
    error: str | None = None
    audio: str | None = None
    notes: list[str] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    segments: list[Segment] = field(default_factory=list)  # durable output so far (in order)
    video_done: bool = False  # every frame is in a segment; only the join is left
    in_sha256: str | None = None  # of the upload, taken when the job first starts; checked when it resumes
    cancel: threading.Event = field(default_factory=threading.Event)

    _FIELDS = ("state", "frames_done", "error", "audio", "notes", "created", "finished", "video_done", "in_sha256")

    def to_doc(self) -> dict[str, Any]:
        """What the job store keeps (everything but the cancel event; fps as a fraction string)."""
        info = {**dataclasses.asdict(self.info), "fps": str(self.info.fps) if self.info.fps else None}
        return {
            **{k: getattr(self, k) for k in ("id", "model", "scale", *self._FIELDS)},
            "info": info,
            "in": str(self.in_path),
            "out": str(self.out_path),
            "segments": [dataclasses.asdict(s) for s in self.segments],
        }

    @classmethod
    def from_doc(cls, d: dict[str, Any]) -> Job:
        info = VideoInfo(**{**d["info"], "fps": Fraction(d["info"]["fps"]) if d["info"]["fps"] else None})
        job = cls(d["id"], d["model"], d["scale"], info, Path(d["in"]), Path(d["out"]))
        for k in cls._FIELDS:
            if k in d:  # documents of an earlier version lack the resume fields
                setattr(job, k, d[k])
        job.segments = [Segment(**s) for s in d.get("segments", [])]
        return job

    def describe(self) -> dict[str, Any]:
        total = self.info.expected_frames
        progress = 1.0 if self.state == "done" else (min(self.frames_done / total, 0.99) if total else None)
        return {
            "id": self.id,
            "state": self.state,
            "model": self.model,
            "progress": progress,
            "frames_done": self.frames_done,
            "frames_total": total,
            "input": {
                "width": self.info.width,
                "height": self.info.height,
                "fps": float(self.info.fps) if self.info.fps else None,
                "duration_s": self.info.duration_s,
                "audio_codec": self.info.audio_codec,
            },
            "output": {"width": self.info.width * self.scale, "height": self.info.height * self.scale},
            "audio": self.audio,
            "notes": self.notes,
            "error": self.error,
            "status_url": f"/jobs/{self.id}",
            "result_url": f"/jobs/{self.id}/result" if self.state == "done" else None,
        }


def batcher_upscale(submit: SubmitFn, model: str, stop: threading.Event) -> Callable[[np.ndarray], np.ndarray]:
    """An ``upscale(frames)`` for :func:`vsr.segments.encode_segments` that goes through the shared batcher.

    Video frames are not live: when the queue is full they wait and retry (live callers come first).
    """

    def run(frames: np.ndarray) -> np.ndarray:
        futures = []
        for f in frames:
            while True:
                if stop.is_set():
                    raise VideoError("cancelled")
                try:
                    futures.append(submit(np.ascontiguousarray(f), model=model, source="video"))
                    break
                except QueueFull as e:
                    stop.wait(min(max(e.retry_after_s, 0.05), 0.5) if e.retry_after_s else 0.05)
        try:
            return np.stack([fut.result(timeout=FRAME_TIMEOUT_S) for fut in futures])
        except TimeoutError:
            raise VideoError(f"the inference worker did not return a frame within {FRAME_TIMEOUT_S} s") from None

    return run


class JobManager:
    def __init__(self, submit: SubmitFn, opts: JobOptions = JobOptions(), metrics: Metrics | None = None) -> None:
        self.submit, self.opts, self.metrics = submit, opts, metrics
        if metrics is not None:  # read at scrape time: no gauge to keep in step with every state change
            for state in VIDEO_JOB_STATES:
                metrics.video_jobs.labels(state=state).set_function(functools.partial(self._count, state))
        if opts.jobs_dir:
            self.dir = Path(opts.jobs_dir)
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.store = JobStore(self.dir / "jobs.sqlite3")
        else:
            self.dir = Path(tempfile.mkdtemp(prefix="vsr-video-", dir=opts.tmp_dir))  # 0700
            self.store = JobStore()  # in memory: the folder goes at shutdown too
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._closing = False
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._restore()
        self._threads = [
            threading.Thread(target=self._work, name=f"video:{i}", daemon=True) for i in range(opts.workers)
        ]
        for t in self._threads:
            t.start()

    def new_file(self, suffix: str) -> Path:
        """A private (0600) empty file in the job folder; the caller removes it if no job takes it."""
        fd, name = tempfile.mkstemp(suffix=suffix, dir=self.dir)
        os.close(fd)
        return Path(name)

    def create(self, in_path: Path, info: VideoInfo, *, model: str, scale: int) -> Job:
        """Queue a job for the (already validated) upload at ``in_path``; the job owns the file from here."""
        self._expire()
        with self._lock:
            if len(self._jobs) >= self.opts.max_jobs:
                raise TooManyJobs(f"at most {self.opts.max_jobs} video jobs at once; delete finished ones")
            job = Job(uuid.uuid4().hex[:16], model, scale, info, in_path, self.new_file(".mp4"))
            self._jobs[job.id] = job
        self.store.save(job.to_doc())
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        self._expire()
        return self._jobs.get(job_id)

    def delete(self, job_id: str) -> bool:
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is None:
            return False
        self.store.delete(job_id)
        job.cancel.set()
        if job.state != "running":  # a running job's worker removes its files when it notices
            self._remove_files(job)
        return True

    def close(self) -> None:
        """Stop the workers. With a jobs folder every job stays for the next start (finished ones with their results,
        unfinished ones resume there); without one unfinished jobs fail ("the service stopped") and the folder goes."""
        self._closing = True
        with self._lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel.set()
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join(10)
        for job in jobs:
            if job.state == "queued" and not self.opts.jobs_dir:
                self._fail(job, STOPPED)
        with self._lock:
            self._jobs = {}
        self.store.close()
        if not self.opts.jobs_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _restore(self) -> None:
        """The jobs of an earlier run: finished ones come back as they were; unfinished ones (the process stopped or
        died while they ran) are queued again and resume after their last durable segment (a job whose upload is
        gone fails with the reason). Cheap checks only: this runs before the service is ready."""
        resumed = []
        for doc in self.store.load():
            job = Job.from_doc(doc)
            if job.state in ("queued", "running"):
                if job.in_path.is_file():
                    job.state = "queued"
                    resumed.append(job)
                else:
                    self._fail(job, MISSING)
            elif job.state == "done" and not job.out_path.is_file():
                self._fail(job, "the result file is missing from the jobs folder")
            self._jobs[job.id] = job
        if self._jobs:
            log.info("restored %d video job(s) from %s (%d to resume)", len(self._jobs), self.store.path, len(resumed))
        self._expire()
        for job in sorted(resumed, key=lambda j: j.created):
            self.store.save(job.to_doc())
            self._queue.put(job)

    def _fail(self, job: Job, reason: str) -> None:
        job.state, job.error, job.finished = "failed", reason, job.finished or time.time()
        self._remove_files(job)
        self.store.save(job.to_doc())

    def _remove_files(self, job: Job) -> None:
        _remove(job.in_path, job.out_path, *self.dir.glob(f"{job.id}.*.seg{job.out_path.suffix}"))

    def _count(self, state: str) -> int:
        return sum(1 for j in list(self._jobs.values()) if j.state == state)

    def _expire(self) -> None:
        now = time.time()
        with self._lock:
            old = [j for j in self._jobs.values() if j.finished and now - j.finished > self.opts.ttl_s]
            for j in old:
                del self._jobs[j.id]
        for j in old:
            self._remove_files(j)
            self.store.delete(j.id)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            if job.cancel.is_set():
                continue
            self._run(job)

    def _run(self, job: Job) -> None:
        job.state, started = "running", time.time()
        self.store.save(job.to_doc())
        try:
            self._transcode(job)
            job.state = "done"
        except Exception as e:  # noqa: BLE001 - any failure ends this job only
            if self._closing and self.opts.jobs_dir and job.id in self._jobs:
                job.state = "queued"  # stopped, not failed: it resumes at the next start
                self.store.save(job.to_doc())
                return
            job.state = "cancelled" if job.cancel.is_set() and not self._closing else "failed"
            job.error = (
                STOPPED if self._closing else str(e) if isinstance(e, VideoError) else f"{type(e).__name__}: {e}"
            )
            log.warning("video job %s %s: %s", job.id, job.state, job.error)
            self._remove_files(job)
        job.finished = time.time()
        if self.metrics is not None:
            self.metrics.video_jobs_finished.labels(outcome=job.state).inc()
            self.metrics.video_job_duration.observe(job.finished - started)
        if job.id not in self._jobs and not self._closing:  # deleted while running
            self._remove_files(job)
        else:
            _remove(job.in_path, *self.dir.glob(f"{job.id}.*.seg{job.out_path.suffix}"))  # kept: the result only
            self.store.save(job.to_doc())

    def _transcode(self, job: Job) -> None:
        """Encode the frames not yet in a durable segment (each segment recorded as it closes), then join."""
        digest = _sha256(job.in_path)
        if job.in_sha256 is not None and digest != job.in_sha256:
            raise VideoError(CHANGED)
        if job.in_sha256 is None:
            job.in_sha256 = digest
            self.store.save(job.to_doc())
        if job.segments and not all(s.intact() for s in job.segments):
            job.segments, job.video_done = [], False
            job.notes.append("a recorded segment was missing or damaged; restarted from the first frame")
        elif job.segments:
            job.notes.append(f"resumed after a restart at frame {sum(s.frames for s in job.segments)}")
        job.frames_done = sum(s.frames for s in job.segments)
        if not job.video_done:
            job.notes += encode_segments(
                job.in_path,
                batcher_upscale(self.submit, job.model, job.cancel),
                scale=job.scale,
                plan=self._plan(job),
                done=list(job.segments),
                opts=self.opts.encode,
                progress=lambda done, _total: setattr(job, "frames_done", done),
                should_stop=job.cancel.is_set,
                input_options=SAFE_INPUT_OPTIONS,
                caps=self.opts.caps,
            )
            job.video_done = True
            self.store.save(job.to_doc())
        job.audio, notes = join_segments(job.segments, job.in_path, job.out_path, input_options=SAFE_INPUT_OPTIONS)
        job.notes += notes
        job.frames_done = sum(s.frames for s in job.segments)

    def _plan(self, job: Job) -> SegmentPlan:
        fps = float(job.info.fps) if job.info.fps else 25.0

        def new_path(k: int) -> Path:
            path = self.dir / f"{job.id}.{k:05d}.seg{job.out_path.suffix}"
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600))  # a torn earlier try is replaced
            return path

        def commit(seg: Segment) -> None:
            job.segments.append(seg)
            self.store.save(job.to_doc())  # the segment is durable from here on

        return SegmentPlan(max(1, round(self.opts.segment_s * fps)), new_path, commit)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _remove(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()
