"""Recording a stream's source frames to the clips folder (``VSR_CLIPS_DIR``), the footage ``vsr adapt`` learns from.

``POST /stream/{id}/record {"seconds": N}`` starts a :class:`Recorder`: the stream's reader hands it every decoded
source frame (``offer`` never blocks: a full queue drops the frame and counts it, like every other consumer of a
stream); its own thread (``record:{name}``) encodes them as H.264 (CRF 18, the source's frame rate) into
``<stream>-<UTC time>.mp4.part`` and renames it to ``.mp4`` at the end, so ``vsr adapt`` never reads half a file.
It ends after N seconds of frames, when the stream stops, or when the clips folder reaches its disk cap
(``VSR_CLIPS_MAX_MB``; checked after every frame, so it overshoots by at most one frame). The check counts the
encoder's packets, not the file's size on disk: x264's lookahead and frame threads hold a CPU-dependent number of
frames (16 on one CI machine, 650 kB of a noisy 320x240 camera) that a size-on-disk check never saw until the
final flush. ``tune=zerolatency`` empties the encoder on every frame (no lookahead, no B-frames, sliced threads) at
somewhat more bytes for the same CRF, which a near-lossless training recording can afford.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import av

from vsr.frames import Frame

log = logging.getLogger(__name__)

QUEUE_FRAMES = 30  # decoded frames waiting for the encoder (~1 s of a 30 fps camera)
CRF = 18  # near-transparent: the recording is the HR truth of training
RecordState = Literal["recording", "done", "capped", "stopped", "failed"]


class ClipsFull(Exception):
    """The clips folder is at its disk cap."""


class RecordingBusy(Exception):
    """The stream is already recording."""


class RecordingOff(Exception):
    """No clips folder is configured (``VSR_CLIPS_DIR``)."""


@dataclass
class RecordInfo:
    file: str
    state: RecordState
    seconds: float
    frames: int
    bytes: int
    dropped: int
    error: str | None


class ClipStore:
    """The clips folder and its disk cap (every file in it counts, recordings in progress included)."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder, self.max_bytes = folder, max_bytes
        folder.mkdir(parents=True, exist_ok=True)

    def used(self) -> int:
        total = 0
        for p in self.folder.iterdir():
            with contextlib.suppress(OSError):  # a recording renamed between listing and stat
                total += p.stat().st_size if p.is_file() else 0
        return total

    def full(self, pending: int = 0) -> bool:
        """At the cap, counting ``pending`` bytes a recording has produced but not yet written."""
        return self.used() + pending >= self.max_bytes

    def new_path(self, stream: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", stream)[:64] or "stream"
        return self.folder / f"{safe}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.mp4"


class Recorder:
    """One recording of one stream (see the module docstring)."""

    def __init__(self, name: str, store: ClipStore, *, seconds: float, fps: float | None) -> None:
        if store.full():
            raise ClipsFull(f"the clips folder is full ({store.used() >> 20} of {store.max_bytes >> 20} MiB)")
        self.name, self.store, self.seconds = name, store, seconds
        self.fps = fps if fps and 1 <= fps <= 240 else 25.0
        self.path = store.new_path(name)
        self.part = self.path.with_name(self.path.name + ".part")
        self.state: RecordState = "recording"
        self.frames = self.dropped = self.bytes = 0
        self.error: str | None = None
        self._queue: queue.Queue[Frame | None] = queue.Queue(QUEUE_FRAMES)
        self._thread = threading.Thread(target=self._run, name=f"record:{name}", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return self.state == "recording"

    def offer(self, frame: Frame) -> None:
        """From the stream's reader thread: queue the frame, or drop it when the encoder is behind."""
        if not self.active:
            return
        try:
            self._queue.put_nowait(frame)
        except queue.Full:
            self.dropped += 1

    def stop(self) -> None:
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        if self.active:
            self.state = "stopped"

    def join(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def info(self) -> RecordInfo:
        size = 0
        for p in (self.part, self.path):
            with contextlib.suppress(OSError):
                size = p.stat().st_size
        return RecordInfo(self.path.name, self.state, self.seconds, self.frames, size, self.dropped, self.error)

    def _run(self) -> None:
        try:
            self._record()
        except Exception as e:  # noqa: BLE001 - a failed recording must not touch the stream
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"
            log.warning("recording of %s failed: %s", self.name, self.error)
        if self.part.exists():
            self.part.replace(self.path)
        log.info("recording of %s %s: %d frames -> %s", self.name, self.state, self.frames, self.path.name)

    def _on_disk(self) -> int:
        try:
            return self.part.stat().st_size
        except OSError:
            return 0

    def _record(self) -> None:
        limit = max(1, round(self.seconds * self.fps))
        out: Any = None
        stream: Any = None
        try:
            while self.frames < limit:
                try:
                    frame = self._queue.get(timeout=1.0)
                except queue.Empty:
                    if self.active:
                        continue
                    break
                if frame is None:
                    break
                vf = frame if isinstance(frame, av.VideoFrame) else av.VideoFrame.from_ndarray(frame, format="rgb24")
                if out is None:  # opened on the first frame: its size is the recording's
                    out = av.open(str(self.part), "w", format="mp4")
                    stream = out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
                    stream.width, stream.height = vf.width - vf.width % 2, vf.height - vf.height % 2
                    stream.pix_fmt = "yuv420p"
                    stream.codec_context.options = {"crf": str(CRF), "preset": "veryfast", "tune": "zerolatency"}
                vf = vf.reformat(width=stream.width, height=stream.height, format="yuv420p")
                vf.pts, vf.time_base = self.frames, 1 / Fraction(stream.codec_context.rate)
                packets = stream.encode(vf)
                self.bytes += sum(p.size for p in packets)
                out.mux(packets)
                self.frames += 1
                if self.store.full(pending=max(0, self.bytes - self._on_disk())):
                    self.state = "capped"
                    break
        finally:
            if out is not None:
                out.mux(stream.encode(None))
                out.close()
        if self.frames == 0:
            self.state, self.error = "failed", "no frame arrived"
        elif self.state == "recording":
            self.state = "done"
