"""Security: API keys (constant-time, never logged, on every API route), public /metrics and docs only when
configured, the stream URL policy against SSRF (resolved names, IPv6 and numeric IPv4 forms, metadata addresses,
FFmpeg protocol/format allow-lists checked against real FFmpeg), upload caps enforced while the body streams in,
and private, always-removed temporary files.
"""

from __future__ import annotations

import contextlib
import hmac
import http.server
import ipaddress
import logging
import os
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest
from pydantic import ValidationError

from service import deps
from service.main import describe_errors
from service.settings import Settings
from service.urlpolicy import DeniedUrl, UnsupportedUrl, UrlPolicy, UrlRejected, parse_cidrs, policy_from
from tests.support.checks import error_body_ok, report
from tests.support.live import Server, wait_until
from tests.support.media import png
from tests.support.procs import temp_entries

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


# ---- SSRF: the stream URL policy -------------------------------------------------------------------------------


def resolver_to(*addresses: str) -> Callable[..., list]:
    """A fake ``getaddrinfo`` answering every name with ``addresses`` (and numeric hosts as themselves)."""

    def resolve(host: str, port: Any, *args: Any, **kwargs: Any) -> list:
        try:
            return socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_NUMERICHOST)
        except socket.gaierror:
            pass
        out = []
        for a in addresses:
            fam = socket.AF_INET6 if ":" in a else socket.AF_INET
            out.append((fam, socket.SOCK_STREAM, 6, "", (a, port or 0)))
        return out

    return resolve


def policy(*addresses: str, allow: list[str] | None = None, allow_file: bool = False) -> UrlPolicy:
    return UrlPolicy(allow_cidrs=parse_cidrs(allow or []), allow_file=allow_file, resolver=resolver_to(*addresses))


DENIED_FORMS = [
    "rtsp://127.0.0.1/cam",
    "rtsp://127.1/cam",
    "rtsp://2130706433/cam",  # decimal 127.0.0.1
    "rtsp://0x7f000001/cam",  # hex
    "rtsp://0177.0.0.1/cam",  # octal
    "rtsp://0x7f.0.0.1/cam",
    "rtsp://[::1]/cam",
    "rtsp://[::ffff:127.0.0.1]/cam",
    "rtsp://[::ffff:7f00:1]/cam",
    "rtsp://[0:0:0:0:0:ffff:169.254.169.254]/",
    "rtsp://[64:ff9b::7f00:1]/cam",  # NAT64 of loopback
    "rtsp://[2002:7f00:1::]/cam",  # 6to4 of loopback
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://100.100.100.200/",
    "rtsp://0.0.0.0/cam",
    "rtsp://[::]/cam",
    "rtsp://10.0.0.5/cam",
    "rtsp://192.168.1.20/cam",
    "rtsp://172.16.0.1/cam",
    "rtsp://100.64.0.1/cam",
    "rtsp://224.0.0.1/cam",
    "rtsp://[fe80::1]/cam",
    "rtsp://[fc00::1]/cam",
    "rtsp://user:pw@127.0.0.1:8554/cam",
]


@pytest.mark.parametrize("url", DENIED_FORMS)
def test_numeric_forms_of_forbidden_addresses_are_denied(url: str) -> None:
    with pytest.raises(DeniedUrl):
        policy().check(url)


@pytest.mark.parametrize(
    "answers",
    [("127.0.0.1",), ("::1",), ("169.254.169.254",), ("8.8.8.8", "10.0.0.1"), ("::ffff:127.0.0.1",), ("fe80::1",)],
)
def test_names_resolving_to_forbidden_addresses_are_denied(answers: tuple[str, ...]) -> None:
    for url in ("rtsp://camera.example.com/live", "http://cam.example.org:8080/mjpeg", "https://x.example/v"):
        with pytest.raises(DeniedUrl):
            policy(*answers).check(url)


def test_allow_list_admits_lan_cameras_but_metadata_only_when_named_exactly() -> None:
    lan = policy("192.168.1.20", allow=["192.168.0.0/16"])
    checked = lan.check("rtsp://cam.lan/stream1")
    assert checked.address == "192.168.1.20"
    assert checked.connect_url == "rtsp://192.168.1.20/stream1"  # DNS is not asked again (no rebinding)
    with pytest.raises(DeniedUrl):
        policy(allow=["169.254.0.0/16"]).check("http://169.254.169.254/")
    policy(allow=["169.254.169.254/32"]).check("http://169.254.169.254/")
    with pytest.raises(DeniedUrl):
        policy("10.0.0.1", allow=["192.168.0.0/16"]).check("rtsp://cam.lan/")


def test_public_addresses_pass_and_are_pinned() -> None:
    c = policy("93.184.216.34").check("http://user:pw@cams.example.com:8080/a.mjpg")
    assert c.connect_url == "http://user:pw@93.184.216.34:8080/a.mjpg"
    assert c.options["headers"] == "Host: cams.example.com:8080\r\n" and c.options["max_redirects"] == "0"
    assert "pw" not in c.redacted
    c6 = policy("2606:4700::1111").check("rtsp://cam6.example.com/s")
    assert c6.connect_url == "rtsp://[2606:4700::1111]/s"
    assert ipaddress.ip_address(c6.address or "").version == 6


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "concat:/etc/passwd|/etc/hosts",
        "subfile:,,start,0,end,0,,:/etc/passwd",
        "gopher://example.com/",
        "ftp://example.com/x",
        "data:text/plain,hello",
        "pipe:0",
        "tcp://8.8.8.8:554",
        "udp://8.8.8.8:554",
        "hls+http://example.com/a.m3u8",
        "async:http://example.com/",
        "crypto:file:///etc/passwd",
        "/etc/passwd",
        "",
        "rtsp://",
        "rtsp://exa mple.com/",
        "rtsp://example.com/\r\nx",
    ],
)
def test_only_allowed_schemes(url: str) -> None:
    with pytest.raises(UrlRejected):
        policy("8.8.8.8").check(url)


def test_file_sources_only_when_enabled(tmp_path: Path) -> None:
    f = tmp_path / "v.mp4"
    f.write_bytes(b"x")
    with pytest.raises(UnsupportedUrl):
        policy().check(f"file://{f}")
    c = policy(allow_file=True).check(f"file://{f}")
    assert c.options["protocol_whitelist"] == "file"


@pytest.mark.parametrize("scheme", ["rtsp", "rtsps", "http", "https"])
def test_protocol_whitelist_excludes_local_and_composite_protocols(scheme: str) -> None:
    c = policy("8.8.8.8").check(f"{scheme}://cam.example.com/x")
    allowed = set(c.options["protocol_whitelist"].split(","))
    assert not allowed & {"file", "concat", "subfile", "pipe", "data", "crypto", "async", "cache", "fd", "hls"}
    if scheme.startswith("http"):
        formats = set(c.options["format_whitelist"].split(","))
        assert not formats & {"hls", "dash", "concat", "applehttp", "ffconcat", "image2", "tee"}


@pytest.fixture
def playlist_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTP server whose playlists point at local files through file:, concat: and subfile:."""
    secret = tmp_path / "secret.ts"
    secret.write_bytes(b"G" + b"\0" * 187)
    (tmp_path / "evil.m3u8").write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:1\n"
        f"#EXTINF:1,\nfile://{secret}\n#EXTINF:1,\nconcat:{secret}|{secret}\n"
        f"#EXTINF:1,\nsubfile:,,start,0,end,0,,:{secret}\n#EXT-X-ENDLIST\n"
    )
    (tmp_path / "evil.ffconcat").write_text(f"ffconcat version 1.0\nfile '{secret}'\n")

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: Any, **kw: Any) -> None:
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *a: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.mark.parametrize("name", ["evil.m3u8", "evil.ffconcat"])
def test_ffmpeg_refuses_playlists_that_reach_local_files(playlist_server: str, name: str) -> None:
    """Real FFmpeg with the policy's options: the playlist demuxers are not allowed, and even if they were, the
    protocol allow-list would keep their entries from opening file:/concat:/subfile:."""
    c = policy_from(["127.0.0.0/8"]).check(f"{playlist_server}/{name}")
    with pytest.raises(av.FFmpegError):
        av.open(c.connect_url, options=c.options, timeout=5).close()
    relaxed = {k: v for k, v in c.options.items() if k != "format_whitelist"}  # only the protocol list left
    try:
        container = av.open(c.connect_url, options=relaxed, timeout=5)
    except av.FFmpegError:
        return  # refused while opening the entries
    with container:
        assert not container.streams.video, "a playlist entry opened a local file"


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


def test_ffmpeg_does_not_follow_redirects(tmp_path: Path) -> None:
    """An admitted HTTP source that answers 302 to another address: with the policy's options FFmpeg does not follow
    it (the target was never checked), and the target never sees a request."""
    hits: list[str] = []

    class Target(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "video/mp2t")
            self.end_headers()
            self.wfile.write(b"G" + b"\0" * 187)

        def log_message(self, *a: Any) -> None:
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)
    target_url = f"http://127.0.0.1:{target.server_address[1]}/secret.ts"

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(302)
            self.send_header("Location", target_url)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    redirect = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for srv in (target, redirect):
        threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        c = policy_from(["127.0.0.0/8"]).check(f"http://127.0.0.1:{redirect.server_address[1]}/cam.ts")
        assert c.options["max_redirects"] == "0"
        with pytest.raises(av.FFmpegError):
            av.open(c.connect_url, options=c.options, timeout=5).close()
        assert hits == []
    finally:
        target.shutdown()
        redirect.shutdown()
