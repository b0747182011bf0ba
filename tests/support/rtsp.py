"""A real loopback RTSP server (gst-rtsp-server under Debian's python3, ``tests/rtsp_server.py``).

It needs Debian packages (installed by ``.ci/run``); without them the tests that use it skip locally and FAIL in CI.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from collections import deque
from pathlib import Path
from typing import IO

import av
import numpy as np

from tests.support.env import REPO
from tests.support.live import free_port

SERVER_SCRIPT = REPO / "tests" / "rtsp_server.py"
SYSTEM_PYTHON = "/usr/bin/python3"


def rtsp_server_available() -> tuple[bool, str]:
    if not Path(SYSTEM_PYTHON).exists():
        return False, f"{SYSTEM_PYTHON} missing"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0');"
        "from gi.repository import Gst, GstRtspServer; Gst.init(None);"
        "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
        "('videotestsrc', 'x264enc', 'rtph264pay')) else 3)"
    )
    r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        return False, "gst-rtsp-server / GStreamer plugins missing (see APT_PKGS in .ci/run): " + r.stderr[-300:]
    return True, ""


STATIC_PATTERN = "smpte100"  # colour bars with nothing moving (the default "smpte" has a block of random snow)


def grab_frames(url: str, n: int = 1, timeout: float = 10.0) -> list[np.ndarray]:
    """The first ``n`` frames of an RTSP source, decoded here with PyAV (uint8 RGB HWC): what a camera sends, read
    outside the service (with a static pattern, the frame the service upscaled up to H.264's noise)."""
    frames: list[np.ndarray] = []
    with av.open(url, options={"rtsp_transport": "tcp"}, timeout=timeout) as c:
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if len(frames) >= n:
                break
    return frames


class RtspServer:
    """One ``tests/rtsp_server.py`` process on a fixed port; ``stop()`` kills it, ``start()`` brings it back.
    ``pattern``: GStreamer's videotestsrc pattern (:data:`STATIC_PATTERN` for tests that check pixels).

    If the process dies while it should be serving (a GStreamer crash, seen once in CI as "connection refused" for a
    whole test), a watchdog starts it again on the same port, like a camera that reboots, and keeps the exit status and
    the last lines it wrote in ``deaths`` (the fixture reports them as a warning). Both pipes are drained all the time:
    an unread stderr pipe that fills would stall the server's main loop."""

    def __init__(self, width: int = 160, height: int = 90, fps: int = 15, pattern: str = "smpte") -> None:
        self.port = free_port()
        self.args = ["--width", str(width), "--height", str(height), "--fps", str(fps), "--pattern", pattern]
        self.proc: subprocess.Popen[str] | None = None
        self.url = f"rtsp://127.0.0.1:{self.port}/test"
        self.deaths: list[str] = []
        self._lines: deque[str] = deque(maxlen=40)
        self._wanted = threading.Event()  # set while the server should be up: the watchdog restarts it then
        self._lock = threading.Lock()

    def start(self, timeout: float = 15.0) -> None:
        with self._lock:
            self._spawn(timeout)
            self._wanted.set()
        threading.Thread(target=self._watch, args=(self.proc,), daemon=True).start()

    def _spawn(self, timeout: float) -> None:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), *self.args]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.proc = proc
        ready = threading.Event()

        def drain(pipe: IO[str]) -> None:
            for line in pipe:
                self._lines.append(line.rstrip())
                if line.startswith(("READY", "FAILED")):
                    ready.set()
            ready.set()  # EOF: the process is gone

        assert proc.stdout is not None and proc.stderr is not None
        for pipe in (proc.stdout, proc.stderr):
            threading.Thread(target=drain, args=(pipe,), daemon=True).start()
        if not ready.wait(timeout) or not any(x.startswith("READY") for x in self._lines):
            lines = list(self._lines)
            self._kill(proc)
            raise RuntimeError(f"RTSP server did not start: {lines[-10:]}")

    def _watch(self, proc: subprocess.Popen[str]) -> None:
        while True:
            rc = proc.wait()
            with self._lock:
                if not self._wanted.is_set() or self.proc is not proc:
                    return  # stopped on purpose, or already replaced by start()
                self.deaths.append(f"exit status {rc}; last lines: {list(self._lines)[-10:]}")
                try:
                    self._spawn(15.0)
                except RuntimeError as e:
                    self.deaths.append(f"restart failed: {e}")
                    return
                assert self.proc is not None
                proc = self.proc

    def stop(self) -> None:
        with self._lock:
            self._wanted.clear()
            if self.proc is not None:
                self._kill(self.proc)
            self.proc = None

    @staticmethod
    def _kill(proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # like a camera losing power: no RTSP TEARDOWN
            proc.wait(5)
