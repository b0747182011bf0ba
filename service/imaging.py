"""The service's side of the image contract (:mod:`vsr.images`): media types, and decoding on a worker thread, at
most one per core, before the request's deadline. Decode and encode themselves are the CLI's code too.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial

import anyio

from vsr.images import DecodedImage, DecodeLimits, decode

OUTPUT_MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
IMAGE_CONTENT_TYPES = frozenset(
    {"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/webp", "image/bmp", "image/x-bmp", "image/x-ms-bmp"}
)


class DecodeDeadline(Exception):
    """The image was not decoded before the request's deadline."""


async def decode_async(
    data: bytes, *, limits: DecodeLimits, deadline: float, limiter: anyio.CapacityLimiter, ycc: bool = False
) -> DecodedImage:
    """:func:`vsr.images.decode` on a worker thread, at most ``limiter`` at once (decoding is CPU: more threads than
    cores only slow each other and the event loop down); :class:`DecodeDeadline` at ``deadline``
    (``time.monotonic()``). ``ycc``: keep a JPEG's YCbCr too (a luma model's input)."""
    work = partial(decode, data, limits, ycc=ycc)
    try:
        return await asyncio.wait_for(
            anyio.to_thread.run_sync(work, limiter=limiter, abandon_on_cancel=True),
            timeout=max(deadline - time.monotonic(), 0.0),
        )
    except TimeoutError:
        raise DecodeDeadline("the image was not decoded before the request's deadline") from None
