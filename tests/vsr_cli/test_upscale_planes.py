"""``vsr upscale`` with a luma model, JPEG in and out: Y from the JPEG decoder's YCbCr through the model, the JPEG
written from the new Y and the decoder's chroma (vsr/planes.py) — the model's output within JPEG's error, and within
a level or so of the RGB way. Anything the planes cannot carry (another output format, an ICC profile, an RGB model)
goes the RGB way."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from tests.support.reference import assert_model_output, textured
from vsr_cli.main import main

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The output sizes the planes way built (``vsr.images.with_chroma`` wrapped)."""
    import vsr.images

    seen: list[tuple[int, ...]] = []
    real = vsr.images.with_chroma

    def spy(y: np.ndarray, cb: np.ndarray, cr: np.ndarray):  # type: ignore[no-untyped-def]
        seen.append(tuple(y.shape))
        return real(y, cb, cr)

    monkeypatch.setattr(vsr.images, "with_chroma", spy)
    return seen


def _jpeg(path: Path, rgb: np.ndarray, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path, quality=95, **kw)
    return path


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "JPEG"
        return np.asarray(im.convert("RGB"))


def test_jpeg_to_jpeg_goes_as_planes_and_is_the_model(
    tmp_path: Path, tiny_luma_artifact: Path, calls: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _jpeg(tmp_path / "in" / "a.jpg", textured(30, 44, seed=3))
    lr = _read(src)
    model = ["--model", str(tiny_luma_artifact)]
    assert main(["upscale", str(src), str(tmp_path / "planes.jpg"), *model]) == 0
    assert calls == [(60, 88, 1)]  # the planes way, once
    planes = _read(tmp_path / "planes.jpg")
    assert_model_output(planes, lr, tiny_luma_artifact, tol=10.0)  # JPEG q95 (+ 4:2:0) of the model's output

    import vsr.images

    monkeypatch.setattr(vsr.images, "planes_output", lambda *a: False)  # the RGB way, same input
    assert main(["upscale", str(src), str(tmp_path / "rgb.jpg"), *model]) == 0
    rgb = _read(tmp_path / "rgb.jpg")
    luma = np.array([0.299, 0.587, 0.114])
    # the model's Y is the same either way up to its input's rounding (libjpeg's Y vs Y of its RGB) and two JPEG q95
    # encodes (measured 1.4 levels mean); chroma differs more on this colour-textured image (the decoder's
    # upsampling vs bilinear: ~2.8 levels mean in RGB)
    y_diff = np.abs(planes @ luma - rgb @ luma)
    assert y_diff.mean() < 2.0, y_diff.mean()


@pytest.mark.parametrize("case", ["png out", "icc profile", "rgb model"])
def test_what_planes_cannot_carry_goes_as_rgb(
    case: str, tmp_path: Path, tiny_luma_artifact: Path, tiny_artifact: dict, calls: list
) -> None:
    kw: dict[str, object] = {}
    if case == "icc profile":
        kw["icc_profile"] = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    src = _jpeg(tmp_path / "in" / "a.jpg", textured(30, 44, seed=3), **kw)
    out = tmp_path / ("out.png" if case == "png out" else "out.jpg")
    model = tiny_artifact["x2"] if case == "rgb model" else tiny_luma_artifact
    assert main(["upscale", str(src), str(out), "--model", str(model)]) == 0
    assert calls == []
    with Image.open(out) as im:
        if case == "icc profile":
            assert im.info.get("icc_profile") == kw["icc_profile"]  # kept: the reason for the RGB way
        got = np.asarray(im.convert("RGB"))
    assert_model_output(got, _read(src), model, tol=10.0)


def test_decoded_ycc_is_the_jpeg_decoders() -> None:
    from vsr.images import decode

    buf = io.BytesIO()
    Image.fromarray(textured(24, 32, seed=1)).save(buf, "JPEG", quality=90)
    plain, both = decode(buf.getvalue()), decode(buf.getvalue(), ycc=True)
    assert plain.ycc is None and both.ycc is not None and both.ycc.shape == (24, 32, 3)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        im.draft("YCbCr", im.size)
        np.testing.assert_array_equal(both.ycc, np.asarray(im))
    # RGB from that YCbCr, within a level of libjpeg's own conversion
    assert np.abs(both.rgb.astype(int) - plain.rgb.astype(int)).max() <= 1
