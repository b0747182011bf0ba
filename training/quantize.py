"""int8 at export: NNCF post-training quantisation of an artifact, checked against its fp32 weights on held-out data.

What it writes beside the fp32 weights: ``model_int8.xml``/``.bin`` (an OpenVINO IR with pixel levels in and out,
like ``vsr.ov.LevelsNet``; the service adds uint8 NHWC I/O when it compiles it) and ``model.json``'s ``int8`` record:
PSNR-Y of the int8 and the fp32 model on the same held-out LR frames, the difference, and ``used``. A variant that
loses more than :data:`MAX_LOSS_DB` is written (to be looked at) but marked unused, with the reason; the service
never quantises (``vsr.artifact.int8_ir``).

Data: the artifact's training sets (``meta.data["train"]`` under ``data_root``). Calibration uses training images,
held-out evaluation the hash-held-out slice (``training.data.split_holdout``: never trained on). Each image gives an
LR crop by bicubic (clean) and, for every second image, a short pan clip through an H.264 round trip
(``training.camera``): the compressed camera frames the camera models serve. Seeded: the same artifact and data give
the same record.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.camera import codec_roundtrip, pan_zoom_clip
from training.data import list_images, load_cached, split_holdout
from vsr.artifact import META_NAME, ArtifactMeta, load_artifact, now_iso, resolve
from vsr.imageops import downscale
from vsr.ov import INT8_XML, LevelsNet, OvKernel, levels_model

log = logging.getLogger(__name__)

MAX_LOSS_DB = 0.05  # the most PSNR-Y an int8 variant may lose against its fp32 weights and still be used


@dataclass(frozen=True)
class QuantizeConfig:
    calib_images: int = 32  # training images (each one crop; every second also a 4-frame H.264 clip)
    eval_images: int = 24  # held-out images, same recipe
    lr_size: int = 96  # LR crop side
    crf: tuple[int, int] = (23, 28)  # H.264 quality range of the compressed frames
    holdout: int = 10  # training.config.TrainConfig.holdout: ~1 image in 10 is held out
    seed: int = 0


def frames_for(paths: list[Path], scale: int, cfg: QuantizeConfig, rng: np.random.Generator) -> list[tuple[Any, Any]]:
    """(LR, HR) uint8 RGB pairs: a clean bicubic crop of each image, and for every second image a 4-frame pan
    clip through H.264 at a CRF in ``cfg.crf`` (the clip's frames keep their HR crops as targets)."""
    hr_side = cfg.lr_size * scale
    out: list[tuple[Any, Any]] = []
    for i, path in enumerate(paths):
        img = load_cached(path)
        h, w = img.shape[:2]
        if h < hr_side + 8 or w < hr_side + 8:
            continue
        y, x = int(rng.integers(0, h - hr_side + 1)), int(rng.integers(0, w - hr_side + 1))
        hr = img[y : y + hr_side, x : x + hr_side]
        out.append((downscale(hr, scale), hr))
        if i % 2:
            clip = pan_zoom_clip(img, frames=4, size=(hr_side, hr_side), rng=rng, max_speed=2.0)
            lr = np.stack([downscale(f, scale) for f in clip])
            lr = codec_roundtrip(lr, codec="h264", crf=int(rng.integers(cfg.crf[0], cfg.crf[1] + 1)))
            out += list(zip(lr, clip, strict=True))
    return out


def _pick(paths: list[Path], n: int, rng: np.random.Generator) -> list[Path]:
    return [paths[i] for i in sorted(rng.choice(len(paths), min(n, len(paths)), replace=False))]


def _luma(rgb: np.ndarray) -> np.ndarray:
    """Full-range BT.601 Y in levels (float), of uint8 RGB HWC."""
    f = rgb.astype(np.float64)
    return 0.299 * f[..., 0] + 0.587 * f[..., 1] + 0.114 * f[..., 2]


def model_input(lr: np.ndarray, luma: bool) -> np.ndarray:
    """The levels graph's input (float32 1 x C x h x w): RGB levels, or Y levels rounded as a decoder's plane."""
    if luma:
        return np.round(_luma(lr)).astype(np.float32)[None, None]
    return lr.astype(np.float32).transpose(2, 0, 1)[None].copy()


def psnr_y(out_levels: np.ndarray, hr: np.ndarray, *, luma: bool, border: int) -> float:
    """PSNR-Y of a levels graph's output (1 x C x H x W) against the HR RGB crop, ``border`` px shaved."""
    y = out_levels[0, 0].astype(np.float64) if luma else _luma(np.clip(out_levels[0].transpose(1, 2, 0), 0, 255))
    ref = _luma(hr)
    b = border
    mse = float(np.mean((y[b:-b, b:-b] - ref[b:-b, b:-b]) ** 2))
    return 10.0 * float(np.log10(255.0**2 / max(mse, 1e-10)))


def quantize_artifact(artifact: str | Path, data_root: str | Path, cfg: QuantizeConfig | None = None) -> dict[str, Any]:
    """Quantise ``artifact``'s model with NNCF, check it on held-out frames, write the IR and the ``int8`` record."""
    import nncf
    import openvino as ov

    cfg = cfg or QuantizeConfig()
    folder = resolve(artifact)
    model, meta = load_artifact(folder, rgb=False)
    luma = meta.input_space == "y"
    sets = [Path(data_root) / s for s in meta.data.get("train", [])]
    if not sets:
        raise ValueError(f"{folder}: model.json names no training sets (data.train) to calibrate on")
    train, held = split_holdout(list_images(sets), cfg.holdout)
    rng = np.random.default_rng(cfg.seed)
    calib_paths, eval_paths = _pick(train, cfg.calib_images, rng), _pick(held, cfg.eval_images, rng)
    if not calib_paths or not eval_paths:
        raise ValueError(f"too few images in {sets} for calibration and a held-out check")
    calib = [model_input(lr, luma) for lr, _ in frames_for(calib_paths, meta.scale, cfg, rng)]
    evals = frames_for(eval_paths, meta.scale, cfg, rng)
    graph = levels_model(model, 1 if luma else 3)
    quantized = quantize_graph(graph, calib)
    xml = folder / INT8_XML
    ov.save_model(quantized, str(xml), compress_to_fp16=False)
    record = _check(model, xml, evals, meta, luma=luma)
    record |= {
        "file": INT8_XML,
        "method": "NNCF post-training quantisation, activation ranges min/max over the calibration frames, "
        "int8 at convolution inputs only",
        "nncf": nncf.__version__,
        "openvino": ov.__version__,
        "calibration": {"frames": len(calib), "images": min(cfg.calib_images, len(train)), "h264_crf": list(cfg.crf)},
        "held_out": {"frames": len(evals), "images": min(cfg.eval_images, len(held)), "every": cfg.holdout},
        "data": {"root": str(data_root), "sets": meta.data.get("train", [])},
        "created": now_iso(),
    }
    write_meta(folder, meta.model_copy(update={"int8": record}))
    log.info("int8 %s: %.3f dB vs fp32 %.3f dB (%+.3f): %s", meta.name, record["psnr_y"],
             record["fp32_psnr_y"], -record["delta_db"], "used" if record["used"] else record["reason"])  # fmt: skip
    return record


def quantize_graph(graph: Any, calib: list[np.ndarray]) -> Any:
    """The int8 graph of a float levels graph: NNCF post-training quantisation on ``calib`` (min/max ranges), int8
    at convolution inputs only. What ``vsr export --int8`` writes, and what ``bench.arch_speed`` times."""
    import nncf

    quantized = nncf.quantize(graph, nncf.Dataset(calib), subset_size=len(calib), advanced_parameters=_minmax())
    return convolutions_only(quantized)


def convolutions_only(model: Any) -> Any:
    """Keep int8 where it computes: each quantiser feeds convolutions only; every other consumer (the anchor's
    upsampling, the residual add, the pixel shuffle) reads the float value again.

    NNCF also quantises the anchor + residual sum on its way to the pixel shuffle, symmetric signed over about
    [-1.16, 1.15]: a step of ~2.3 output levels, on every output pixel. On an x2-camera-fast checkpoint (luma 16x6)
    that cost 0.108 dB on held-out frames; convolution inputs only: 0.005 dB (int8 ~10 % slower than with it,
    still ~1.6x f32, on a loaded AVX2 CPU)."""
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize":
            continue
        for target in list(op.output(0).get_target_inputs()):
            if target.get_node().get_type_name() not in ("Convolution", "GroupConvolution"):
                target.replace_source_output(op.input_value(0))
    model.validate_nodes_and_infer_types()
    return model


def _minmax() -> Any:
    """Activation ranges from the min/max over all calibration frames. NNCF's default (the mean of each frame's
    min/max) clips the rare large activations of a small SR net: on the bundled x2, 0.12 dB lost on held-out
    frames against 0.02 dB with min/max (0.02 with histogram ranges, 0.18 with quantiles)."""
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    return AdvancedQuantizationParameters(activations_range_estimator_params=RangeEstimatorParametersSet.MINMAX)


def _check(
    model: torch.nn.Module, xml: Path, evals: list[tuple[Any, Any]], meta: ArtifactMeta, *, luma: bool
) -> dict[str, Any]:
    """Mean PSNR-Y of fp32 (torch, the exact weights) and int8 (the IR just written) on the held-out frames."""
    from vsr.ov import read_int8

    ref = LevelsNet(model.float().eval())
    kernel = OvKernel(read_int8(xml), scale=meta.scale, precision="int8")
    fp32, int8 = [], []
    for lr, hr in evals:
        x = model_input(lr, luma)
        with torch.inference_mode():
            fp32.append(psnr_y(ref(torch.from_numpy(x)).numpy(), hr, luma=luma, border=meta.scale))
        q = kernel(np.ascontiguousarray(x.transpose(0, 2, 3, 1)).round().clip(0, 255).astype(np.uint8))
        int8.append(psnr_y(q.transpose(0, 3, 1, 2).astype(np.float32), hr, luma=luma, border=meta.scale))
    a, b = float(np.mean(fp32)), float(np.mean(int8))
    delta = round(a - b, 4)
    used = delta <= MAX_LOSS_DB
    reason = None if used else f"loses {delta:.3f} dB PSNR-Y against fp32 (more than {MAX_LOSS_DB})"
    return {"psnr_y": round(b, 4), "fp32_psnr_y": round(a, 4), "delta_db": delta, "used": used, "reason": reason}


def write_meta(folder: Path, meta: ArtifactMeta) -> None:
    """Rewrite ``model.json`` (as ``vsr.artifact.save_artifact`` writes it); the weights are not touched."""
    (folder / META_NAME).write_text(json.dumps(meta.model_dump(), indent=2) + "\n")
