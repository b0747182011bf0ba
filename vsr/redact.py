"""Credentials out of every URL that reaches an answer or a log line: the one redaction function.

A camera or media-server URL may carry a secret two ways: user info (``rtsp://user:SECRET@cam/x``) and query
parameters (``http://cam/cgi?user=admin&password=SECRET``, ``...?token=...``, signed URLs' ``sig=``). Both are
replaced by ``***``; the rest of the URL (scheme, host, port, path, other parameters) stays, so an operator can still
tell which camera failed.

FFmpeg/PyAV error messages quote the URL they failed to open, so free text (an error for the API, a log line) goes
through :func:`redact_text`, which redacts every URL it finds in it. ``vsr.logs`` applies it to every log line as a
last line of defence; the API fields (``url``, ``last_error``) apply it where they are filled.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# Parameter names that carry secrets: matched anywhere in the name, case-insensitive (``api_key``, ``X-Amz-Signature``,
# ``access_token``, ``passwd``, ``auth``, ``client_secret``, ``sig``). Over-redacting a harmless ``monkey=`` is fine.
SECRET_PARAM = re.compile(r"pass|pwd|token|key|secret|auth|sig|credential", re.IGNORECASE)
# ``name=value`` inside a query or fragment; the value runs to the next separator.
_PARAM = re.compile(r"(?P<sep>^|[?&;#])(?P<name>[^=&;#?]+)=(?P<value>[^&;#]*)")
# A URL inside free text: a scheme, ``://``, then anything up to white space, a quote, a bracket that closes it or a
# backslash (in a JSON log line, ``\"`` and ``\n`` after a URL are escapes, not part of it).
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s'\"<>`(){}\[\]\\]+")


def _mask_params(part: str) -> str:
    def sub(m: re.Match[str]) -> str:
        if SECRET_PARAM.search(m["name"]) and m["value"]:
            return f"{m['sep']}{m['name']}={MASK}"
        return m[0]

    return _PARAM.sub(sub, part)


def redact_url(url: str) -> str:
    """``url`` without its secrets: the password (or a lone user name, often a token) and secret-named parameters."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<malformed url>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if has_password and user else f"{MASK}@{host}"
    query, fragment = _mask_params(parts.query), _mask_params(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def redact_text(text: str) -> str:
    """``text`` with every URL in it redacted (error messages quote URLs, e.g. FFmpeg's ``Connection refused``)."""
    if "://" not in text:  # the common case costs one substring search
        return text
    return _URL_IN_TEXT.sub(lambda m: redact_url(m[0]), text)
