"""No credential of a URL reaches ``GET /stream`` or the log: a publish target and a source that both refuse, with
user info and a secret-named query parameter (FFmpeg's errors quote the URL it failed to open). No RTSP server
needed: the published stream's source is a development file source."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.live import Server, free_port
from tests.support.media import make_clip


def test_credentials_never_reach_the_api_or_the_log(
    live_server: Callable[..., Server], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    clip = make_clip(tmp_path / "cam.mp4", n=10, audio=None)
    svc = live_server(stream_allow_file=True)
    publish = f"rtsp://user:SECRET@127.0.0.1:{free_port()}/out?token=SECRET"
    r = svc.client.post("/stream", json={"url": f"file://{clip}", "name": "pub", "publish": publish})
    assert r.status_code == 201, r.text
    source = f"http://127.0.0.1:{free_port()}/cgi?user=admin&password=SECRET"
    r2 = svc.client.post("/stream", json={"url": source, "name": "cgi"})
    assert r2.status_code == 201, r2.text
    pub = svc.wait_stream(r.json()["id"], lambda i: i["publish"]["reconnects"] >= 1, timeout=30)
    cgi = svc.wait_stream(r2.json()["id"], lambda i: i["reconnects"] >= 1 and i["last_error"], timeout=30)
    listing = svc.client.get("/stream").text
    assert "SECRET" not in listing and "SECRET" not in caplog.text
    # what is left still says which target and which camera failed, and why
    assert "refused" in pub["publish"]["last_error"].lower() and "refused" in cgi["last_error"].lower(), listing
    assert pub["publish"]["url"].endswith("/out?token=***") and cgi["url"].endswith("/cgi?user=admin&password=***")
    assert "publishing to rtsp://user:***@127.0.0.1" in caplog.text
