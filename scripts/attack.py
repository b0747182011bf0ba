"""Attack the real ``vsr serve`` (default settings, loopback) with each hostile input of issue 12 and measure what
it costs: the server's peak RSS (``VmHWM``), ``/v2/health/ready`` latency during the attack (p50/p99/max, probed
every 20 ms), the outcome, tracebacks in its log, and temporary files left after it stops. One fresh server per
attack, so each peak is that attack's own.

    python scripts/attack.py                       # every attack -> docs/reliability/attacks.json + a table
    python scripts/attack.py batch_4k slowloris    # some of them
    python scripts/attack.py --list

The CI suite runs small variants of each (tests/reliability/test_*limits*.py, test_caps.py); this is the full size.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from scripts import attack_media as media  # noqa: E402
from scripts.attack_probe import Prober, free_port, settle, status_kb, wait_job, wait_ready  # noqa: E402

CLI = [sys.executable, "-m", "vsr_cli"]
RSS_TARGET = 2.5e9
HEALTH_P99_TARGET_S = 0.1
MIN_PROBE_S = 5.0  # health is probed at least this long from the attack's start


@dataclass
class Ctx:
    base: str
    work: Path  # the attack's own files
    notes: dict[str, Any] = field(default_factory=dict)

    def client(self, timeout: float = 60) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=timeout)


def post_video(ctx: Ctx, path: Path) -> dict[str, Any]:
    with ctx.client() as c:
        r = c.post("/upscale/video", content=path.read_bytes(), headers={"content-type": "video/x-matroska"})
        if r.status_code != 202:
            return {"status": r.status_code, "error": r.json().get("error")}
        return {"status": 202, **wait_job(c, r.json()["id"])}


# ---- the attacks (issue 12's list) ------------------------------------------------------------------------------


def big_frames_in_video(ctx: Ctx) -> dict[str, Any]:
    """1: a video whose first frames are 32x32 and later ones 6000x6000."""
    return post_video(ctx, media.mjpeg_mkv(ctx.work / "grow.mkv", [(32, 32)] * 5 + [(6000, 6000)] * 3))


def big_frames_in_stream(ctx: Ctx) -> dict[str, Any]:
    """2: a camera sending 6000x6000 frames."""
    src = media.mjpeg_mkv(ctx.work / "cam.mkv", [(6000, 6000)] * 20, fps=5)
    with ctx.client() as c:
        s = c.post("/stream", json={"url": f"file://{src}", "name": "big"}).json()
        end = time.monotonic() + 60
        while time.monotonic() < end:
            info = c.get(f"/stream/{s['id']}").json()
            if info["state"] in ("failed", "stopped"):
                break
            time.sleep(0.2)
        return {"state": info["state"], "last_error": info.get("last_error"), "frames_out": info.get("frames_out")}


def batch_4k(ctx: Ctx) -> dict[str, Any]:
    """3: eight 24 kB PNGs of 3840x2160 (zeros) at once."""
    body = media.png(3840, 2160)
    with ctx.client(120) as c, ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: c.post("/upscale", content=body, headers={"content-type": "image/png"}).status_code, range(8)))  # fmt: skip
    return {"body_bytes": len(body), "statuses": sorted(codes)}


def duration_lie(ctx: Ctx) -> dict[str, Any]:
    """4a: a 700 s video whose header says 1 s."""
    p = media.h264_mkv(ctx.work / "long.mkv", 700, fps=Fraction(1))
    return post_video(ctx, media.patch_mkv_duration(p, 1.0))


def negative_duration(ctx: Ctx) -> dict[str, Any]:
    """4b: a header duration of -125 s."""
    p = media.h264_mkv(ctx.work / "neg.mkv", 10, fps=Fraction(10))
    return post_video(ctx, media.patch_mkv_duration(p, -125.0))


def frame_flood(ctx: Ctx) -> dict[str, Any]:
    """4c: 3000 frames in 0.3 s."""
    return post_video(ctx, media.h264_mkv(ctx.work / "flood.mkv", 3000, fps=Fraction(10000)))


def json_300mb(ctx: Ctx) -> dict[str, Any]:
    """5: a 300 MB JSON body to POST /stream (chunked, so no Content-Length warns the server)."""
    sent = 0

    def body() -> Any:
        nonlocal sent
        yield b'{"url": "rtsp://8.8.8.8/x", "name": "'
        while sent < 300_000_000:
            sent += 1 << 20
            yield b"a" * (1 << 20)

    with ctx.client() as c:
        try:
            code = c.post("/stream", content=body(), headers={"content-type": "application/json"}).status_code
        except httpx.HTTPError as e:
            code = type(e).__name__
    return {"status": code, "client_sent_mb": round(sent / 1e6, 1)}


def stream_churn(ctx: Ctx) -> dict[str, Any]:
    """6: create/delete streams in a loop against a camera that accepts and never answers (a tarpit)."""
    tarpit = socket.socket()
    tarpit.bind(("127.0.0.1", 0))
    tarpit.listen(1024)
    port = tarpit.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        tarpit.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(tarpit.accept()[0])
            except TimeoutError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    pid = ctx.notes["pid"]
    peak_threads = peak_open = refused = 0
    with ctx.client() as c:
        for i in range(200):
            r = c.post("/stream", json={"url": f"rtsp://127.0.0.1:{port}/cam{i}"})
            if r.status_code == 201:
                c.delete(f"/stream/{r.json()['id']}")
            else:
                refused += 1  # 429 while the deleted streams' readers end (they keep their slots)
                time.sleep(0.05)
            peak_threads = max(peak_threads, len(os.listdir(f"/proc/{pid}/task")))
            peak_open = max(peak_open, sum(1 for h in list(held) if _peer_open(h)))
    time.sleep(3)
    open_to_tarpit = sum(1 for h in held if _peer_open(h))
    stop.set()
    return {"cycles": 200, "refused_429": refused, "peak_threads": peak_threads, "peak_open_connections": peak_open, "threads_after_3s": len(os.listdir(f"/proc/{pid}/task")),
            "tarpit_connections_total": len(held), "tarpit_connections_open_after_3s": open_to_tarpit}  # fmt: skip


def _peer_open(s: socket.socket) -> bool:
    """Read what the client sent (never answered); EOF means it closed the connection."""
    s.setblocking(False)
    try:
        while s.recv(65536):
            pass
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False


def slowloris(ctx: Ctx, n: int = 300, seconds: float = 25.0) -> dict[str, Any]:
    """8: 300 connections trickling their headers (one line every 2 s), reopened when closed, for 25 s."""
    host, port = "127.0.0.1", int(ctx.base.rsplit(":", 1)[1])
    socks: list[socket.socket | None] = [None] * n
    closed = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i in range(n):
            try:
                if socks[i] is None:
                    socks[i] = socket.create_connection((host, port), timeout=2)
                    socks[i].sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")  # type: ignore[union-attr]
                else:
                    socks[i].sendall(b"X-a: b\r\n")  # type: ignore[union-attr]
            except OSError:
                closed += 1
                socks[i] = None
        time.sleep(2.0)
    fds = len(os.listdir(f"/proc/{ctx.notes['pid']}/fd"))
    for s in socks:
        if s is not None:
            s.close()
    return {"connections": n, "seconds": seconds, "closed_by_server": closed, "server_fds_at_end": fds}


def pipelined_hangup(ctx: Ctx) -> dict[str, Any]:
    """9: 4 pipelined uploads, then the client resets the connection; 50 times."""
    body = media.png(64, 64)
    one = b"POST /upscale HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: %d\r\n\r\n" % len(body)
    port = int(ctx.base.rsplit(":", 1)[1])
    for _ in range(50):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.sendall((one + body) * 4)
        s.close()
    time.sleep(2)
    return {"connections": 50}


def many_scans(ctx: Ctx) -> dict[str, Any]:
    """12a: a progressive JPEG with 700k scans."""
    body = media.many_scan_jpeg(700_000)
    with ctx.client() as c:
        t = time.monotonic()
        r = c.post("/upscale", content=body, headers={"content-type": "image/jpeg"})
    return {"body_mb": round(len(body) / 1e6, 1), "status": r.status_code, "answer_s": round(time.monotonic() - t, 3)}


def thin_png(ctx: Ctx) -> dict[str, Any]:
    """12b: a 1 x 8,294,400 PNG."""
    body = media.png(8_294_400, 1)
    with ctx.client() as c:
        t = time.monotonic()
        r = c.post("/upscale", content=body, headers={"content-type": "image/png"})
    return {"status": r.status_code, "answer_s": round(time.monotonic() - t, 3)}


ATTACKS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    f.__name__: f
    for f in (
        big_frames_in_video,
        big_frames_in_stream,
        batch_4k,
        duration_lie,
        negative_duration,
        frame_flood,
        json_300mb,
        stream_churn,
        slowloris,
        pipelined_hangup,
        many_scans,
        thin_png,
    )  # fmt: skip
}


# ---- the harness -------------------------------------------------------------------------------------------------


def run_attack(name: str, work: Path) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="vsr-attack-tmp-"))
    port = free_port()
    env = os.environ | {"TMPDIR": str(tmp), "VSR_STREAM_ALLOW_FILE": "true", "VSR_STREAM_ALLOW_CIDRS": "127.0.0.0/8"}
    log_path = work / f"{name}.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)], cwd=REPO, env=env,
                                stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        rss_ready = status_kb(proc.pid, "VmHWM") * 1024
        prober = Prober(base)
        prober.start()
        t0 = time.monotonic()
        try:
            outcome = ATTACKS[name](Ctx(base, work, {"pid": proc.pid}))
        except Exception as e:  # noqa: BLE001 - a broken attack is reported, the others still run
            outcome = {"attack_error": f"{type(e).__name__}: {e}"}
        took = time.monotonic() - t0
        time.sleep(max(0.0, MIN_PROBE_S - took))  # enough health probes for a p99, and the aftermath
        prober.stop.set()
        prober.join()
        rss_peak = status_kb(proc.pid, "VmHWM") * 1024
        settle(base)
        rss_now = status_kb(proc.pid, "VmRSS") * 1024
        alive = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
    text = log_path.read_text()
    left = [str(p.relative_to(tmp)) for p in tmp.rglob("*")]
    return {
        "attack": name,
        "outcome": outcome,
        "seconds": round(took, 2),
        "peak_rss_mb": round(rss_peak / 2**20),
        "rss_at_ready_mb": round(rss_ready / 2**20),
        "rss_after_mb": round(rss_now / 2**20),
        "health": prober.summary(),
        "server_alive": alive,
        "exit_code": code,
        "tracebacks": text.count("Traceback"),
        "temp_files_left": left,
        "ok": rss_peak <= RSS_TARGET
        and prober.summary()["p99_s"] <= HEALTH_P99_TARGET_S
        and alive
        and "Traceback" not in text
        and not left,  # fmt: skip
    }


def table(results: list[dict[str, Any]]) -> str:
    rows = ["| attack | outcome | peak RSS MB | RSS after MB | health p99 / max s | tracebacks | temp left | ok |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for r in results:
        h = r["health"]
        rows.append(f"| {r['attack']} | {json.dumps(r['outcome'])[:160]} | {r['peak_rss_mb']} | {r['rss_after_mb']} | "
                    f"{h['p99_s']} / {h['max_s']} | {r['tracebacks']} | {len(r['temp_files_left'])} | {r['ok']} |")  # fmt: skip
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("attacks", nargs="*", help=f"default: all of {', '.join(ATTACKS)}")
    ap.add_argument("--out", default=str(REPO / "docs/reliability/attacks.json"))
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    if args.list:
        sys.stdout.write("\n".join(f"{k}: {v.__doc__}" for k, v in ATTACKS.items()) + "\n")
        return 0
    names = args.attacks or list(ATTACKS)
    unknown = [n for n in names if n not in ATTACKS]
    if unknown:
        sys.stderr.write(f"error: unknown attack(s): {', '.join(unknown)}\n")
        return 2
    work = Path(tempfile.mkdtemp(prefix="vsr-attack-"))
    results = []
    for name in names:
        results.append(run_attack(name, work))
        sys.stderr.write(json.dumps(results[-1]) + "\n")
    load = os.getloadavg()
    for r in results:
        r["loadavg_1m"] = round(load[0], 2)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = json.loads(out.read_text())["results"] if out.exists() else []  # other attacks' last figures stay
    merged = [r for r in kept if r["attack"] not in names] + results
    merged.sort(key=lambda r: list(ATTACKS).index(r["attack"]) if r["attack"] in ATTACKS else len(ATTACKS))
    out.write_text(json.dumps({"command": "python scripts/attack.py [ATTACK ...]", "results": merged}, indent=1))
    sys.stdout.write(table(merged) + f"\n\nload average at the end: {load[0]:.2f}; logs in {work}\n")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
