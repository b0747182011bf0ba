"""A real loopback RTSP server (gst-rtsp-server under Debian's python3, ``tests/rtsp_server.py``).

It needs Debian packages (installed by ``.ci/run``); without them the tests that use it skip locally and FAIL in CI.
"""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path

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
    ``pattern``: GStreamer's videotestsrc pattern (:data:`STATIC_PATTERN` for tests that check pixels)."""

    def __init__(self, width: int = 160, height: int = 90, fps: int = 15, pattern: str = "smpte") -> None:
        self.port = free_port()
        self.args = ["--width", str(width), "--height", str(height), "--fps", str(fps), "--pattern", pattern]
        self.proc: subprocess.Popen[str] | None = None
        self.url = f"rtsp://127.0.0.1:{self.port}/test"

    def start(self, timeout: float = 15.0) -> None:
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), *self.args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        done = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                lines.append(line)
                if line.startswith(("READY", "FAILED")):
                    break
            done.set()

        threading.Thread(target=read, daemon=True).start()
        if not done.wait(timeout) or not lines or not lines[-1].startswith("READY"):
            err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
            self.stop()
            raise RuntimeError(f"RTSP server did not start: {lines} {err[-500:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)  # like a camera losing power: no RTSP TEARDOWN
            self.proc.wait(5)
        self.proc = None
