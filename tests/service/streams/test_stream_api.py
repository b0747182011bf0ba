"""/stream errors and guards (no RTSP server needed): URL policy as 400/403 JSON, caps, names, models, API keys."""

from __future__ import annotations

import socket

import pytest

from tests.support.live import Server


def err(r, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["message"]
    return body["error"]["code"]


@pytest.fixture
def strict(live_server) -> Server:
    """A service with no CIDR allow-list: loopback and private sources are denied."""
    return live_server(stream_allow_cidrs=[], max_streams=2)


@pytest.mark.parametrize(
    ("url", "status"),
    [
        ("file:///etc/passwd", 400),
        ("gopher://example.com/", 400),
        ("rtsp://", 400),
        ("http://169.254.169.254/latest/meta-data/", 403),
        ("rtsp://127.0.0.1:8554/test", 403),
        ("rtsp://2130706433/test", 403),
        ("http://[::ffff:127.0.0.1]/", 403),
        ("rtsp://192.168.1.20/stream1", 403),
    ],
)
def test_denied_urls(strict: Server, url: str, status: int) -> None:
    code = err(strict.client.post("/stream", json={"url": url}), status)
    assert code in ("bad_url", "unsupported_url", "url_denied")
    assert strict.client.get("/stream").json()["streams"] == []


def test_body_validation_and_unknown_model(strict: Server) -> None:
    assert err(strict.client.post("/stream", json={"url": "rtsp://8.8.8.8/", "name": "bad name!"}), 422)
    assert err(strict.client.post("/stream", json={"url": "rtsp://8.8.8.8/", "transport": "sctp"}), 422)
    assert err(strict.client.post("/stream", json={"url": "rtsp://8.8.8.8/", "model": "nope"}), 422) == "invalid_model"
    assert err(strict.client.get("/stream/nope"), 404) == "not_found"
    assert err(strict.client.get("/stream/nope/mjpeg"), 404) == "not_found"


def test_cap_and_names(live_server) -> None:
    svc = live_server(max_streams=2, stream_max_attempts=1)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    url = f"rtsp://127.0.0.1:{silent.getsockname()[1]}/x"
    try:
        a = svc.client.post("/stream", json={"url": url, "name": "a"})
        assert a.status_code == 201 and a.headers["location"] == f"/stream/{a.json()['id']}"
        assert err(svc.client.post("/stream", json={"url": url, "name": "a"}), 409) == "conflict"
        assert svc.client.post("/stream", json={"url": url}).json()["name"] == "stream-1"
        assert err(svc.client.post("/stream", json={"url": url, "name": "c"}), 429) == "too_many_streams"
        r = svc.client.get(f"/stream/{a.json()['id']}/frame.jpg", params={"wait": 0})
        assert err(r, 503) == "no_frame"
    finally:
        silent.close()


def test_api_keys_apply(live_server) -> None:
    svc = live_server(api_keys=["k1"])
    assert err(svc.client.get("/stream"), 401) == "unauthorized"
    assert err(svc.client.post("/stream", json={"url": "rtsp://8.8.8.8/"}), 401) == "unauthorized"
    assert err(svc.client.post("/upscale/video", content=b"x", headers={"content-type": "video/mp4"}), 401)
    assert svc.client.get("/stream", headers={"X-API-Key": "k1"}).status_code == 200
    assert svc.client.get("/").status_code == 200  # the page itself is public; its API calls carry the key
