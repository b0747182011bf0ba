"""Which source URLs a stream may open: scheme allow-list, one DNS resolution, address checks, FFmpeg options.

The host is resolved ONCE per connection (``getaddrinfo``) and every address it resolves to is checked; for
plain-text schemes the reader then connects to the checked IP (``connect_url``), so a DNS answer that changes later
(rebinding) cannot steer it elsewhere. A reconnect checks again (cameras move). TLS schemes (``rtsps``, ``https``) keep the host name for certificate/SNI reasons, so FFmpeg resolves
again there; the check still rejects names that resolve to denied addresses now.

Denied unless the operator's CIDR allow-list admits them: loopback, private (RFC 1918, ULA), link-local, shared
(100.64/10), unspecified, multicast, reserved and every other non-global address. Cloud metadata addresses are denied
unless the allow-list names them with a host-length prefix (a broad ``169.254.0.0/16`` is not enough).
Numeric host forms (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``[::ffff:127.0.0.1]``) are normalised by the
resolver and by the IPv6 embedding checks below, so they are judged as the address they mean.

FFmpeg's ``protocol_whitelist`` is set per scheme, so a source can never make FFmpeg open ``file``, ``concat``,
``subfile`` or any other protocol (unless ``file`` sources are enabled for development). HTTP redirects are refused
(``max_redirects=0``) since a redirect target would escape the address check.

Known gap: FFmpeg's RTSP client follows ``3xx`` redirects (``Location:``) and has no option to refuse them, so a
public RTSP server could point the reader at another host (it sends that host an RTSP ``OPTIONS``). Where that
matters, back the policy with an egress firewall for the service (only the camera networks and the internet).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[..., list[Any]]

METADATA_ADDRESSES = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, ...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IPv6
    }
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
# Where an upscaled stream may be published (``publish``): media servers' ingest protocols; SRT has no default port.
PUBLISH_PORTS = {"rtsp": 554, "rtmp": 1935, "srt": 0}
# Protocols FFmpeg may open below each scheme. The rtsp demuxer opens rtp/udp (UDP transport) or tcp itself.
PROTOCOLS = {
    "rtsp": "rtsp,rtp,srtp,udp,tcp",
    "rtsps": "rtsps,rtsp,rtp,srtp,udp,tcp,tls",
    "http": "http,tcp",
    "https": "https,tls,tcp",
    "file": "file",
    "rtmp": "rtmp,tcp",
    "srt": "srt,udp",
}
# Demuxers a http(s) source may use: no playlists (hls/dash/concat) whose entries would be fetched unchecked.
HTTP_FORMATS = "mpjpeg,mjpeg,jpeg_pipe,mpegts,mp4,matroska,webm,flv,h264,hevc,avi,ivf,mpeg"


class UrlRejected(ValueError):
    """The URL is unusable, or points at a denied address (:class:`DeniedUrl`)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedUrl(UrlRejected):
    """A scheme, transport or demuxer the policy does not allow."""


class UnresolvableHost(UrlRejected):
    """DNS gave no answer (may be temporary: a camera's name appears when it comes up)."""


class DeniedUrl(UrlRejected):
    """The address is outside the allowed networks."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the policy. ``connect_url`` is what the reader opens (host replaced by the checked IP
    where feasible); ``options`` go to ``av.open``; ``redacted`` is safe to show (no credentials)."""

    url: str
    connect_url: str
    scheme: str
    host: str
    address: str | None
    options: dict[str, str] = field(default_factory=dict)
    redacted: str = ""


def parse_cidrs(value: str | Iterable[str] | None) -> tuple[IPNetwork, ...]:
    """``"192.168.0.0/16, 10.0.0.5"`` or a list -> networks (raises ValueError on a bad entry)."""
    if not value:
        return ()
    items = value.split(",") if isinstance(value, str) else list(value)
    return tuple(ipaddress.ip_network(s.strip(), strict=False) for s in items if s.strip())


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64, deprecated compatible), if any."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:  # ::a.b.c.d (IPv4-compatible, deprecated)
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _why_denied(ip: IPAddress) -> str | None:
    """A reason this address is not a plain public unicast address, or None."""
    if ip in METADATA_ADDRESSES:
        return "cloud metadata"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("site-local", isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local),
    )
    for name, hit in checks:
        if hit:
            return name
    return None if ip.is_global else "non-global"


@dataclass(frozen=True)
class UrlPolicy:
    """The operator's policy. ``resolver`` is injectable for tests (``socket.getaddrinfo`` signature)."""

    allow_cidrs: tuple[IPNetwork, ...] = ()
    allow_file: bool = False
    resolver: Resolver = socket.getaddrinfo

    def _allowed(self, ip: IPAddress) -> bool:
        nets = [n for n in self.allow_cidrs if n.version == ip.version and ip in n]
        if ip in METADATA_ADDRESSES:
            return any(n.prefixlen == n.max_prefixlen for n in nets)  # only when named exactly
        return bool(nets)

    def check_address(self, ip: IPAddress) -> None:
        """Raise :class:`DeniedUrl` unless ``ip`` (and any IPv4 address embedded in it) may be contacted."""
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
            candidates.insert(0, v4)  # judge the IPv4 address it means first
        denied = [(c, r) for c in candidates if (r := _why_denied(c)) is not None]
        if denied and not any(self._allowed(c) for c in candidates):
            c, reason = denied[0]
            raise DeniedUrl(f"address {c} is {reason} and not in the stream CIDR allow-list")

    def check_transport(self, src: CheckedUrl, transport: str) -> None:
        """RTSP over UDP only to cameras in the CIDR allow-list (TCP, the default, to any admitted address).

        Over UDP, FFmpeg sends RTP/RTCP (and NAT-punch) packets to whatever host and ports the camera's SETUP
        reply names (``Transport: ...;source=``), so a public "camera" could aim them anywhere, past the address
        policy. TCP interleaves the media in the checked connection."""
        if transport != "udp" or src.scheme not in ("rtsp", "rtsps"):
            return
        ip = ipaddress.ip_address(src.address) if src.address else None
        if ip is None or not any(n.version == ip.version and ip in n for n in self.allow_cidrs):
            raise DeniedUrl(
                "RTSP over UDP is allowed only for cameras in VSR_STREAM_ALLOW_CIDRS (over UDP the camera chooses "
                "where RTP/RTCP packets go); use transport tcp"
            )

    def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            infos = self.resolver(host, port, 0, socket.SOCK_STREAM)
        except (OSError, UnicodeError) as e:
            raise UnresolvableHost(f"cannot resolve host {host!r}: {e}") from None
        addrs: list[IPAddress] = []
        for info in infos:
            ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
            if ip not in addrs:
                addrs.append(ip)
        if not addrs:
            raise UnresolvableHost(f"host {host!r} resolves to no address")
        return addrs

    def check(self, url: str, *, publish: bool = False) -> CheckedUrl:
        """Validate ``url``; resolve its host once; return what the reader (``publish``: the publisher) opens."""
        if not isinstance(url, str) or not url or len(url) > 2048 or any(ord(ch) < 0x21 for ch in url):
            raise UrlRejected("url must be a non-empty string without spaces or control characters")
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise UrlRejected(f"malformed url: {e}") from None
        scheme = parts.scheme.lower()
        ports = PUBLISH_PORTS if publish else DEFAULT_PORTS
        if scheme == "file" and not publish:
            return self._check_file(parts)
        if scheme not in ports:
            allowed = ", ".join([*ports, *(["file"] if self.allow_file and not publish else [])])
            raise UnsupportedUrl(f"scheme {scheme or '(none)'!r} is not allowed; use one of: {allowed}")
        host = parts.hostname
        if not host:
            raise UrlRejected("url has no host")
        port = port or ports[scheme]
        if not port:
            raise UrlRejected(f"{scheme} urls need a port")
        addrs = self.resolve(host, port)
        for ip in addrs:
            self.check_address(ip)
        chosen = addrs[0]
        connect = url
        if scheme in ("rtsp", "http", "rtmp", "srt"):  # TLS needs the name (SNI, certificates)
            connect = _with_host(parts, str(chosen))
        return CheckedUrl(
            url=url,
            connect_url=connect,
            scheme=scheme,
            host=host,
            address=str(chosen),
            options=self._options(scheme, parts.netloc.rpartition("@")[2] if scheme == "http" else None),
            redacted=redact(url),
        )

    def _check_file(self, parts: SplitResult) -> CheckedUrl:
        if not self.allow_file:
            raise UnsupportedUrl("file sources are disabled (enable VSR_STREAM_ALLOW_FILE for development)")
        if parts.netloc not in ("", "localhost"):
            raise UrlRejected("file urls must be file:///absolute/path")
        path = Path(parts.path)
        if not path.is_absolute() or not path.is_file():
            raise UrlRejected(f"no such file: {parts.path}")
        return CheckedUrl(
            url=parts.geturl(),
            connect_url=str(path),
            scheme="file",
            host="",
            address=None,
            options=self._options("file", None),
            redacted=parts.geturl(),
        )

    @staticmethod
    def _options(scheme: str, host_header: str | None) -> dict[str, str]:
        opts = {"protocol_whitelist": PROTOCOLS[scheme]}
        if scheme in ("http", "https"):
            opts["format_whitelist"] = HTTP_FORMATS
            opts["max_redirects"] = "0"
            opts["reconnect"] = "0"
            if host_header:
                opts["headers"] = f"Host: {host_header}\r\n"
        return opts


def _with_host(parts: SplitResult, ip: str) -> str:
    """``parts`` with the host replaced by ``ip`` (bracketed for IPv6), keeping credentials and port."""
    userinfo = parts.netloc.rpartition("@")[0]
    host_literal = f"[{ip}]" if ":" in ip else ip
    port = f":{parts.port}" if parts.port else ""
    new_netloc = (f"{userinfo}@" if userinfo else "") + host_literal + port
    return urlunsplit((parts.scheme, new_netloc, parts.path, parts.query, parts.fragment))


def redact(url: str) -> str:
    """The URL without its password (for listings, logs, errors)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed>"
    if parts.password is None and parts.username is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, parts.fragment))


def policy_from(allow_cidrs: str | Sequence[str] | None, allow_file: bool = False) -> UrlPolicy:
    return UrlPolicy(allow_cidrs=parse_cidrs(allow_cidrs), allow_file=allow_file)
