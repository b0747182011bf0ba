"""The same awkward files through ``vsr upscale`` and ``POST /upscale`` give the same image: pixels, size,
orientation, mode and ICC profile (issue 21: an EXIF-rotated phone JPEG came out of the CLI sideways, without ICC)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.awkward import AWKWARD, exif_rotated_jpeg, srgb_icc
from tests.support.live import ClientFactory
from tests.support.reference import textured
from vsr.artifact import load_artifact
from vsr.inference import upscale_frames
from vsr_cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")

FORMAT = {"png": "png", "jpg": "jpeg", "webp": "webp", "bmp": "png"}  # the service writes no BMP: compare as PNG
# What each file must come out as (mode, ICC kept), whatever path it took.
EXPECTED = {
    "exif-rotated-jpeg": ("RGB", True),
    "16-bit-rgb-png": ("RGB", False),
    "16-bit-grey-png": ("L", False),
    "cmyk-jpeg": ("RGB", False),
    "palette-transparent-png": ("RGBA", False),
    "la-png": ("LA", False),
    "grey-jpeg": ("L", False),
    "grey-icc-png": ("L", True),
    "rgba-png": ("RGBA", False),
    "rgba-webp": ("RGBA", False),
    "icc-png": ("RGB", True),
    "bmp": ("RGB", False),
    "plain-jpeg": ("RGB", False),
}
# Some files to other formats: alpha dropped for JPEG, grey as RGB in WebP (and a grey profile then dropped).
CROSS = [
    ("exif-rotated-jpeg", "png", "RGB", True),
    ("rgba-png", "jpg", "RGB", False),
    ("la-png", "webp", "RGBA", False),
    ("grey-icc-png", "webp", "RGB", False),
    ("palette-transparent-png", "webp", "RGBA", False),
]


def cli(src: Path, dst: Path, artifact: Path) -> None:
    args = ["upscale", str(src), str(dst), "--model", str(artifact), "--device", "cpu", "--dtype", "fp32"]
    assert main(args) == 0


def service(client, data: bytes, fmt: str):  # type: ignore[no-untyped-def]
    quality = "&quality=95" if fmt in ("jpeg", "webp") else ""  # the CLI's quality
    r = client.post(f"/upscale?format={fmt}{quality}", content=data, headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    return r


def load(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def assert_same(cli_out: Image.Image, svc_out: Image.Image, size: tuple[int, int], mode: str, icc: bool) -> None:
    for im in (cli_out, svc_out):
        assert (im.size, im.mode, bool(im.info.get("icc_profile"))) == (size, mode, icc)
    assert cli_out.info.get("icc_profile") == svc_out.info.get("icc_profile")
    np.testing.assert_array_equal(np.asarray(cli_out), np.asarray(svc_out))


def _plain_jpeg() -> tuple[bytes, str]:
    """A colour JPEG with nothing to carry: a luma model's way through both paths is the planes one."""
    buf = io.BytesIO()
    Image.fromarray(textured(20, 28, seed=2)).save(buf, "JPEG", quality=92)
    return buf.getvalue(), "jpg"


@pytest.mark.parametrize("kind", ["rgb", "luma"])
def test_every_awkward_file_comes_out_the_same(
    make_client: ClientFactory, tiny_artifact, tiny_luma_artifact, tmp_path: Path, kind: str
) -> None:
    """RGB and luma models (whose JPEG-to-JPEG way is planes in both: vsr.images.model_input)."""
    files = {name: make() for name, make in {**AWKWARD, "plain-jpeg": _plain_jpeg}.items()}
    src = tmp_path / "in"
    src.mkdir()
    for name, (data, ext) in files.items():
        (src / f"{name}.{ext}").write_bytes(data)
    artifact = tiny_artifact["x2"] if kind == "rgb" else tiny_luma_artifact
    cli(src, tmp_path / "out", artifact)  # a folder: each file keeps its format
    client = make_client(models=[str(artifact)])
    for name, (data, ext) in files.items():
        r = service(client, data, FORMAT[ext])
        with Image.open(src / f"{name}.{ext}") as im:
            w, h = im.size
        size = (2 * h, 2 * w) if name == "exif-rotated-jpeg" else (2 * w, 2 * h)  # upright, then x2
        mode, icc = EXPECTED[name]
        assert_same(load((tmp_path / "out" / f"{name}.{ext}").read_bytes()), load(r.content), size, mode, icc)
        if name.startswith("16-bit"):
            assert "16 bits per channel reduced to 8" in r.headers["x-vsr-notes"]
        if name.startswith("cmyk"):
            assert "CMYK converted" in r.headers["x-vsr-notes"]


@pytest.mark.parametrize(("name", "ext", "mode", "icc"), CROSS, ids=[f"{c[0]}-to-{c[1]}" for c in CROSS])
def test_other_output_formats_come_out_the_same(  # type: ignore[no-untyped-def]
    make_client: ClientFactory, tiny_artifact, tmp_path: Path, name: str, ext: str, mode: str, icc: bool
) -> None:
    data, in_ext = AWKWARD[name]()
    (tmp_path / f"in.{in_ext}").write_bytes(data)
    cli(tmp_path / f"in.{in_ext}", tmp_path / f"out.{ext}", tiny_artifact["x2"])
    r = service(make_client(), data, FORMAT[ext])
    size = load(r.content).size
    assert_same(load((tmp_path / f"out.{ext}").read_bytes()), load(r.content), size, mode, icc)


def test_exif_rotated_jpeg_is_upright_and_is_the_models(make_client: ClientFactory, tiny_artifact, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The reported case, against a reference made outside both paths: the stored pixels turned 90 degrees
    clockwise (EXIF orientation 6) and upscaled by the model itself."""
    data = exif_rotated_jpeg()
    (tmp_path / "phone.jpg").write_bytes(data)
    cli(tmp_path / "phone.jpg", tmp_path / "out.png", tiny_artifact["x2"])
    out = Image.open(tmp_path / "out.png")
    with Image.open(io.BytesIO(data)) as stored:
        upright = np.rot90(np.asarray(stored.convert("RGB")), k=-1)
    model, _ = load_artifact(tiny_artifact["x2"])
    np.testing.assert_array_equal(np.asarray(out), upscale_frames(model, np.ascontiguousarray(upright), scale=2))
    assert out.size == (48, 64) and out.info.get("icc_profile") == srgb_icc()
    px = np.asarray(out)
    assert px[4, -4, 0] > 200 and px[4, -4, 1] < 80  # the red corner is at the top right once upright
    svc = load(service(make_client(), data, "png").content)
    np.testing.assert_array_equal(np.asarray(svc), px)
