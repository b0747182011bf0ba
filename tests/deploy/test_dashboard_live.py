"""Every PromQL query of the Grafana dashboard returns data from the REAL service scraped by a REAL Prometheus.

Starts, on loopback: an RTSP test camera (gst-rtsp-server, tests/rtsp_server.py), ``vsr serve`` with a tiny model
ingesting that camera via ``VSR_STREAMS``, and Debian's Prometheus scraping the service every second. Drives image
uploads (good and bad), stream traffic and one camera outage (a reconnect), then runs each dashboard query the way
Grafana would send it (variables substituted) against Prometheus' ``/api/v1/query`` and requires a non-empty answer
with at least one real number. GPU-only panels (marked "GPU only" in their description) are excepted on CPU hosts.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.deploy.helpers import dashboard, queries, substitute
from tests.support.env import REPO, require_or_skip
from tests.support.live import free_port, wait_ready
from tests.support.media import make_video, synthetic_image
from tests.support.rtsp import SYSTEM_PYTHON, rtsp_server_available

CAMERA_FPS = 30
# A batch waits up to this long for company: with a 30 fps camera and 2 frames in flight, newer frames replace a
# pending one, so the drop counters move too (as they do on an overloaded host).
BATCH_DELAY_MS = 100


class Proc:
    """A child process with its output in a log file; stopped by its own pid only."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name, self.log = name, log_dir / f"{name}.log"
        self.fh = self.log.open("ab")
        self.p = subprocess.Popen(args, stdout=self.fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)

    def wait_for_line(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log.read_text(errors="replace"):
                return
            if self.p.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.name} did not print {marker!r}:\n{self.tail()}")

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
        self.fh.close()


def start_camera(port: int, log_dir: Path) -> Proc:
    args = [SYSTEM_PYTHON, str(REPO / "tests" / "rtsp_server.py"), "--port", str(port)]
    cam = Proc("camera", [*args, "--width", "64", "--height", "48", "--fps", str(CAMERA_FPS)], log_dir)
    cam.wait_for_line("READY", timeout=15)
    return cam


def start_prometheus(vsr_port: int, tmp: Path) -> tuple[Proc, str]:
    port = free_port()
    cfg = tmp / "prometheus.yml"
    # the dashboard's queries filter on job="vsr", as in deploy/prometheus/prometheus.yml
    scrape = {"job_name": "vsr", "static_configs": [{"targets": [f"127.0.0.1:{vsr_port}"]}]}
    cfg.write_text(
        json.dumps({"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": [scrape]})
    )
    args = [
        shutil.which("prometheus") or "prometheus",
        f"--config.file={cfg}",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={tmp / 'tsdb'}",
        "--log.level=warn",
    ]
    return Proc("prometheus", args, tmp), f"http://127.0.0.1:{port}"


def start_vsr(port: int, model: Path, camera_url: str, tmp: Path) -> Proc:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VSR_")}
    env.update(
        VSR_HOST="127.0.0.1",
        VSR_PORT=str(port),
        VSR_MODELS=str(model),
        VSR_DEVICE="cpu",
        VSR_MAX_BATCH_DELAY_MS=str(BATCH_DELAY_MS),
        VSR_MAX_BATCH_SIZE="8",  # CPU defaults to 1 (no waiting for company): the drops below need batching
        VSR_STREAMS=json.dumps([{"url": camera_url, "name": "cam"}]),
        VSR_STREAM_ALLOW_CIDRS="127.0.0.1/32",
        OMP_NUM_THREADS="1",
    )
    return Proc("vsr", [sys.executable, "-m", "vsr_cli", "serve"], tmp, env=env)


def png_bytes(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(synthetic_image(np.random.default_rng(seed), 24, 32)).save(buf, format="PNG")
    return buf.getvalue()


class Traffic:
    """Background clients: image uploads (2 concurrent), a bad upload (400), model metadata; bounded in time."""

    def __init__(self, base: str, max_seconds: float = 60.0) -> None:
        self.base, self.max_seconds = base, max_seconds
        self.stop = threading.Event()
        self.codes: dict[int, int] = {}
        self.thread = threading.Thread(target=self._run, name="traffic", daemon=True)

    def _run(self) -> None:
        images = [png_bytes(i) for i in range(4)]
        end = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.base, timeout=10) as client, ThreadPoolExecutor(2) as pool:

            def upload(data: bytes) -> int:
                files = {"file": ("in.png", data, "image/png")}
                return client.post("/upscale", files=files).status_code

            i = 0
            while not self.stop.is_set() and time.monotonic() < end:
                calls = [pool.submit(upload, images[(i + k) % 4]) for k in range(2)]
                calls.append(
                    pool.submit(
                        lambda: (
                            client.post(
                                "/upscale", content=b"not an image", headers={"content-type": "image/png"}
                            ).status_code
                        )
                    )
                )
                calls.append(pool.submit(lambda: client.get("/v2/models/x2").status_code))
                for c in calls:
                    try:
                        code = c.result()
                    except httpx.HTTPError:
                        code = -1
                    self.codes[code] = self.codes.get(code, 0) + 1
                i += 1
                self.stop.wait(0.1)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=15)


def prom_query(prom: str, expr: str) -> list[dict]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=5)
    body = r.json()
    assert body.get("status") == "success", f"{expr}: {body.get('error', r.text)}"
    data = body["data"]
    if data["resultType"] == "scalar":
        return [{"metric": {}, "value": data["result"]}]
    return data["result"]


def has_number(result: list[dict]) -> bool:
    return any(math.isfinite(float(s["value"][1])) for s in result)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, tiny_artifact: dict[str, Path]) -> Iterator[dict]:
    require_or_skip(shutil.which("prometheus") is not None, "Debian `prometheus` not installed (see .ci/run)")
    require_or_skip(*rtsp_server_available())
    tmp = tmp_path_factory.mktemp("deploy-live")
    cam_port, vsr_port = free_port(), free_port()
    camera_url = f"rtsp://127.0.0.1:{cam_port}/test"
    with ExitStack() as stack:
        procs: list[Proc] = []

        def started(p: Proc) -> Proc:
            procs.append(p)
            stack.callback(p.stop)
            return p

        cam = started(start_camera(cam_port, tmp))
        vsr = started(start_vsr(vsr_port, tiny_artifact["x2"], camera_url, tmp))
        prom_proc, prom = start_prometheus(vsr_port, tmp)
        started(prom_proc)
        base = f"http://127.0.0.1:{vsr_port}"
        wait_ready(base, timeout=45, alive=lambda: alive([vsr, cam]), describe=lambda: tails([vsr, cam]))
        wait_ready(
            prom, path="/-/ready", timeout=15, alive=lambda: alive([prom_proc]), describe=lambda: tails([prom_proc])
        )
        yield {"base": base, "prom": prom, "tmp": tmp, "procs": procs, "cam": cam, "cam_port": cam_port}


def alive(procs: list[Proc]) -> bool:
    return all(p.p.poll() is None for p in procs)


def tails(procs: list[Proc]) -> str:
    return "\n" + "\n".join(f"{p.name}:\n{p.tail()}" for p in procs)


def run_video_job(base: str, tmp: Path) -> None:
    """One tiny recorded-video job through ``POST /upscale/video``, waited for until done."""
    data = make_video(tmp / "clip.mp4", "mp4", frames=6)
    r = httpx.post(f"{base}/upscale/video", content=data, headers={"content-type": "video/mp4"}, timeout=30)
    assert r.status_code == 202, r.text
    job = r.json()["status_url"]
    deadline = time.monotonic() + 60
    while (state := httpx.get(f"{base}{job}", timeout=10).json()["state"]) in ("queued", "running"):
        assert time.monotonic() < deadline, "video job did not finish"
        time.sleep(0.2)
    assert state == "done", state


def wait_until(pred, timeout: float, what: str, procs: list[Proc]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs))


def test_every_dashboard_query_returns_data(stack: dict) -> None:
    base, prom, procs = stack["base"], stack["prom"], stack["procs"]
    dash = dashboard()
    qs = [q for q in queries(dash) if not q.gpu_only]
    gpu = [q for q in queries(dash) if q.gpu_only]
    assert qs and gpu

    def stream_out() -> bool:
        return has_number(prom_query(prom, 'sum(rate(vsr_stream_frames_total{job="vsr",direction="out"}[30s])) > 0'))

    with Traffic(base) as traffic:
        wait_until(stream_out, 25, "upscaled stream frames in Prometheus", procs)
        run_video_job(base, stack["tmp"])  # the video-job panels need one job that ran
        # a camera outage: the reader reconnects, and the reconnect counter appears
        cam = stack["cam"]
        cam.stop()
        time.sleep(1.0)
        procs.remove(cam)
        cam = start_camera(stack["cam_port"], stack["tmp"])
        procs.append(cam)
        try:
            wait_until(
                lambda: bool(prom_query(prom, "vsr_stream_reconnects_total")) and stream_out(),
                20,
                "a reconnect and frames flowing again",
                procs,
            )
            # every query, as Grafana would send it; poll the ones still empty (rates need a few scrapes)
            pending = {(q.panel, q.ref): q for q in qs}
            answers: dict[tuple[str, str], list[dict]] = {}
            deadline = time.monotonic() + 20
            while pending and time.monotonic() < deadline:
                for key, q in list(pending.items()):
                    answers[key] = prom_query(prom, substitute(q.expr, dash))
                    if has_number(answers[key]):
                        del pending[key]
                if pending:
                    time.sleep(1.0)
        finally:
            cam.stop()
    empty = [f"{q.panel} [{q.ref}]: {substitute(q.expr, dash)} -> {answers.get(k)}" for k, q in pending.items()]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty) + f"\nHTTP codes seen: {traffic.codes}"
    # the $stream variable's own query (label_values) lists the stream
    r = httpx.get(f"{prom}/api/v1/label/stream/values", params={"match[]": "vsr_stream_frames_total"}, timeout=5)
    assert "cam" in r.json()["data"]
    # GPU-only queries are still valid PromQL here (they just have nothing to show without CUDA)
    for q in gpu:
        prom_query(prom, substitute(q.expr, dash))
    assert traffic.codes.get(200, 0) > 0 and traffic.codes.get(400, 0) > 0, traffic.codes


def test_dockerfile_healthcheck_command(stack: dict) -> None:
    """The image's HEALTHCHECK (python + urllib, no curl) passes against a ready service and fails without one."""
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    cmd = json.loads(text.split("HEALTHCHECK", 1)[1].split("CMD", 1)[1].strip().splitlines()[0])
    assert cmd[0] == "python"
    port = stack["base"].rsplit(":", 1)[1]
    ok = subprocess.run([sys.executable, *cmd[1:]], env={**os.environ, "VSR_PORT": port}, timeout=30)
    assert ok.returncode == 0
    down = subprocess.run([sys.executable, *cmd[1:]], env={**os.environ, "VSR_PORT": str(free_port())}, timeout=30)
    assert down.returncode != 0
