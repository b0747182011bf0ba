"""The source-URL policy: schemes, one resolution, denied address classes, numeric host forms, FFmpeg options."""

from __future__ import annotations

import socket

import pytest

from service.errors import answer_for
from service.urlpolicy import DeniedUrl, UnsupportedUrl, UrlPolicy, UrlRejected, parse_cidrs, policy_from, redact


def fake_resolver(table: dict[str, list[str]]):
    calls: list[str] = []

    def resolve(host: str, port: int, family: int = 0, type: int = 0):
        calls.append(host)
        if host not in table:
            raise socket.gaierror(-2, "Name or service not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, type, 6, "", (a, port)) for a in table[host]]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def status(e: Exception) -> int:
    """The HTTP status the web layer's error table gives ``e``."""
    answer = answer_for(e)
    assert answer is not None, type(e)
    return answer.status


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",  # decimal
        "http://0x7f000001/",  # hex
        "http://0177.0.0.1/",  # octal
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",  # IPv4-mapped
        "http://[::ffff:7f00:1]/",
        "http://[2002:7f00:1::]/",  # 6to4 around loopback
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/",
        "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 around the metadata address
        "rtsp://10.1.2.3/stream",
        "rtsp://192.168.1.20:554/stream1",
        "rtsp://172.16.0.1/",
        "rtsp://100.64.0.1/",  # shared address space
        "rtsp://[fe80::1]/",
        "rtsp://[fc00::1]/",
        "http://0.0.0.0/",
        "rtsp://224.0.0.1/",
        "rtsp://240.0.0.1/",
        "http://localhost:8000/",
    ],
)
def test_denied_addresses(url: str) -> None:
    with pytest.raises(DeniedUrl) as e:
        UrlPolicy().check(url)
    assert status(e.value) == 403


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://x/", "ftp://8.8.8.8/", "concat:a|b", "/etc/passwd"])
def test_unsupported_schemes(url: str) -> None:
    with pytest.raises(UnsupportedUrl) as e:
        UrlPolicy().check(url)
    assert status(e.value) == 400


@pytest.mark.parametrize("url", ["rtsp://", "rtsp:///x", "rtsp://host:99999/", "rtsp://a b/", "", "rtsp://x/\n"])
def test_malformed(url: str) -> None:
    with pytest.raises(UrlRejected) as e:
        UrlPolicy(resolver=fake_resolver({})).check(url)
    assert status(e.value) == 400


def test_public_host_resolved_once_and_pinned() -> None:
    resolver = fake_resolver({"cam.example": ["93.184.216.34"]})
    c = UrlPolicy(resolver=resolver).check("rtsp://user:secret@cam.example:8554/live?x=1")
    assert resolver.calls == ["cam.example"]
    assert c.connect_url == "rtsp://user:secret@93.184.216.34:8554/live?x=1"  # connects to what was checked
    assert c.redacted == "rtsp://user:***@cam.example:8554/live?x=1"
    assert c.options["protocol_whitelist"] == "rtsp,rtp,srtp,udp,tcp"


def test_any_denied_answer_denies() -> None:
    resolver = fake_resolver({"mixed.example": ["93.184.216.34", "10.0.0.1"]})
    with pytest.raises(DeniedUrl):
        UrlPolicy(resolver=resolver).check("rtsp://mixed.example/")


def test_allow_list_admits_private_and_mapped_forms() -> None:
    p = policy_from("192.168.0.0/16, 127.0.0.0/8")
    assert p.check("rtsp://192.168.1.20/s").address == "192.168.1.20"
    assert p.check("http://[::ffff:127.0.0.1]:8080/").connect_url == "http://[::ffff:7f00:1]:8080/"
    with pytest.raises(DeniedUrl):
        p.check("rtsp://10.0.0.1/")


def test_metadata_needs_an_exact_entry() -> None:
    with pytest.raises(DeniedUrl):
        policy_from("169.254.0.0/16").check("http://169.254.169.254/")
    assert policy_from("169.254.0.0/16").check("http://169.254.1.1/").address == "169.254.1.1"
    assert policy_from("169.254.169.254/32").check("http://169.254.169.254/").address == "169.254.169.254"


def test_http_options_block_redirects_and_playlists() -> None:
    resolver = fake_resolver({"cam.example": ["93.184.216.34"]})
    c = UrlPolicy(resolver=resolver).check("http://cam.example:8080/video.mjpg")
    assert c.connect_url == "http://93.184.216.34:8080/video.mjpg"
    assert c.options["headers"] == "Host: cam.example:8080\r\n"
    assert c.options["max_redirects"] == "0" and "hls" not in c.options["format_whitelist"]
    assert "file" not in c.options["protocol_whitelist"]
    s = UrlPolicy(resolver=resolver).check("https://cam.example/v.mp4")
    assert s.connect_url == "https://cam.example/v.mp4"  # TLS keeps the name (SNI, certificates)
    assert s.options["protocol_whitelist"] == "https,tls,tcp"


def test_file_sources_only_when_enabled(tmp_path) -> None:
    f = tmp_path / "clip.mp4"
    f.write_bytes(b"x")
    with pytest.raises(UnsupportedUrl):
        UrlPolicy().check(f"file://{f}")
    c = UrlPolicy(allow_file=True).check(f"file://{f}")
    assert c.connect_url == str(f) and c.options == {"protocol_whitelist": "file"}
    with pytest.raises(UrlRejected):
        UrlPolicy(allow_file=True).check("file:///no/such/file.mp4")


def test_parse_cidrs() -> None:
    assert [str(n) for n in parse_cidrs("10.0.0.0/8,::1")] == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError):
        parse_cidrs("not-a-network")
    assert redact("rtsp://a:b@h/x") == "rtsp://a:***@h/x" and redact("rtsp://h/x") == "rtsp://h/x"
