"""Logs: one JSON object per line off a terminal (tracebacks and uvicorn's access fields inside), text on one,
``VSR_LOG_FORMAT``/``--log-format`` to force either — and a real ``vsr serve`` run whose every line parses."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.env import REPO
from tests.support.live import free_port, wait_ready, wait_until
from tests.support.timing import stretch
from vsr import logs


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    # An earlier in-process `vsr` main() left warnings captured, with pytest's per-test recorder installed since:
    # start from "not captured" so configure() hooks the current showwarning, as in a fresh process.
    logging.captureWarnings(False)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


def lines(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if line]


def test_json_off_a_terminal_with_the_traceback_in_a_field(restore_logging: None) -> None:
    buf = io.StringIO()
    assert logs.configure("INFO", None, buf) == "json"
    log = logging.getLogger("vsr.test")
    try:
        raise RuntimeError("boom\nsecond line")
    except RuntimeError:
        log.exception('failed "%s"', "quoted")
    log.info("extra", extra={"stream": "gate-1"})
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated thing", DeprecationWarning, stacklevel=1)
    records = [json.loads(line) for line in lines(buf)]  # every line is one object
    assert len(records) == 3
    first = records[0]
    assert first["level"] == "ERROR" and first["logger"] == "vsr.test" and first["message"] == 'failed "quoted"'
    assert "Traceback" in first["exc_info"] and "RuntimeError: boom\nsecond line" in first["exc_info"]
    assert first["time"].startswith(time.strftime("%Y-"))
    assert records[1]["stream"] == "gate-1"
    assert records[2]["logger"] == "py.warnings" and "deprecated thing" in records[2]["message"]


def test_uvicorn_access_lines_carry_fields(restore_logging: None) -> None:
    buf = io.StringIO()
    logs.configure("INFO", "json", buf)
    logging.getLogger("uvicorn.access").info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5", "GET", '/a"b', "1.1", 404)
    rec = json.loads(lines(buf)[0])
    assert (rec["client"], rec["method"], rec["path"], rec["status"]) == ("127.0.0.1:5", "GET", '/a"b', 404)


def test_text_on_a_terminal_and_forced_formats(restore_logging: None) -> None:
    tty = Tty()
    assert logs.configure("INFO", "auto", tty) == "text"
    logging.getLogger("vsr.test").warning("hello")
    assert " WARNING vsr.test: hello" in tty.getvalue()
    assert logs.configure("INFO", "json", Tty()) == "json"
    assert logs.configure("INFO", "TEXT", io.StringIO()) == "text"
    with pytest.raises(ValueError, match="log format"):
        logs.configure("INFO", "xml", io.StringIO())
    with pytest.raises(ValueError, match="log level"):
        logs.configure("LOUD", "json", io.StringIO())


# ---- a real `vsr serve` ------------------------------------------------------------------------------------------


def serve(artifact: Path, port: int, **env: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "vsr_cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--models", str(artifact), "--device", "cpu"]
    environ = {k: v for k, v in os.environ.items() if k != "VSR_LOG_FORMAT"} | env
    return subprocess.Popen(cmd, cwd=REPO, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_every_line_of_a_serve_run_is_json(tiny_artifact: dict[str, Path]) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    dead = free_port()  # nothing listens there: the stream fails and retries
    streams = json.dumps([{"url": f"rtsp://127.0.0.1:{dead}/cam", "name": "dead-cam"}])
    env = {"VSR_STREAMS": streams, "VSR_STREAM_ALLOW_CIDRS": "127.0.0.0/8", "VSR_STREAM_MAX_ATTEMPTS": "2"}
    proc = serve(tiny_artifact["x2"], port, **env)
    try:
        wait_ready(base, alive=lambda: proc.poll() is None)
        assert httpx.post(f"{base}/upscale", content=b"junk", headers={"content-type": "image/png"}).status_code == 400
        assert httpx.get(f'{base}/v2/models/x"8').status_code == 404
        with socket.create_connection(("127.0.0.1", port)) as s:  # uvicorn's own warning: invalid HTTP
            s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            s.recv(1024)
        clash = serve(tiny_artifact["x2"], port)  # the port is taken: uvicorn logs an error and exits 1
        clash_out, _ = clash.communicate(timeout=60)
        assert clash.returncode != 0
        # the dead stream's retries end in "failed" (its log line is asserted below)
        assert wait_until(lambda: httpx.get(f"{base}/stream").json()["streams"][0]["state"] == "failed", stretch(30))
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    records = []
    for line in (out + clash_out).splitlines():
        if line.strip():
            rec = json.loads(line)  # fails the test on any line that is not JSON
            assert isinstance(rec, dict) and {"time", "level", "logger", "message"} <= set(rec), line
            records.append(rec)
    by_logger = {r["logger"] for r in records}
    assert {"uvicorn.access", "uvicorn.error"} <= by_logger, by_logger
    assert any(r["logger"] == "uvicorn.access" and r.get("status") == 400 for r in records)
    assert any(r["level"] == "WARNING" and "Invalid HTTP" in r["message"] for r in records)
    assert any(r["level"] == "ERROR" and "address already in use" in r["message"].lower() for r in records)
    assert any(r["level"] == "WARNING" and "stream dead-cam failed" in r["message"] for r in records)
    assert proc.returncode == 0
