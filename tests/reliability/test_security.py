"""Security: API keys (constant-time, never logged, on every API route), public /metrics and docs only when
configured, upload caps enforced while the body streams in, and private, always-removed temporary files. The
stream URL policy against SSRF is tests/reliability/test_ssrf.py.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service import deps
from service.main import describe_errors
from service.settings import Settings
from tests.support.checks import error_body_ok, report
from tests.support.live import Server, wait_until
from tests.support.media import png
from tests.support.procs import temp_entries
from tests.support.urls import DENIED_FORMS

KEY = "k3y-S3CRET-7f1e9a"
OTHER = "wrong-K3Y-0d2b44"

# ---- API keys --------------------------------------------------------------------------------------------------


def test_key_comparison_is_constant_time_over_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(deps.hmac, "compare_digest", spy)
    keys = ["first", KEY, "third"]
    assert deps.key_matches("first", keys)  # a match on the first key still compares against all of them
    assert len(calls) == 3
    calls.clear()
    assert not deps.key_matches(OTHER, keys) and len(calls) == 3
    assert not deps.key_matches(None, keys) and not deps.key_matches("", keys)


PUBLIC = {"/v2/health/live", "/v2/health/ready", "/v2"}  # probes and server metadata (name, version)


def every_get_route(spec: dict[str, Any]) -> list[str]:
    paths = []
    for path, ops in spec["paths"].items():
        for method in ops:
            paths.append(
                (method.upper(), path.replace("{name}", "x2").replace("{stream_id}", "s").replace("{job_id}", "j"))
            )
    return paths


def test_every_api_route_needs_the_key(live_server: Callable[..., Server], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    srv = live_server(api_keys=f"{KEY},second-key")
    spec = srv.client.get("/openapi.json").json()  # docs are public by default
    routes = every_get_route(spec)
    assert len(routes) >= 15
    for method, path in routes:
        public = path in PUBLIC or path == "/metrics"
        for headers in ({}, {"x-api-key": OTHER}, {"authorization": f"Bearer {OTHER}"}, {"authorization": KEY}):
            r = srv.client.request(method, path, headers=headers)
            if public:
                assert r.status_code != 401, (method, path)
            else:
                assert r.status_code == 401 and error_body_ok(r), (method, path, headers, r.status_code)
                assert r.headers["www-authenticate"] == "Bearer"
        r = srv.client.request(method, path, headers={"x-api-key": KEY})
        assert r.status_code != 401, (method, path)
    ok = srv.client.post(
        "/upscale", content=png(), headers={"content-type": "image/png", "authorization": f"Bearer {KEY}"}
    )
    assert ok.status_code == 200
    # the key is never logged, echoed, or exported
    logged = "\n".join(r.getMessage() + str(r.args) for r in caplog.records)
    for secret in (KEY, OTHER):
        assert secret not in logged
        assert secret not in srv.client.get("/metrics").text
    assert KEY not in repr(srv.app.state.settings) and KEY not in str(srv.app.state.settings)


def test_keys_from_env_are_not_in_settings_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSR_API_KEYS", KEY)
    monkeypatch.setenv("VSR_PORT", "not-a-port")
    with pytest.raises(Exception) as e:
        Settings()
    assert KEY not in describe_errors(e.value)  # type: ignore[arg-type]
    monkeypatch.setenv("VSR_PORT", "8000")
    assert Settings().api_keys == [KEY] and KEY not in repr(Settings())
    monkeypatch.setenv("VSR_API_KEYS", "")  # empty (compose's ${VSR_API_KEYS:-}) is unset; ' , ' is refused
    assert Settings().api_keys == []


def test_keys_from_a_file(live_server: Callable[..., Server], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "keys"
    f.write_text(f"# mounted secret\n{KEY}\n\n  other-key  \n")
    f.chmod(0o600)
    monkeypatch.setenv("VSR_API_KEYS_FILE", str(f))
    assert Settings().api_keys == [KEY, "other-key"] and KEY not in repr(Settings())
    monkeypatch.setenv("VSR_API_KEYS", "env-key")
    assert Settings().api_keys == ["env-key", KEY, "other-key"]
    monkeypatch.setenv("VSR_API_KEYS_FILE", str(tmp_path / "missing"))
    with pytest.raises(ValidationError) as e:
        Settings()
    assert KEY not in describe_errors(e.value)
    monkeypatch.delenv("VSR_API_KEYS")
    monkeypatch.delenv("VSR_API_KEYS_FILE")
    srv = live_server(api_keys_file=str(f))
    body, ctype = png(), {"content-type": "image/png"}
    assert srv.client.post("/upscale", content=body, headers=ctype).status_code == 401
    assert srv.client.post("/upscale", content=body, headers={**ctype, "x-api-key": "other-key"}).status_code == 200


@pytest.mark.parametrize(
    ("metrics_public", "docs_public"), [(True, True), (False, True), (True, False), (False, False)]
)
def test_metrics_and_docs_are_public_only_when_configured(
    live_server: Callable[..., Server], metrics_public: bool, docs_public: bool
) -> None:
    srv = live_server(api_keys=KEY, metrics_public=metrics_public, docs_public=docs_public)
    r = srv.client.get("/metrics")
    assert r.status_code == (200 if metrics_public else 401)
    assert srv.client.get("/metrics", headers={"x-api-key": KEY}).status_code == 200
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert srv.client.get(path).status_code == (200 if docs_public else 404), path
    assert srv.client.get("/v2/health/ready").status_code == 200  # probes never need a key


# ---- upload caps while streaming -------------------------------------------------------------------------------

FLOOD_SENT: dict[str, int] = {}


@pytest.fixture(scope="module", autouse=True)
def write_figures() -> Iterator[None]:
    yield
    if FLOOD_SENT:
        report(
            "security",
            {
                "upload_cap_bytes": 256 * 1024,
                "endless_upload_bytes_sent_before_413": FLOOD_SENT,
                "denied_numeric_url_forms": len(DENIED_FORMS),
            },
        )


def chunked_flood(base: str, path: str, ctype: str, max_bytes: int, preamble: bytes = b"") -> tuple[int, bytes]:
    """Send an endless chunked body until the server answers or hangs up; returns (bytes sent, response head)."""
    host, port = base.removeprefix("http://").split(":")
    sent = 0
    chunk = b"\0" * 65536
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
            + (b"%x\r\n" % len(preamble) + preamble + b"\r\n" if preamble else b"")
        )
        s.setblocking(False)
        response = b""
        end = time.monotonic() + 20
        while sent < max_bytes and time.monotonic() < end:
            try:
                response += s.recv(65536)
                if response:
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                s.send(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break
        s.setblocking(True)
        s.settimeout(5)
        try:
            while b"\r\n\r\n" not in response:
                data = s.recv(65536)
                if not data:
                    break
                response += data
        except OSError:
            pass
    return sent, response


@pytest.mark.parametrize(
    ("path", "ctype"),
    [
        ("/upscale", "image/png"),
        ("/upscale", "multipart/form-data; boundary=x"),
        ("/upscale/video", "video/mp4"),
        ("/upscale/video", "multipart/form-data; boundary=x"),
    ],
)
def test_an_endless_upload_is_cut_off_at_the_cap(live_server: Callable[..., Server], path: str, ctype: str) -> None:
    cap = 256 * 1024
    srv = live_server(max_upload_bytes=cap, video_max_bytes=cap)
    flood_limit = 512 * 1024 * 1024  # the client would go on for 512 MB
    part = b'--x\r\nContent-Disposition: form-data; name="file"; filename="a"\r\nContent-Type: image/png\r\n\r\n'
    sent, head = chunked_flood(srv.base, path, ctype, flood_limit, part if ctype.startswith("multipart") else b"")
    # The server answered 413 long before the flood ended; what was sent past the cap sat in loopback socket
    # buffers (a few MB), never in the app.
    assert head.startswith(b"HTTP/1.1 413"), head[:200]
    assert sent < 32 * 1024 * 1024, sent
    FLOOD_SENT[f"{path} {ctype.split(';')[0]}"] = sent
    assert srv.app.state.batcher.alive
    assert not list(srv.app.state.video_jobs.dir.iterdir())


# ---- temporary files -------------------------------------------------------------------------------------------


def test_temp_files_are_private_and_removed(live_server: Callable[..., Server], tmp_path: Path) -> None:
    from tests.support.media import make_video

    srv = live_server(video_max_bytes=8 << 20)
    jobs = srv.app.state.video_jobs
    assert stat.S_IMODE(jobs.dir.stat().st_mode) == 0o700
    probe = jobs.new_file(".probe")
    assert stat.S_IMODE(probe.stat().st_mode) == 0o600
    probe.unlink()

    before = temp_entries()
    video = make_video(tmp_path / "v.mp4", "mp4")
    seen_modes: set[int] = set()
    stop = threading.Event()

    def watch() -> None:  # the job's files while it runs
        while not stop.is_set():
            for p in list(jobs.dir.iterdir()):
                with contextlib.suppress(FileNotFoundError):
                    seen_modes.add(stat.S_IMODE(p.stat().st_mode))
            time.sleep(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        big_image = png(200, 200) + b"\0" * (1200 * 1024)  # > 1 MB: the multipart parser spools it to disk
        srv.client.post("/upscale", files={"file": ("a.png", big_image, "image/png")})
        r = srv.client.post("/upscale/video", files={"file": ("v.mp4", video + b"\0" * (1200 * 1024), "video/mp4")})
        assert r.status_code == 202, r.text
        job = r.json()["id"]
        assert wait_until(lambda: srv.client.get(f"/jobs/{job}").json()["state"] in ("done", "failed"), 20)
        assert srv.client.get(f"/jobs/{job}").json()["state"] == "done"
        assert srv.client.get(f"/jobs/{job}/result").status_code == 200
        assert list(jobs.dir.iterdir())  # the result is kept until deleted
        assert srv.client.delete(f"/jobs/{job}").status_code == 204
    finally:
        stop.set()
        watcher.join()
    assert seen_modes and seen_modes <= {0o600}, {oct(m) for m in seen_modes}
    assert not list(jobs.dir.iterdir())
    assert temp_entries() - before == set()  # no stray files from spooled multipart parts either
    srv.app.state.video_jobs.close()
    assert not jobs.dir.exists()  # shutdown removes the folder
    assert os.path.isdir(os.path.dirname(jobs.dir))
