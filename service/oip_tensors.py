"""The one check of an Open Inference Protocol request's tensor framing, shape and sizes, before anything is allocated.

Every number a client sends is checked here before it sizes an allocation, a loop or a parse:

- ``Inference-Header-Content-Length``: ASCII digits within the body (``int('²')`` is a ValueError, not a 400);
- the JSON header's nesting (``[`` and ``{``) is bounded before ``json.loads`` walks it (100,000 ``[`` made the C
  parser raise RecursionError deep inside, a 500): the deepest legitimate header is an object holding the inputs
  array holding a tensor object holding its data nested by the tensor's rank (at most 4);
- the shape: 3 or 4 plain integers (not ``true``, not ``"2"``), each >= 1 and at most the pixel cap, so that their
  product is computed on small numbers (``2**100`` overflowed numpy's int64: a 500) and then capped;
- a batch can never be larger than the queue can hold at once (it would get 503 + Retry-After forever);
- JSON data must be flat or nested exactly as the shape (3x4 for ``[2, 2, 3]`` is refused, not reshaped);
- an output too large for JSON (each value costs ~4 bytes of text and a Python int) goes binary unless the client
  asked for JSON, which is then refused (``JSON_OUTPUT_MAX_VALUES``).

Errors are typed (:class:`BadTensor`, :class:`TensorTooLarge`); the web layer gives them their status.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod

import numpy as np

from service.batcher import QUEUE_SHARE, Batcher
from vsr import images

DATATYPE = "UINT8"
MAX_RANK = 4  # [N, H, W, 3]
# object > inputs array > tensor object > data nested by rank; +2 for a client's nested ``parameters``.
MAX_HEADER_DEPTH = 3 + MAX_RANK + 2
# JSON output values (4 Mi: a ~1180x1180 RGB output, ~16 MB of JSON). Larger outputs go binary by default.
JSON_OUTPUT_MAX_VALUES = 4 * 1024 * 1024
_DIGITS = re.compile(r"[0-9]{1,12}")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_CHUNK = 1 << 20  # brackets per numpy pass (a cumulative sum of int32: 4 MiB)


class BadTensor(ValueError):
    """The request is malformed (the web layer's error table: 400)."""


class TensorTooLarge(images.ImageOverLimit, BadTensor):
    """Well-formed but over a size limit (413, not retryable: the same request fails the same way). An
    ``ImageOverLimit``, so it is counted with the other refusals by size (``vsr_rejected_total{reason="too_large"}``)."""


class TooManyPixels(images.TooManyPixels, TensorTooLarge):
    """``N*H*W`` (or one dimension) over ``VSR_MAX_INPUT_PIXELS``: answered as an image over the cap."""


class BatchTooLarge(TensorTooLarge):
    """More frames than the inference queue can ever hold at once."""


class OutputTooLarge(TensorTooLarge):
    """JSON output asked for a tensor over ``JSON_OUTPUT_MAX_VALUES``."""


@dataclass(frozen=True)
class TensorLimits:
    """``max_frames``: the inference queue's frame limit; ``max_queue_bytes``: the bytes queued inputs may hold
    (a share of the memory budget; None without one). A batch over what they hold at once can never be queued."""

    max_pixels: int
    max_frames: int
    max_queue_bytes: int | None = None
    json_output_values: int = JSON_OUTPUT_MAX_VALUES

    @classmethod
    def for_batcher(cls, max_pixels: int, batcher: Batcher) -> TensorLimits:
        queue_bytes = batcher.budget // QUEUE_SHARE if batcher.budget else None
        return cls(max_pixels, max_frames=batcher.queue_limit, max_queue_bytes=queue_bytes)

    def batch_capacity(self, frame_bytes: int) -> int:
        """The most frames of ``frame_bytes`` one source can ever have queued at once (an empty queue takes one)."""
        if self.max_queue_bytes is None:
            return self.max_frames
        return max(1, min(self.max_frames, self.max_queue_bytes // max(frame_bytes, 1)))


def header_length(value: str | None, body_len: int) -> int | None:
    """``Inference-Header-Content-Length`` as a byte count within the body (None: the whole body is JSON)."""
    if value is None:
        return None
    value = value.strip()
    if not _DIGITS.fullmatch(value) or int(value) > body_len:
        raise BadTensor(f"Inference-Header-Content-Length must be a byte count within the body ({body_len} bytes)")
    return int(value)


def check_depth(header: bytes, max_depth: int = MAX_HEADER_DEPTH) -> None:
    """Refuse JSON nested deeper than ``max_depth`` before a parser recurses into it (strings do not count).

    Linear and vectorised: strings are blanked by one regular expression, everything but brackets is dropped by
    ``bytes.translate``, and the running depth is a cumulative sum per chunk."""
    brackets = _STRING.sub(b'""', header).translate(None, _NOT_BRACKETS)
    depth = 0
    for start in range(0, len(brackets), _DEPTH_CHUNK):
        chunk = np.frombuffer(brackets, np.uint8, count=min(_DEPTH_CHUNK, len(brackets) - start), offset=start)
        steps = np.where((chunk == ord("[")) | (chunk == ord("{")), 1, -1).astype(np.int32)
        running = np.cumsum(steps, dtype=np.int32) + depth
        if int(running.max()) > max_depth:
            raise BadTensor(f"the inference request header is nested deeper than {max_depth} levels")
        depth = int(running[-1])


def check_shape(shape: object, limits: TensorLimits) -> tuple[int, ...]:
    """``[H, W, 3]`` or ``[N, H, W, 3]`` of plain positive integers within the pixel cap and the queue's capacity."""
    if (
        not isinstance(shape, Sequence)
        or isinstance(shape, str | bytes)
        or len(shape) not in (3, MAX_RANK)
        or not all(type(d) is int for d in shape)  # not bool (an int subclass), not "2"
        or shape[-1] != 3
        or min(shape) < 1
    ):
        raise BadTensor(f"input 'image' must have shape [H, W, 3] or [N, H, W, 3] (RGB), got {_show(shape)}")
    dims = tuple(int(d) for d in shape)
    if max(dims) > limits.max_pixels:  # each dimension small before any product is taken
        raise TooManyPixels(f"{_show(shape)} has a dimension over the pixel limit of {limits.max_pixels}")
    pixels = prod(dims[:-1])  # N*H*W: one request's pixels, capped like one image
    if pixels > limits.max_pixels:
        raise TooManyPixels(f"{list(dims)} is {pixels} pixels, over the limit of {limits.max_pixels}")
    frames = dims[0] if len(dims) == MAX_RANK else 1
    capacity = limits.batch_capacity(prod(dims[-3:]))
    if frames > capacity:
        raise BatchTooLarge(
            f"a batch of {frames} frames is over the limit of {capacity} frames of this size per request "
            "(the inference queue's capacity, VSR_QUEUE_LIMIT); send smaller batches"
        )
    return dims


def json_values(data: object, shape: tuple[int, ...]) -> np.ndarray:
    """JSON ``data`` (flat, or nested exactly as ``shape``) as a flat uint8 array."""
    count = prod(shape)
    try:
        values = np.asarray(data)
    except (ValueError, TypeError, OverflowError):
        raise BadTensor("input 'image' data is not a regular array of integers") from None
    if values.dtype.kind not in "iu" or values.size != count:  # bools, floats, strings, huge ints: refused
        raise BadTensor(f"input 'image' data must be {count} integers for shape {list(shape)}")
    if values.ndim != 1 and values.shape != shape:
        raise BadTensor(f"input 'image' data is nested as {list(values.shape)}; send it flat or as {list(shape)}")
    if values.min() < 0 or values.max() > 255:
        raise BadTensor(f"input 'image' data must be within 0..255 ({DATATYPE})")
    return values.astype(np.uint8).ravel()


def binary_output(requested: bool | None, out_values: int, limits: TensorLimits) -> bool:
    """Whether the output goes binary: as requested; by default only when it is over the JSON output cap."""
    if requested is None:
        return out_values > limits.json_output_values
    if not requested and out_values > limits.json_output_values:
        raise OutputTooLarge(
            f"the output has {out_values} values, over the JSON output limit of {limits.json_output_values}; "
            "request it with binary_data"
        )
    return requested


def _show(shape: object) -> str:
    text = repr(shape)
    return text if len(text) <= 80 else text[:77] + "..."
