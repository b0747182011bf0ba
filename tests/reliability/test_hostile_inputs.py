"""Hand-made hostile inputs for ``POST /upscale`` and ``POST /upscale/video``: corrupt and truncated files in every
format, zero-byte and mislabelled bodies, decompression bombs in every format, animated and multi-frame images,
16-bit and CMYK images, absurd query values, corrupt videos.

Every response must be 200 (for the inputs we define as acceptable) or a documented 4xx with the JSON error
envelope — never a 5xx, never a hang — and the worker must keep serving afterwards.
"""

from __future__ import annotations

import io
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.support.checks import error_body_ok
from tests.support.live import Server, base_settings, serve, wait_job
from tests.support.media import img, make_video, png
from tests.support.timing import stretch

UPSCALE_STATUSES = {200, 400, 413, 415, 422}
VIDEO_STATUSES = {202, 400, 413, 415, 422}


@pytest.fixture(scope="module")
def srv(tiny_artifact: dict[str, Path]) -> Iterator[Server]:
    with serve(base_settings(tiny_artifact["x2"], max_upload_bytes=256 * 1024, video_max_bytes=1 << 20)) as s:
        yield s


def encoded(fmt: str, **options: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img()).save(buf, format=fmt, **options)
    return buf.getvalue()


def post_image(srv: Server, data: bytes, ctype: str | None = "image/png", query: str = "") -> httpx.Response:
    headers = {"content-type": ctype} if ctype else {}
    r = srv.client.post(f"/upscale{query}", content=data, headers=headers)
    assert r.status_code in UPSCALE_STATUSES, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert error_body_ok(r), r.text[:300]
    return r


def still_serving(srv: Server) -> None:
    assert srv.app.state.batcher.alive
    r = srv.client.post("/upscale", content=png(), headers={"content-type": "image/png"})
    assert r.status_code == 200


# ---- corrupt and truncated images ------------------------------------------------------------------------------

FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp"}


def corruptions(data: bytes, seed: int) -> Iterator[tuple[str, bytes]]:
    rng = np.random.default_rng(seed)
    n = len(data)
    for cut in (8, 16, 32, n // 4, n // 2, n - 16, n - 1):
        yield f"truncated@{cut}", data[:cut]
    for frac in (0.1, 0.3, 0.6, 0.9):
        b = bytearray(data)
        i = int(n * frac)
        b[i : i + 16] = rng.integers(0, 256, 16, dtype=np.uint8).tobytes()
        yield f"garbage@{frac}", bytes(b)
    yield "header+random", data[:64] + rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    yield "bitflip", bytes(x ^ 0xFF if i % 97 == 50 else x for i, x in enumerate(data))


@pytest.mark.parametrize("fmt", FORMATS)
def test_corrupt_and_truncated_images(srv: Server, fmt: str) -> None:
    data = encoded(fmt)
    seen: dict[int, int] = {}
    for _, bad in corruptions(data, seed=len(fmt)):
        for multipart in (False, True):
            if multipart:
                r = srv.client.post("/upscale", files={"file": ("x", bad, FORMATS[fmt])})
                assert r.status_code in UPSCALE_STATUSES and (r.status_code < 400 or error_body_ok(r)), r.text
            else:
                r = post_image(srv, bad, FORMATS[fmt])
            seen[r.status_code] = seen.get(r.status_code, 0) + 1
    assert seen.get(400, 0) > 0, seen  # truncations are refused as undecodable
    still_serving(srv)


def test_empty_and_mislabelled_bodies(srv: Server) -> None:
    r = post_image(srv, b"", "image/png")
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty_body"
    r = srv.client.post("/upscale", files={"file": ("x.png", b"", "image/png")})
    assert r.status_code == 400 and error_body_ok(r)
    for ctype in (None, "text/plain", "application/json", "application/octet-stream", "image/gif", "image/svg+xml"):
        assert post_image(srv, png(), ctype).status_code == 415
    assert post_image(srv, b'{"a": 1}', "application/json").status_code == 415
    # a JPEG labelled PNG is sniffed and served; text labelled PNG is undecodable
    assert post_image(srv, encoded("JPEG"), "image/png").status_code == 200
    assert post_image(srv, b"hello" * 100, "image/png").status_code == 400
    # multipart oddities
    bad = srv.client.post("/upscale", content=b"--x\r\n\r\n", headers={"content-type": "multipart/form-data"})
    assert bad.status_code in (400, 422) and error_body_ok(bad)
    bad = srv.client.post("/upscale", content=b"garbage", headers={"content-type": "multipart/form-data; boundary=zzz"})
    assert bad.status_code in (400, 422) and error_body_ok(bad)
    two = srv.client.post(
        "/upscale", files=[("file", ("a.png", png(), "image/png")), ("file", ("b.png", png(), "image/png"))]
    )
    assert two.status_code in (200, 400) and (two.status_code == 200 or error_body_ok(two))
    still_serving(srv)


# ---- decompression bombs: huge dimensions declared in a few bytes ----------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(w: int, h: int, bit_depth: int = 8, color: int = 2) -> bytes:
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))


def jpeg_bomb(w: int, h: int) -> bytes:
    """A baseline JPEG whose SOF0 declares ``w`` x ``h`` (65535 max), with the rest of a tiny real JPEG."""
    real = encoded("JPEG")
    i = real.index(b"\xff\xc0")
    return real[: i + 5] + struct.pack(">HH", h, w) + real[i + 9 :]


def bmp_bomb(w: int, h: int) -> bytes:
    header = struct.pack("<2sIHHI", b"BM", 54 + 16, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, 16, 2835, 2835, 0, 0)
    return header + info + b"\0" * 16


def webp_bomb(w: int, h: int) -> bytes:
    """A VP8X WebP declaring ``w`` x ``h`` (canvas up to 2^24)."""
    vp8x = struct.pack("<B3x", 0) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    real = encoded("WEBP")
    body += real[12:]  # the real image's VP8 chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


@pytest.mark.parametrize(
    ("name", "data", "ctype"),
    [
        ("png-100k", png_bomb(100_000, 100_000), "image/png"),
        ("png16-100k", png_bomb(100_000, 100_000, 16, 2), "image/png"),
        ("png-wide", png_bomb(2**31 - 1, 1), "image/png"),
        ("jpeg-65535", jpeg_bomb(65535, 65535), "image/jpeg"),
        ("bmp-100k", bmp_bomb(100_000, 100_000), "image/bmp"),
        ("bmp-topdown", bmp_bomb(100_000, -100_000), "image/bmp"),
        ("webp-16M", webp_bomb(16_000_000, 16_000_000), "image/webp"),
    ],
)
def test_decompression_bombs_are_refused_fast(srv: Server, name: str, data: bytes, ctype: str) -> None:
    assert len(data) < 2000
    start = time.monotonic()
    r = post_image(srv, data, ctype)
    took = time.monotonic() - start
    assert r.status_code in (400, 413), (name, r.status_code)  # 413 when the header parsed, 400 when PIL refused it
    assert took < stretch(2.0), f"{name} took {took:.2f} s"  # decoding it would take minutes and gigabytes
    assert srv.app.state.batcher.alive


# ---- animated, multi-frame, 16-bit, CMYK -----------------------------------------------------------------------


def animated(fmt: str, n: int = 4) -> bytes:
    frames = [Image.fromarray(img(seed=i)) for i in range(n)]
    buf = io.BytesIO()
    frames[0].save(buf, format=fmt, save_all=True, append_images=frames[1:], duration=40, loop=0)
    return buf.getvalue()


def test_animated_images(srv: Server) -> None:
    assert post_image(srv, animated("GIF"), "image/gif").status_code == 415  # GIF is not an accepted type
    r = srv.client.post("/upscale", files={"file": ("a.gif", animated("GIF"), "application/octet-stream")})
    assert r.status_code == 415 and error_body_ok(r)
    for fmt, ctype in (("WEBP", "image/webp"), ("PNG", "image/png")):  # animated WebP, APNG: the first frame
        r = post_image(srv, animated(fmt), ctype)
        assert r.status_code == 200, (fmt, r.text)
        assert Image.open(io.BytesIO(r.content)).size == (64, 48)
    tiff = io.BytesIO()
    Image.fromarray(img()).save(tiff, format="TIFF")
    r = srv.client.post("/upscale", files={"file": ("a.tiff", tiff.getvalue(), "application/octet-stream")})
    assert r.status_code == 415 and error_body_ok(r)


def png16_rgb(h: int = 24, w: int = 32) -> bytes:
    """A 48-bit RGB PNG (PIL cannot write one)."""
    rows = np.random.default_rng(0).integers(0, 65535, (h, w, 3), dtype=np.uint16).astype(">u2")
    raw = b"".join(b"\0" + rows[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def test_16_bit_and_cmyk(srv: Server) -> None:
    r = post_image(srv, png16_rgb(), "image/png")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (64, 48)
    grey16 = io.BytesIO()
    Image.fromarray(img()[..., 0].astype(np.uint16) * 257).save(grey16, format="PNG")
    r = post_image(srv, grey16.getvalue(), "image/png")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).mode == "L"
    cmyk = io.BytesIO()
    Image.fromarray(img()).convert("CMYK").save(cmyk, format="JPEG")
    r = post_image(srv, cmyk.getvalue(), "image/jpeg")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (64, 48)
    one_px = io.BytesIO()
    Image.new("RGB", (1, 1)).save(one_px, format="PNG")
    r = post_image(srv, one_px.getvalue(), "image/png")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (2, 2)


# ---- absurd query values ---------------------------------------------------------------------------------------

ABSURD = [
    "?quality=0",
    "?quality=-1",
    "?quality=101",
    "?quality=1e99",
    "?quality=99999999999999999999999999999",
    "?quality=abc",
    "?quality=",
    "?quality=nan",
    "?format=gif",
    "?format=PNG%00",
    "?format=",
    "?model=" + "x" * 10_000,
    "?model=%00",
    "?model=../../etc/passwd",
    "?model=x2&model=x4",
    "?format=png&format=jpeg&quality=5&quality=500",
    "?%ff%fe=1",
]


@pytest.mark.parametrize("query", ABSURD)
def test_absurd_query_values(srv: Server, query: str) -> None:
    r = post_image(srv, png(), "image/png", query)
    assert r.status_code in (200, 422), (query, r.status_code)


# ---- videos ----------------------------------------------------------------------------------------------------


def post_video(srv: Server, data: bytes, ctype: str) -> httpx.Response:
    r = srv.client.post("/upscale/video", content=data, headers={"content-type": ctype})
    assert r.status_code in VIDEO_STATUSES, (r.status_code, r.text[:300])
    if r.status_code >= 400:
        assert error_body_ok(r), r.text
    return r


@pytest.mark.parametrize(("container", "ctype"), [("mp4", "video/mp4"), ("matroska", "video/x-matroska")])
def test_corrupt_and_truncated_videos(srv: Server, tmp_path: Path, container: str, ctype: str) -> None:
    good = make_video(tmp_path / f"v.{container}", container)
    rng = np.random.default_rng(0)
    n = len(good)
    cases = {f"truncated@{c}": good[:c] for c in (0, 16, 200, n // 3, n // 2, n - 10)}
    for frac in (0.05, 0.2, 0.5, 0.8):
        b = bytearray(good)
        i = int(n * frac)
        b[i : i + 64] = rng.integers(0, 256, 64, dtype=np.uint8).tobytes()
        cases[f"garbage@{frac}"] = bytes(b)
    cases["random"] = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    outcomes = {}
    for name, data in cases.items():
        r = post_video(srv, data, ctype)
        if r.status_code == 202:
            j = wait_job(srv, r.json()["id"])
            outcomes[name] = j["state"]
            res = srv.client.get(f"/jobs/{j['id']}/result")
            assert res.status_code == (200 if j["state"] == "done" else 409), name
            assert srv.client.delete(f"/jobs/{j['id']}").status_code == 204
        else:
            outcomes[name] = r.status_code
    assert outcomes["truncated@0"] in (400, 415) and outcomes["random"] == 415, outcomes
    still_serving(srv)


def test_video_whose_first_packets_are_garbage(srv: Server, tmp_path: Path) -> None:
    """An MPEG-TS whose first video packets are overwritten with noise (the TS headers kept): the decoder skips
    them; the job finishes (with fewer frames) or fails cleanly."""
    good = make_video(tmp_path / "v.ts", "mpegts", frames=24)
    b = bytearray(good)
    rng = np.random.default_rng(1)
    pkt = 188
    garbled = 0
    for off in range(0, len(b) - pkt, pkt):
        pid = ((b[off + 1] & 0x1F) << 8) | b[off + 2]
        if pid == 0x100 and garbled < 6:  # PyAV/FFmpeg's first video PID: keep the 4-byte TS header, garble the payload
            b[off + 4 : off + pkt] = rng.integers(0, 256, pkt - 4, dtype=np.uint8).tobytes()
            garbled += 1
    assert garbled == 6
    r = post_video(srv, bytes(b), "video/mp2t")
    if r.status_code == 202:
        j = wait_job(srv, r.json()["id"])
        assert j["state"] in ("done", "failed")
        if j["state"] == "failed":
            assert j["error"]
        srv.client.delete(f"/jobs/{j['id']}")
    still_serving(srv)


def test_non_finite_numbers_in_every_query(srv: Server) -> None:
    """``nan``/``inf`` are valid Python floats but not valid JSON numbers, so schema fuzzers never send them: every
    numeric query parameter in the schema gets them by hand (a NaN timeout once crashed a handler with a 500)."""
    spec = srv.client.get("/openapi.json").json()
    sid = srv.client.post("/stream", json={"url": "rtsp://127.0.0.1:9/none", "name": "nan-probe"}).json()["id"]
    tried = 0
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for p in op.get("parameters", []):
                schema = p.get("schema", {})
                types = {schema.get("type")} | {s.get("type") for s in schema.get("anyOf", [])}
                if p["in"] != "query" or not types & {"number", "integer"}:
                    continue
                url = path.replace("{stream_id}", sid).replace("{name}", "x2").replace("{job_id}", "nope")
                for value in ("nan", "inf", "-inf", "NaN", "1e999"):
                    r = srv.client.request(method.upper(), f"{url}?{p['name']}={value}", timeout=15)
                    tried += 1
                    assert 400 <= r.status_code < 500 and error_body_ok(r), (method, url, p["name"], value, r.text)
    assert tried >= 5
    srv.client.delete(f"/stream/{sid}")
