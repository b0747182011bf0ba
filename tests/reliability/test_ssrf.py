"""Security: the stream URL policy against SSRF (resolved names, IPv6 and numeric IPv4 forms, metadata addresses,
FFmpeg protocol/format allow-lists and redirects, checked against real FFmpeg)."""

from __future__ import annotations

import http.server
import ipaddress
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import pytest

from service.urlpolicy import DeniedUrl, UnsupportedUrl, UrlPolicy, UrlRejected, parse_cidrs, policy_from
from tests.support.urls import DENIED_FORMS

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
