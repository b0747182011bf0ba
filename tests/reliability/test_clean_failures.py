"""Clean failures: a bad setting ends ``vsr serve`` with one line on stderr and exit 2 (never a traceback, an abort
or a crash loop's exit 3); inputs that were refused by mistake are accepted (MPO photos)."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from service.main import describe_errors, load_settings
from tests.support.env import REPO
from tests.support.live import Server, free_port
from tests.support.reference import assert_model_output
from tests.support.timing import stretch


def serve_cmd(port: int) -> list[str]:
    return [sys.executable, "-m", "vsr_cli", "serve", "--host", "127.0.0.1", "--port", str(port)]


def test_bad_settings_exit_2_with_one_line(tmp_path: Path, tiny_artifact: dict[str, Path]) -> None:
    """Real processes: settings errors, and a start-up that fails in the lifespan (each imports torch: ~10 s)."""
    empty_model = tmp_path / "no-model"
    empty_model.mkdir()
    (tmp_path / "a-file").write_text("")
    # an unusable jobs folder with the default models warming up: it aborted (SIGABRT, 134) after its error line
    warm = {"VSR_MODELS": "x2,x4,x2-camera", "VSR_WARMUP": "true"}
    cases = {
        "missing streams file": {"VSR_STREAMS_FILE": str(tmp_path / "missing.yml")},
        "model folder without a model": {"VSR_MODELS": str(empty_model)},
        "jobs folder under /proc": {"VSR_VIDEO_JOBS_DIR": "/proc/nope", **warm},
        "jobs folder is a file": {"VSR_VIDEO_JOBS_DIR": str(tmp_path / "a-file"), **warm},
    }
    procs = {}
    for name, env in cases.items():
        full = os.environ | {"VSR_MODELS": str(tiny_artifact["x2"]), "VSR_WARMUP": "false"} | env
        procs[name] = subprocess.Popen(
            serve_cmd(free_port()), cwd=REPO, env=full, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 2, (name, p.returncode, err[-2000:])
        assert "Traceback" not in out + err and "terminate called" not in err, (name, err[-2000:])
        errors = [line for line in err.splitlines() if '"ERROR"' in line or line.startswith("error")]
        assert errors and len(errors[0]) < 400, (name, err)
        assert any(k in errors[0] for k in ("STREAMS_FILE", "cannot start", "VIDEO_JOBS_DIR")), errors


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"VSR_STREAMS_FILE": "{missing}"}, "VSR_STREAMS_FILE: cannot read"),
        ({"VSR_STREAMS_FILE": "{bad_yaml}"}, "VSR_STREAMS_FILE"),
        ({"VSR_STREAMS_FILE": "{not_a_list}"}, "is not a list of streams"),
        ({"VSR_MAX_BATCH_SIZE": "0", "VSR_QUEUE_LIMIT": "many"}, "VSR_QUEUE_LIMIT"),
        ({"VSR_DEVICE": "gpu:3"}, "VSR_DEVICE"),  # unparseable; cuda on a CPU host: tests/vsr_cli
        # auth must not go silently off: keys that are only separators, a key file with no key in it
        ({"VSR_API_KEYS": " , "}, "VSR_API_KEYS: has no key"),
        ({"VSR_API_KEYS": "   "}, "VSR_API_KEYS: has no key"),
        ({"VSR_API_KEYS_FILE": "{empty}"}, "holds no key"),
        ({"VSR_API_KEYS_FILE": "{comments}"}, "holds no key"),
        # inf is refused like nan in every float knob (an infinite timeout overflowed thread.join at SIGTERM)
        ({"VSR_REQUEST_TIMEOUT_S": "inf"}, "VSR_REQUEST_TIMEOUT_S: Input should be a finite number"),
        ({"VSR_REQUEST_TIMEOUT_S": "nan"}, "VSR_REQUEST_TIMEOUT_S"),
        ({"VSR_VIDEO_JOB_TTL_S": "Infinity"}, "VSR_VIDEO_JOB_TTL_S"),
        ({"VSR_STREAM_READ_TIMEOUT_S": "inf"}, "VSR_STREAM_READ_TIMEOUT_S"),
        ({"VSR_HTTP_BODY_TIMEOUT_S": "1e999"}, "VSR_HTTP_BODY_TIMEOUT_S"),
    ],
)
def test_each_bad_setting_is_one_line(
    env: dict[str, str], named: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"missing": tmp_path / "missing.yml", "bad_yaml": tmp_path / "b.yml", "not_a_list": tmp_path / "n.yml"}
    files |= {"empty": tmp_path / "empty.keys", "comments": tmp_path / "comments.keys"}
    files["empty"].write_text("\n  \n")
    files["comments"].write_text("# keys go here\n")
    files["bad_yaml"].write_text("- {url: [unclosed\n")
    files["not_a_list"].write_text("just a string\n")
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(**files))
    with pytest.raises(ValidationError) as e:
        load_settings(argparse.Namespace())
    line = describe_errors(e.value)
    assert "\n" not in line and named in line, line


def mpo(first: np.ndarray, second: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(first).save(buf, format="MPO", save_all=True, append_images=[Image.fromarray(second)])
    return buf.getvalue()


def test_mpo_photo_is_upscaled_from_its_first_image(
    live_server: Callable[..., Server], tiny_artifact: dict[str, Path]
) -> None:
    srv = live_server()
    first = np.full((24, 32, 3), 200, np.uint8)
    data = mpo(first, np.zeros((40, 48, 3), np.uint8))
    assert Image.open(io.BytesIO(data)).format == "MPO"
    r = srv.client.post("/upscale", content=data, headers={"content-type": "image/jpeg"})
    assert r.status_code == 200, r.text[:200]
    out = Image.open(io.BytesIO(r.content))
    assert out.format == "JPEG" and out.size == (64, 48)  # the first image, x2 (the second is 48x40)
    assert_model_output(np.asarray(out.convert("RGB")), first, tiny_artifact["x2"], tol=8.0)  # the model's, of it


def test_pathological_images_are_refused_by_cost_at_once(live_server: Callable[..., Server]) -> None:
    from scripts.attack_media import many_scan_jpeg, png

    srv = live_server(max_input_pixels=8_294_400)
    cases = [
        (many_scan_jpeg(5000), "image/jpeg", "too_many_scans"),
        (png(8_294_400, 1), "image/png", "extreme_aspect_ratio"),
        (png(1, 100_000), "image/png", "extreme_aspect_ratio"),
    ]
    for body, ctype, code in cases:
        t = time.monotonic()
        r = srv.client.post("/upscale", content=body, headers={"content-type": ctype})
        assert r.status_code == 413 and r.json()["error"]["code"] == code, r.text[:200]
        assert time.monotonic() - t < stretch(2.0)
    ok = many_scan_jpeg(12)  # an ordinary progressive JPEG (libjpeg writes ~10 scans)
    assert srv.client.post("/upscale", content=ok, headers={"content-type": "image/jpeg"}).status_code == 200
    wide = png(1200, 40)  # a 1:30 strip is within the ratio
    assert srv.client.post("/upscale", content=wide, headers={"content-type": "image/png"}).status_code == 200
