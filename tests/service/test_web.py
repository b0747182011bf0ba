"""The web page in headless Chromium: it loads, lists a live stream and shows its upscaled frames; the image
comparison and the video upload (a job, then a download) work. Chromium comes from Debian (``.ci/run``); when it is
missing this skips locally and fails in CI."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support.cdp import Browser, chromium_path
from tests.support.env import require_or_skip
from tests.support.live import Server
from tests.support.media import make_clip, synthetic_image
from tests.support.rtsp import RtspServer

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models on one torch thread

IMG_BOX = """(() => { const r = document.querySelector('img.live').getBoundingClientRect();
  return [r.left, r.top, r.width, r.height].map((v) => v * devicePixelRatio); })()"""


def test_page_shows_live_stream_and_compares_images(
    live_server: Callable[..., Server], rtsp_server: RtspServer, tmp_path: Path
) -> None:
    exe = chromium_path()
    require_or_skip(exe is not None, "chromium is not installed (apt-get install chromium)")
    svc = live_server()
    r = svc.client.post("/stream", json={"url": rtsp_server.url, "name": "cam-web"})
    assert r.status_code == 201
    page = svc.client.get("/")
    assert page.status_code == 200 and "default-src 'self'" in page.headers["content-security-policy"]
    assert svc.client.get("/static/app.js").status_code == 200
    assert svc.client.get("/static/../settings.py").status_code == 404

    browser = Browser(exe)  # type: ignore[arg-type]
    try:
        browser.goto(svc.base + "/")
        # a decoded MJPEG frame in the card: naturalWidth is the upscaled width (2 x 160)
        width = browser.wait_for("document.querySelector('img.live')?.naturalWidth", timeout=15)
        assert width == 320
        assert browser.wait_for("document.querySelector('.card .state')?.textContent === 'live'")
        # the per-stream model picker (PATCH /stream/{id}) lists the loaded models, this stream's one chosen
        assert browser.wait_for("document.querySelector('.card select.pick')?.value") == "x2"
        assert "fps in" in browser.eval("document.querySelector('.card .stats').textContent")
        shot = Image.open(browser.screenshot(tmp_path / "page.png")).convert("RGB")
        x, y, w, h = (int(v) for v in browser.eval(IMG_BOX))
        region = np.asarray(shot.crop((x, y, x + w, y + h)), dtype=np.float32)
        assert region.std() > 20, "the live image region is blank"  # the SMPTE test pattern: many colours

        # image upload: vsr and bicubic side by side, with a download link
        png = tmp_path / "in.png"
        Image.fromarray(synthetic_image(np.random.default_rng(0), 24, 32)).save(png)
        browser.call("DOM.enable")
        doc = browser.call("DOM.getDocument")
        node = browser.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#image-file")
        browser.call("DOM.setFileInputFiles", files=[str(png)], nodeId=node["nodeId"])
        browser.eval("document.querySelector('#image-form').requestSubmit()")
        browser.wait_for("document.getElementById('cmp-vsr').naturalWidth === 64", timeout=15)
        assert browser.eval("document.getElementById('cmp-bicubic').naturalWidth") == 64
        assert browser.eval("document.getElementById('compare').hidden") is False
        assert browser.eval("document.getElementById('download').href").startswith("blob:")
        # zoom: 4x shows the 64 px wide results at 256 px, unsmoothed, in a scrollable view
        browser.eval(
            "const z = document.getElementById('cmp-zoom'); z.value = '4'; z.dispatchEvent(new Event('change'))"
        )
        assert browser.eval("document.getElementById('compare').style.width") == "256px"
        assert browser.eval("document.getElementById('cmp-view').classList.contains('zoomed')") is True

        # video upload: a job with progress, then a download link
        clip = make_clip(tmp_path / "clip.mp4", n=8)
        node = browser.call("DOM.querySelector", nodeId=doc["root"]["nodeId"], selector="#video-file")
        browser.call("DOM.setFileInputFiles", files=[str(clip)], nodeId=node["nodeId"])
        browser.eval("document.querySelector('#video-form').requestSubmit()")
        browser.wait_for("!document.getElementById('video-download').hidden", timeout=20)
        assert "64×48, 8 frames, audio copied" in browser.eval("document.getElementById('video-status').textContent")
    finally:
        browser.close()


def test_bicubic_endpoint(live_server: Callable[..., Server]) -> None:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(np.random.default_rng(1), 24, 32)).save(buf, "PNG")
    r = live_server().client.post("/upscale/bicubic", content=buf.getvalue(), headers={"content-type": "image/png"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (64, 48)


def test_page_with_api_key(live_server, rtsp_server: RtspServer) -> None:
    exe = chromium_path()
    require_or_skip(exe is not None, "chromium is not installed (apt-get install chromium)")
    svc = live_server(api_keys=["sesame"])
    r = svc.client.post("/stream", json={"url": rtsp_server.url}, headers={"X-API-Key": "sesame"})
    assert r.status_code == 201
    browser = Browser(exe)  # type: ignore[arg-type]
    try:
        browser.goto(svc.base + "/")
        browser.wait_for("document.getElementById('stream-status').textContent.includes('API key')")
        browser.eval(
            "const k = document.getElementById('apikey'); k.value = 'sesame'; k.dispatchEvent(new Event('change'))"
        )
        assert browser.wait_for("document.querySelector('img.live')?.naturalWidth", timeout=15) == 320
    finally:
        browser.close()


TILES = """Array.from(document.querySelectorAll('.card')).map((c) => [c.querySelector('img.live').naturalWidth,
  c.querySelector('img.live').src])"""


def test_page_shows_eight_live_streams_at_once(
    live_server: Callable[..., Server], rtsp_server_factory: Callable[..., RtspServer]
) -> None:
    """8 tiles (the default stream cap) all show upscaled frames that keep changing, beyond the browser's 6
    connections per host that one MJPEG connection per tile ran into; the page's own health check still answers;
    a tile shows its source beside the upscaled frame; the stream and video forms offer the loaded models."""
    exe = chromium_path()
    require_or_skip(exe is not None, "chromium is not installed (apt-get install chromium)")
    camera = rtsp_server_factory(fps=5)  # 8 readers of one camera: keep the load of the shared CI box low
    svc = live_server()
    for i in range(8):
        assert svc.client.post("/stream", json={"url": camera.url, "name": f"cam-{i}"}).status_code == 201
    browser = Browser(exe)  # type: ignore[arg-type]
    try:
        browser.goto(svc.base + "/")
        browser.wait_for(f"(({TILES}).filter(([w]) => w === 320).length === 8) || null", timeout=45)
        first = [src for _, src in browser.eval(TILES)]
        browser.wait_for(
            f"({TILES}).every(([, src], i) => src !== {first!r}[i]) || null", timeout=30
        )  # every tile moved on to a newer frame
        checked = browser.eval("document.getElementById('health').dataset.checked")
        browser.wait_for(f"document.getElementById('health').dataset.checked !== {checked!r}", timeout=15)
        assert browser.eval("document.getElementById('health').textContent") == "ready"
        browser.eval(
            "const c = document.querySelector('.card .cmp'); c.checked = true; c.dispatchEvent(new Event('change'))"
        )
        assert browser.wait_for("document.querySelector('.card img.source').naturalWidth", timeout=15) == 160
        options = browser.eval(
            "Array.from(document.querySelectorAll('#stream-model option, #video-model option')).map((o) => o.value)"
        )
        assert options.count("") == 2 and options.count("x2") == 2, options
    finally:
        browser.close()
