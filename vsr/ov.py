"""OpenVINO as the CPU runtime: one model graph with uint8 NHWC in and out, compiled once per input shape.

- The graph: the model in pixel levels (``x / 255`` in, ``x 255``, clamp and round out: :class:`LevelsNet`), converted
  straight from torch (``openvino.convert_model``; ~0.5 s for a student, no ONNX file on the way) with dynamic N, H, W.
  The uint8 <-> float conversions and the NHWC <-> NCHW transposes are added inside the graph by OpenVINO's
  pre/post-processing API (:func:`with_uint8_io`), so a frame goes in and out as the decoder/encoder's uint8 array
  and no full-frame float pass runs in numpy or torch. A luma model's Y graph is wrapped in its colour work
  (:func:`rgb_around_luma`), so it too takes and gives RGB.
- int8: a post-training quantised IR written at export (``training.quantize``), stored in the artifact folder as
  ``model_int8.xml``/``.bin`` (levels in/out like :class:`LevelsNet`); loaded here, never made here.
- Compiled once per input shape (a camera has one; uploads vary), static shapes, the last :data:`MAX_SHAPES` kept.
  OpenVINO's model cache (``CACHE_DIR``, :func:`default_cache_dir`) keeps compiled blobs on disk across restarts.
- Threads: ``INFERENCE_NUM_THREADS`` = torch's intra-op threads (``VSR_THREADS``, default all cores), one stream,
  latency hint: one frame at a time on all cores, as the torch path runs.

Import this module only where ``openvino`` is installed (:func:`available`); torch stays the fallback.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    import openvino as ov

log = logging.getLogger(__name__)

INT8_XML = "model_int8.xml"  # the artifact's int8 variant (an OpenVINO IR; its weights in model_int8.bin)
PARALLEL_STREAMS = 2  # frames of a batch run side by side, each on threads / 2 (one thread each on 2 cores)
MAX_SHAPES = 8  # compiled shapes kept per kernel (~50 ms to compile one, less from the disk cache)
# OpenVINO's name for each precision; int8 runs its quantised ops in int8 and the rest in f32
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_core_lock = threading.Lock()
_cores: dict[str, Any] = {}


def available() -> bool:
    """True when the ``openvino`` package can be imported (it is a main dependency; a slim install may lack it)."""
    return importlib.util.find_spec("openvino") is not None


def default_cache_dir() -> Path:
    """``VSR_OV_CACHE_DIR``, else ``$XDG_CACHE_HOME/vsr/ov`` (``~/.cache/vsr/ov``)."""
    if env := os.environ.get("VSR_OV_CACHE_DIR", "").strip():
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(base) / "vsr" / "ov"


def core(cache_dir: Path | None) -> ov.Core:
    """One ``openvino.Core`` per cache folder (the cache is a property of the core)."""
    import openvino as ov

    key = str(cache_dir or "")
    with _core_lock:
        c = _cores.get(key)
        if c is None:
            c = ov.Core()
            if cache_dir is not None:
                cache_dir.mkdir(parents=True, exist_ok=True)
                c.set_property({"CACHE_DIR": str(cache_dir)})
            _cores[key] = c
        return c


class LevelsNet(nn.Module):
    """``model`` in pixel levels: float NCHW in 0..255 -> float NCHW in 0..255, clamped and rounded.

    The ``/ 255`` and ``x 255`` fold into the first and last convolutions when OpenVINO compiles the graph."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.model(x / 255.0)
        return (y * 255.0).clamp(0.0, 255.0).round()


def levels_model(model: nn.Module, channels: int) -> ov.Model:
    """The float graph of ``model`` in levels (input ``lr``: N x channels x H x W, dynamic N/H/W)."""
    import openvino as ov

    net = LevelsNet(model.float().eval()).eval()
    example = torch.rand(1, channels, 32, 32) * 255.0
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the converter traces with torch.jit (torch 2.13 warns)
        graph = ov.convert_model(net, example_input=example, input=[(-1, channels, -1, -1)])
    graph.inputs[0].get_tensor().set_names({"lr"})
    return graph


def with_uint8_io(graph: ov.Model) -> ov.Model:
    """uint8 NHWC in and out, inside the graph (``graph`` takes and gives float NCHW levels; it is not changed: the
    pre/post-processor rewires the model it is given, and the runner builds several kernels from one graph)."""
    import openvino as ov
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(graph.clone())
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    ppp.input().preprocess().convert_element_type(ov.Type.f32)
    ppp.output().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.output().model().set_layout(ov.Layout("NCHW"))
    return ppp.build()


def read_int8(xml: Path) -> ov.Model:
    """The artifact's int8 IR (float levels in/out, like :func:`levels_model`)."""
    return core(None).read_model(str(xml))


def bilinear_weights(scale: int) -> tuple[np.ndarray, int]:
    """torch's bilinear (``align_corners=False``) as a 1-D filter: output ``o`` takes input ``j`` with weight
    ``w[o - scale j - first]``; ``first`` is the smallest offset with a weight (-1 at x2, -2 at x4)."""
    offsets = np.arange(-scale, 2 * scale)
    w = np.maximum(0.0, 1.0 - np.abs((offsets + 0.5 - scale / 2) / scale))
    used = np.nonzero(w)[0]
    return w[used[0] : used[-1] + 1].astype(np.float32), int(offsets[used[0]])


def _bilinear_up(x: ov.Output, scale: int, channels: int) -> ov.Node:
    """``x`` (N x channels x H x W) upscaled ``scale`` times as torch's bilinear with ``align_corners=False``: a
    depthwise transposed convolution (stride ``scale``, the 2-D tent filter) on the input edge-padded by a pixel, its
    output cropped by the convolution's pads. The padding is torch's border clamp: the source coordinate of an edge
    output pixel falls up to half a pixel outside, where torch takes the edge pixel's value."""
    import openvino.opset13 as ops

    w1, first = bilinear_weights(scale)
    taps = len(w1)
    w = np.broadcast_to(np.outer(w1, w1), (channels, 1, 1, taps, taps)).astype(np.float32)
    one = ops.constant(np.array([0, 0, 1, 1], np.int64))
    padded = ops.pad(x, one, one, "edge")
    # padded input j + 1 holds input j; output o = scale j + d lands at scale (j + 1) + d - first before the crop,
    # and scale (W + 1) + taps - begin - end = scale W
    begin = scale - first
    end = scale + taps - begin
    return ops.group_convolution_backprop_data(
        padded,
        ops.constant(w),
        strides=[scale, scale],
        pads_begin=[begin, begin],
        pads_end=[end, end],
        dilations=[1, 1],
    )


def rgb_around_luma(graph: ov.Model, scale: int) -> ov.Model:
    """A luma graph (float Y levels N x 1 x H x W in/out) as an RGB graph: float RGB levels N x 3 x H x W in, N x 3 x
    sH x sW out, clamped and rounded; the colour work of :class:`vsr.luma.LumaAsRGB` inside OpenVINO's graph.

    ``LumaAsRGB`` computes ``RGB = Y_sr c + B up(C RGB_in)`` (``c``, ``B``: the inverse matrix's first column and the
    rest; ``C``: the Cb/Cr rows). Matrices and the bilinear upscaling are linear and per-pixel/per-channel, and
    ``B C = I - c m_y`` (``m_y``: the Y row), so this graph computes ``RGB = Y_sr c + up((I - c m_y) RGB_in)``: one 3x3
    matrix at the input size, the upscaling of those 3 channels, then ``Y_sr`` (clamped 0..255, as the torch path's
    8-bit Y plane is: :mod:`vsr.yuv`) times ``c`` (ones in BT.601) added, clamp 0..255, round. Why: the colour work
    this replaces (a Cb/Cr convolution, Interpolate on Cb/Cr at the output size, a 2 -> 3 matrix there and a multiply)
    cost more than a luma net saves over the RGB one; in OpenVINO's per-op profile (``PERF_COUNT``, x2 int8 at 720p
    out, AVX2) Interpolate alone was as slow as the net's largest convolution. What is left: the 3x3 matrix and the
    edge pad at the input size, the upscaling (:func:`_bilinear_up`: a depthwise transposed convolution, OpenVINO's
    JIT depthwise kernel, about a tenth of Interpolate's time in that profile) and one fused add/clamp/round pass at
    the output size; the upscaling runs 3 channels where Interpolate ran 2.
    Only RGB is rounded, at the end; the torch path also rounds Y before and after the net, so the two
    differ by up to 2 levels, and this graph is within a level of the float reference (``LumaAsRGB``, whose Y is not
    clamped) where the net's Y stays in 0..255 (tests/vsr/test_ov_luma.py). ``graph`` is not changed (a clone)."""
    import openvino as ov
    import openvino.opset13 as ops

    from vsr.luma import _RGB2YCC, _YCC2RGB

    graph = graph.clone()
    [y_param], [y_result] = graph.get_parameters(), graph.get_results()
    rgb = ops.parameter([-1, 3, -1, -1], ov.Type.f32, name="rgb")
    rgb.output(0).get_tensor().set_names({"lr"})

    def mix(x: ov.Output, m: torch.Tensor) -> ov.Node:  # a colour matrix as a 1x1 convolution
        w = ops.constant(m.numpy().astype(np.float32).reshape(m.shape[0], m.shape[1], 1, 1))
        return ops.convolution(x, w, strides=[1, 1], pads_begin=[0, 0], pads_end=[0, 0], dilations=[1, 1])

    y = mix(rgb.output(0), _RGB2YCC[:1])
    for target in y_param.output(0).get_target_inputs():
        target.replace_source_output(y.output(0))
    column = _YCC2RGB[:, :1].double()
    chroma = torch.eye(3, dtype=torch.float64) - column @ _RGB2YCC[:1].double()  # = B C, without B's rounding
    y_out = y_result.input_value(0)
    if y_out.get_node().get_type_name() == "Round":  # round once, RGB at the end, as the float reference does
        y_out = y_out.get_node().input_value(0)
    y_rgb = ops.multiply(y_out, ops.constant(column.numpy().astype(np.float32).reshape(1, 3, 1, 1)))
    rgb_out = ops.add(y_rgb, _bilinear_up(mix(rgb.output(0), chroma.float()).output(0), scale, 3))
    out = ops.round(ops.clamp(rgb_out, 0.0, 255.0), "half_to_even")
    return ov.Model([ops.result(out)], [rgb], "rgb_around_luma")


class OvKernel:
    """uint8 NHWC in -> uint8 NHWC ``scale`` x out through OpenVINO on the CPU (the :class:`vsr.kernel.Kernel`
    interface). ``graph``: float levels in/out (:func:`levels_model` or an int8 IR); ``precision``: fp32/bf16/int8.
    """

    def __init__(
        self,
        graph: ov.Model,
        *,
        scale: int,
        precision: str,
        threads: int | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.core = core(cache_dir)
        caps = list(self.core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        if precision == "bf16" and "BF16" not in caps:
            # OpenVINO would quietly run f32 under a bf16 label: a duplicate candidate that reports a false precision
            raise RuntimeError(f"OpenVINO has no bf16 on this CPU (its capabilities: {', '.join(caps)})")
        self.scale, self.precision = scale, precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.channels = int(graph.inputs[0].get_partial_shape()[1].get_length())
        self.graph = with_uint8_io(graph)
        self.config = {
            "INFERENCE_NUM_THREADS": str(threads or torch.get_num_threads()),
            "NUM_STREAMS": "1",
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": HINTS[precision],
        }
        self._compiled: OrderedDict[tuple[int, ...], Any] = OrderedDict()  # shape -> infer request
        # a batch of several frames runs as one request per frame on a throughput compile of two streams, each on
        # half the threads, with no barrier between them (see :meth:`_parallel`); the service batches 2 on CPU
        self.streams = PARALLEL_STREAMS if int(self.config["INFERENCE_NUM_THREADS"]) >= PARALLEL_STREAMS else 0
        self.throughput = {**self.config, "NUM_STREAMS": str(self.streams), "PERFORMANCE_HINT": "THROUGHPUT"}
        # frame shape -> (its output shape, one request per stream)
        self._parallel_reqs: OrderedDict[tuple[int, ...], tuple[tuple[int, ...], list[Any]]] = OrderedDict()
        self.compiled = False  # torch.compile's flag on the torch kernels; not used here
        self.compiles = 0  # shapes compiled so far: a call that compiled is not a cost sample (vsr.runner.Cost)

    def _compiled_for(
        self,
        cache: OrderedDict[tuple[int, ...], Any],
        shape: tuple[int, ...],
        config: dict[str, str],
        build: Callable[[Any], Any],
    ) -> Any:
        """``cache[shape]``, or the graph compiled for ``shape`` with ``config`` and made into ``build(compiled)``;
        the last :data:`MAX_SHAPES` kept."""
        entry = cache.get(shape)
        if entry is not None:
            cache.move_to_end(shape)
            return entry
        graph = self.graph.clone()
        graph.reshape({0: list(shape)})
        entry = cache[shape] = build(self.core.compile_model(graph, "CPU", config))
        self.compiles += 1
        while len(cache) > MAX_SHAPES:
            cache.popitem(last=False)
        log.debug("openvino %s: compiled for %s (%s)", self.precision, shape, config["PERFORMANCE_HINT"])
        return entry

    def _request(self, shape: tuple[int, ...]) -> Any:
        return self._compiled_for(self._compiled, shape, self.config, lambda c: c.create_infer_request())

    def _parallel(self, frames: np.ndarray) -> np.ndarray:
        """Each frame on its own request of a throughput compile (``streams`` streams sharing the threads), at most
        ``streams`` at once. Measured on 2 Zen 3 cores, ms per 640x360 frame, a pair of frames: x2-camera-fast int8
        27.2 this way vs 30.9 one after the other on two threads (29.8 as one batch of 2); x2-camera-lite 14.0 vs
        14.1. The gain is under load: a one-thread request that loses its core to a decoder or a JPEG encode slows
        alone, where a two-thread request stalls both threads at its barrier."""
        out_shape, reqs = self._compiled_for(
            self._parallel_reqs,
            (1, *frames.shape[1:]),
            self.throughput,
            lambda c: (tuple(c.output(0).shape), [c.create_infer_request() for _ in range(self.streams)]),
        )
        out = np.empty((len(frames), *out_shape[1:]), np.uint8)
        for start in range(0, len(frames), len(reqs)):
            running = list(zip(reqs, range(start, min(start + len(reqs), len(frames))), strict=False))
            for req, i in running:
                req.start_async({0: np.ascontiguousarray(frames[i : i + 1])})
            for req, i in running:
                req.wait()
                out[i] = req.get_output_tensor(0).data[0]
        return out

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        single = frames.ndim == 3
        if single:
            frames = frames[None]
        if frames.shape[-1] != self.channels:
            raise ValueError(f"expected {self.channels} channel(s), got frames of shape {frames.shape}")
        if self.streams and len(frames) > 1:
            return self._parallel(frames)
        req = self._request(tuple(frames.shape))
        out: np.ndarray = req.infer({0: np.ascontiguousarray(frames)})[0]
        out = out.copy()  # the request owns its output buffer: the next call would overwrite it
        return out[0] if single else out
