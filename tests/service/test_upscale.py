"""POST /upscale: every input format both ways, output formats, alpha, grey, EXIF, and every error with its body."""

from __future__ import annotations

import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.checks import assert_error
from tests.support.live import ClientFactory, sample
from tests.support.media import encode, open_image, rgb
from tests.support.reference import assert_model_output, reference
from vsr.images import DecodeLimits, TooManyPixels, decode

CONTENT_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp", "BMP": "image/bmp"}


@pytest.fixture
def client(make_client: ClientFactory):  # type: ignore[no-untyped-def]
    return make_client()


@pytest.mark.parametrize(("fmt", "expected"), [("PNG", "PNG"), ("JPEG", "JPEG"), ("WEBP", "WEBP"), ("BMP", "PNG")])
@pytest.mark.parametrize("multipart", [False, True])
def test_every_format_both_ways(client, fmt: str, expected: str, multipart: bool) -> None:  # type: ignore[no-untyped-def]
    data = encode(rgb(), fmt)
    if multipart:
        r = client.post("/upscale", files={"file": (f"in.{fmt.lower()}", data, "application/octet-stream")})
    else:
        r = client.post("/upscale", content=data, headers={"content-type": CONTENT_TYPES[fmt]})
    assert r.status_code == 200, r.text
    out = open_image(r.content)
    assert out.format == expected and out.size == (64, 48) and out.mode == "RGB"
    assert r.headers["content-type"] == f"image/{expected.lower()}"
    assert r.headers["x-vsr-model"] == "x2" and r.headers["x-vsr-scale"] == "2"


def test_output_is_the_models(client, tiny_artifact: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    img = rgb(seed=5)
    r = client.post("/upscale", content=encode(img), headers={"content-type": "image/png"})
    assert_model_output(np.asarray(open_image(r.content)), img, tiny_artifact["x2"])


@pytest.mark.parametrize(
    ("query", "fmt"),
    [("format=jpeg&quality=30", "JPEG"), ("format=WebP", "WEBP"), ("format=png", "PNG"), ("format=jpg", "JPEG")],
)
def test_output_format_and_quality(client, query: str, fmt: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post(f"/upscale?{query}", content=encode(rgb(), "JPEG"), headers={"content-type": "image/jpeg"})
    assert r.status_code == 200 and open_image(r.content).format == fmt
    if "quality=30" in query:
        hi = client.post(
            "/upscale?format=jpeg&quality=95", content=encode(rgb(), "JPEG"), headers={"content-type": "image/jpeg"}
        )
        assert len(r.content) < len(hi.content)


def test_alpha_is_upscaled_with_bicubic_and_reattached(client) -> None:  # type: ignore[no-untyped-def]
    alpha = np.tile(np.linspace(0, 255, 32, dtype=np.uint8), (24, 1))
    rgba = np.dstack([rgb(), alpha])
    for fmt in ("PNG", "WEBP"):
        r = client.post(
            "/upscale",
            files={
                "file": (
                    "a",
                    encode(rgba, fmt, lossless=True) if fmt == "WEBP" else encode(rgba),
                    "application/octet-stream",
                )
            },
        )
        out = open_image(r.content)
        assert out.mode == "RGBA" and out.size == (64, 48), fmt
        expected = np.asarray(Image.fromarray(alpha).resize((64, 48), Image.Resampling.BICUBIC))
        np.testing.assert_allclose(np.asarray(out)[..., 3], expected, atol=1)
    jpeg = client.post("/upscale?format=jpeg", content=encode(rgba), headers={"content-type": "image/png"})
    assert open_image(jpeg.content).mode == "RGB"  # JPEG has no alpha


def test_palette_with_transparency_keeps_alpha(client) -> None:  # type: ignore[no-untyped-def]
    p = Image.fromarray(rgb()).quantize(16)
    p.info["transparency"] = 0
    r = client.post("/upscale", content=encode(p, transparency=0), headers={"content-type": "image/png"})
    assert open_image(r.content).mode == "RGBA"


@pytest.mark.parametrize("mode", ["L", "LA", "I;16"])
def test_grayscale_stays_grayscale(client, mode: str, tiny_artifact: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    grey = rgb()[..., 1]
    if mode == "LA":
        img = Image.fromarray(np.dstack([grey, np.full_like(grey, 200)]), "LA")
    elif mode == "I;16":
        img = Image.fromarray(grey.astype(np.uint16) * 257)
    else:
        img = Image.fromarray(grey)
    r = client.post("/upscale", content=encode(img), headers={"content-type": "image/png"})
    out = open_image(r.content)
    assert out.mode == ("LA" if mode == "LA" else "L") and out.size == (64, 48)
    expected = Image.fromarray(reference(tiny_artifact["x2"], np.dstack([grey] * 3))).convert("L")  # RGB model, L out
    diff = np.abs(np.asarray(out.getchannel(0)).astype(int) - np.asarray(expected).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.1  # the plain forward pass rounds once more than the kernel may


def test_exif_orientation_is_applied(client) -> None:  # type: ignore[no-untyped-def]
    img = rgb(24, 32)
    img[:8, :8] = (255, 0, 0)  # a red top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    r = client.post(
        "/upscale?format=png",
        content=encode(img, "JPEG", exif=exif.tobytes(), quality=95),
        headers={"content-type": "image/jpeg"},
    )
    out = np.asarray(open_image(r.content))
    assert out.shape == (64, 48, 3)  # 24x32 stored, 32x24 displayed, x2
    assert out[4, -4, 0] > 200 and out[4, -4, 1] < 80  # the red corner is now top-right


# ---- errors ----------------------------------------------------------------------------------------------------


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(("w", "h"), [(5000, 5000), (100_000, 100_000)])
def test_decompression_bomb_is_rejected_before_allocation(client, w: int, h: int) -> None:  # type: ignore[no-untyped-def]
    data = png_header_only(w, h)
    assert len(data) < 200
    tracemalloc.start()
    try:
        with pytest.raises(TooManyPixels):
            decode(data, DecodeLimits(max_pixels=3840 * 2160))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # 5000x5000 RGB would be 75 MB
    r = client.post("/upscale", content=data, headers={"content-type": "image/png"})
    assert_error(r, 413, "too_many_pixels")
    assert sample(client, "vsr_rejected_total", {"reason": "too_large"}) == 1


def test_pixel_cap_from_settings(make_client: ClientFactory) -> None:
    client = make_client(max_input_pixels=24 * 32 - 1)
    r = client.post("/upscale", content=encode(rgb()), headers={"content-type": "image/png"})
    assert "pixels" in assert_error(r, 413, "too_many_pixels")["message"]


def test_byte_cap_declared_and_streamed(make_client: ClientFactory) -> None:
    client = make_client(max_upload_bytes=2048)
    big = encode(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert len(big) > 4096
    assert_error(client.post("/upscale", content=big, headers={"content-type": "image/png"}), 413, "payload_too_large")

    def chunks():  # type: ignore[no-untyped-def]
        for i in range(0, len(big), 512):
            yield big[i : i + 512]

    r = client.post("/upscale", content=chunks(), headers={"content-type": "image/png"})  # chunked: no length
    assert_error(r, 413, "payload_too_large")
    r = client.post("/upscale", files={"file": ("a.png", big, "image/png")})
    assert_error(r, 413, "payload_too_large")


def test_undecodable_is_400(client) -> None:  # type: ignore[no-untyped-def]
    assert_error(
        client.post("/upscale", content=b"not an image", headers={"content-type": "image/png"}),
        400,
        "undecodable_image",
    )
    truncated = encode(rgb(64, 64), "PNG")[:200]
    assert_error(
        client.post("/upscale", content=truncated, headers={"content-type": "image/png"}), 400, "undecodable_image"
    )
    assert_error(client.post("/upscale", content=b"", headers={"content-type": "image/png"}), 400, "empty_body")


def test_unsupported_types_are_415(client) -> None:  # type: ignore[no-untyped-def]
    assert_error(
        client.post("/upscale", content=b"hello", headers={"content-type": "text/plain"}), 415, "unsupported_media_type"
    )
    assert_error(client.post("/upscale", content=b"x"), 415)
    gif = encode(rgb(), "GIF")
    assert_error(
        client.post("/upscale", content=gif, headers={"content-type": "image/gif"}), 415, "unsupported_media_type"
    )
    r = client.post("/upscale", files={"file": ("a.gif", gif, "application/octet-stream")})  # sniffed
    assert_error(r, 415, "unsupported_format")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("model=nope", "unknown_model"),
        ("format=gif", "invalid_parameters"),
        ("format=", "invalid_parameters"),
        ("quality=101", "invalid_parameters"),
    ],
)
def test_bad_parameters_are_422(client, query: str, code: str) -> None:  # type: ignore[no-untyped-def]
    r = client.post(f"/upscale?{query}", content=encode(rgb()), headers={"content-type": "image/png"})
    assert_error(r, 422, code)


def test_multipart_without_file_is_422(client) -> None:  # type: ignore[no-untyped-def]
    r = client.post("/upscale", data={"other": "x"}, files={"notfile": ("a.png", encode(rgb()), "image/png")})
    assert_error(r, 422, "missing_file")


def test_api_keys(make_client: ClientFactory) -> None:
    client = make_client(api_keys="k1,k2")
    body, png = encode(rgb()), {"content-type": "image/png"}
    assert_error(client.post("/upscale", content=body, headers=png), 401, "unauthorized")
    assert_error(client.post("/upscale", content=body, headers={**png, "x-api-key": "k3"}), 401, "unauthorized")
    assert_error(client.get("/v2/models", headers={"authorization": "Bearer nope"}), 401)
    assert client.post("/upscale", content=body, headers={**png, "x-api-key": "k2"}).status_code == 200
    assert client.post("/upscale", content=body, headers={**png, "authorization": "Bearer k1"}).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200  # health and (by default) metrics stay open
    assert client.get("/metrics").status_code == 200
    private = make_client(api_keys="k1", metrics_public=False)
    assert_error(private.get("/metrics"), 401)
    assert private.get("/metrics", headers={"x-api-key": "k1"}).status_code == 200
