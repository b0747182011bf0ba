"""A bounded HTTP load generator: ``concurrency`` clients POST an image back to back for ``seconds``.

Runs in its own process (``python -m tests.reliability.loadgen``) so the clients do not share the server's GIL;
prints one JSON object: every request's status, latency, Retry-After and whether an error carried the JSON envelope.

    python -m tests.reliability.loadgen --url http://127.0.0.1:8000/upscale --image in.png --concurrency 24 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import httpx


def envelope_ok(r: httpx.Response) -> bool:
    if r.status_code < 400:
        return True
    try:
        body = r.json()
    except ValueError:
        return False
    return isinstance(body, dict) and set(body) == {"error"} and set(body["error"]) == {"code", "message"}


async def client(c: httpx.AsyncClient, url: str, body: bytes, ctype: str, end: float, out: list) -> None:
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            r = await c.post(url, content=body, headers={"content-type": ctype})
        except httpx.HTTPError as e:
            out.append([0, time.monotonic() - t0, None, False, type(e).__name__])
            continue
        out.append([r.status_code, time.monotonic() - t0, r.headers.get("retry-after"), envelope_ok(r), None])


async def run(url: str, body: bytes, ctype: str, concurrency: int, seconds: float) -> dict:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    out: list = []
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:
        start = time.monotonic()
        end = start + seconds
        await asyncio.gather(*(client(c, url, body, ctype, end, out) for _ in range(concurrency)))
        elapsed = time.monotonic() - start
    return {"elapsed_s": elapsed, "concurrency": concurrency, "results": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--url", required=True)
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("--content-type", default="image/png")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=3.0)
    a = p.parse_args(argv)
    result = asyncio.run(run(a.url, a.image.read_bytes(), a.content_type, a.concurrency, a.seconds))
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
