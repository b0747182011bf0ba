"""The one redaction function: user info and secret-named query parameters out of URLs, in URLs alone and inside
free text (FFmpeg's errors quote the URL), and on every line the ``vsr`` log handler writes."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from vsr import logs
from vsr.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("rtsp://user:SECRET@cam.example:8554/live?x=1", "rtsp://user:***@cam.example:8554/live?x=1"),
        ("rtsp://SECRET@cam/x", "rtsp://***@cam/x"),  # a lone user name is often a token
        ("rtsp://:SECRET@cam/x", "rtsp://***@cam/x"),
        ("http://cam/cgi?user=admin&password=SECRET", "http://cam/cgi?user=admin&password=***"),
        ("http://cam/a?pwd=SECRET&x=1&api_key=SECRET", "http://cam/a?pwd=***&x=1&api_key=***"),
        (
            "https://s3/v?X-Amz-Signature=SECRET&X-Amz-Credential=SECRET",
            "https://s3/v?X-Amz-Signature=***&X-Amz-Credential=***",
        ),
        ("http://cam/a?Token=SECRET;auth=SECRET", "http://cam/a?Token=***;auth=***"),
        ("http://cam/a#access_token=SECRET&state=1", "http://cam/a#access_token=***&state=1"),
        ("srt://host:9000?streamid=x&passphrase=SECRET", "srt://host:9000?streamid=x&passphrase=***"),
        ("rtsp://cam/x?channel=1", "rtsp://cam/x?channel=1"),  # nothing secret: unchanged
        ("rtsp://cam/x", "rtsp://cam/x"),
    ],
)
def test_urls_lose_their_secrets_and_keep_the_rest(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "SECRET" not in redact_url(url)


def test_a_malformed_url_is_not_echoed() -> None:
    assert redact_url("http://[::1/SECRET") == "<malformed url>"


def test_urls_inside_text_are_redacted_and_the_text_kept() -> None:
    text = (
        "OSError: [Errno 111] Connection refused: 'rtsp://u:SECRET@127.0.0.1:9/out'; "
        'then "http://cam/cgi?user=admin&password=SECRET" and (srt://h:1?passphrase=SECRET) failed'
    )
    out = redact_text(text)
    assert "SECRET" not in out
    assert out == (
        "OSError: [Errno 111] Connection refused: 'rtsp://u:***@127.0.0.1:9/out'; "
        'then "http://cam/cgi?user=admin&password=***" and (srt://h:1?passphrase=***) failed'
    )
    assert redact_text("no url here: a:b@c") == "no url here: a:b@c"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    logging.captureWarnings(False)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_every_log_line_is_redacted(restore_logging: None, fmt: str) -> None:
    buf = io.StringIO()
    logs.configure("INFO", fmt, buf)
    log = logging.getLogger("vsr.test")
    log.warning("opening %s", "rtsp://admin:SECRET@cam/x?token=SECRET")
    log.error('failed: "http://cam/a?token=SECRET"\nnext line')  # JSON escapes \" and \n right after the URL
    try:
        raise ConnectionError("cannot open 'http://cam/cgi?password=SECRET'")
    except ConnectionError:
        log.exception("source failed")
    out = buf.getvalue()
    assert "SECRET" not in out
    assert "rtsp://admin:***@cam/x?token=***" in out and "http://cam/cgi?password=***" in out
    if fmt == "json":
        records = [json.loads(line) for line in out.splitlines()]
        assert records[1]["message"] == 'failed: "http://cam/a?token=***"\nnext line', records[1]
