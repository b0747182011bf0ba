"""Runtime x precision on the same 640x360 frames (``vsr bench runtimes``): torch fp32/bf16, OpenVINO f32/bf16/int8
of each bundled camera-capable model, beside OpenCV ESPCN (the anchor users would pick), in one interleaved run.

Each row is a :class:`vsr.runner.FrameRunner` pinned to one runtime and precision (uint8 RGB frames in and out, the
luma models' colour conversion included), so a row is what every caller gets when the load-time choice picks it;
the ``auto`` row is that choice. int8 rows use the artifact's IR even when its check at export failed (``int8
used`` says whether the service would pick it). A candidate this CPU cannot run (oneDNN refusing bf16 on AVX2)
is reported, not timed. Targets (issue 18): int8 <= 0.05 dB below fp32 (model.json), one 640x360 camera at 30 fps
needs <= ~25 ms/frame of model time on these cores (the rest of a frame's 33 ms is decode, JPEG and HTTP).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.realtime import HEIGHT, WIDTH, bench_frames, cv_rgb, interleaved, opencv_anchors

MODELS = ["x2", "x2-camera", "x2-camera-fast", "x2-camera-lite"]
CANDIDATES = [("torch", "fp32"), ("torch", "bf16"), ("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8")]
CAMERA_BUDGET_MS = 25.0  # model time per frame that leaves a 30 fps camera its decode/encode/HTTP share of 33 ms


def cpu_flags() -> dict[str, Any]:
    """``lscpu``'s model name and the SIMD flags that decide which precisions are fast here."""
    info: dict[str, Any] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                info.setdefault("model", value.strip())
            if key.strip() == "flags":
                wanted = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")
                info["flags"] = [f for f in value.split() if f in wanted]
                break
    return info


def _runners(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(runner per "runtime/precision", notes) for one bundled model; candidates that fail are in the notes."""
    from vsr.artifact import load_artifact, resolve
    from vsr.ov import INT8_XML
    from vsr.runner import FrameRunner, RuntimeOptions

    model, meta = load_artifact(name)
    folder = resolve(name)
    int8 = folder / INT8_XML if (folder / INT8_XML).is_file() else None
    notes: dict[str, Any] = {"parameters": meta.parameters, "input_space": meta.input_space, "int8": _int8(meta)}
    runners: dict[str, Any] = {}
    for rt, p in CANDIDATES:
        if p == "int8" and int8 is None:
            continue
        try:
            opts = RuntimeOptions(rt, int8=int8)
            runners[f"{rt}/{p}"] = FrameRunner(
                model, scale=meta.scale, device=torch.device("cpu"), dtype=p, options=opts
            )
            runners[f"{rt}/{p}"](np.zeros((1, 32, 32, 3), np.uint8))
        except RuntimeError as e:
            runners.pop(f"{rt}/{p}", None)
            notes[f"{rt}/{p}"] = f"cannot run here: {str(e).splitlines()[0]}"
    if meta.input_space == "y" and int8 is not None:
        runners["openvino/int8 Y only"] = _y_only(int8, meta.scale)
    auto = FrameRunner(model, scale=meta.scale, device=torch.device("cpu"), options=RuntimeOptions(int8=int8))
    runners["auto"] = auto
    notes["auto"] = f"{auto.info.runtime}/{auto.info.precision}"
    return runners, notes


def _y_only(int8: Path, scale: int) -> Callable[[np.ndarray], np.ndarray]:
    """A luma model's int8 graph with uint8 Y in and out and none of the colour work that the RGB path puts around
    it (:func:`vsr.ov.rgb_around_luma`): what the model would cost a path that took Y from the decoder's yuv420p
    planes and encoded the output JPEG from the new Y and the source's chroma. Fed the frames' first channel (the
    content does not change the cost; the copy is ~0.2 MB)."""
    from vsr import ov

    kernel = ov.OvKernel(ov.read_int8(int8), scale=scale, precision="int8")
    return lambda frames: kernel(np.ascontiguousarray(frames[..., :1]))


def _int8(meta: Any) -> dict[str, Any] | None:
    rec = meta.int8
    if not rec:
        return None
    return {k: rec.get(k) for k in ("used", "delta_db", "psnr_y", "fp32_psnr_y", "reason")}


def run_runtimes(*, quick: bool, frames: int = 20) -> dict[str, Any]:
    from vsr import ov

    if not ov.available():
        return {"error": "openvino is not installed", "cpu": cpu_flags()}
    imgs = bench_frames(frames)
    fns: dict[str, Callable[[int], object]] = {}
    notes: dict[str, Any] = {}
    for name in MODELS:
        with contextlib.suppress(Exception):  # a model not bundled in this checkout (x2-camera-fast before it lands)
            runners, notes[name] = _runners(name)
            for key, r in runners.items():
                fns[f"{name} {key}"] = lambda i, r=r: r(imgs[i % len(imgs)][None])
    for k, sr in opencv_anchors().items():
        fns[k] = lambda i, sr=sr: cv_rgb(sr, imgs[i % len(imgs)])
    rounds, per_round = (2, 2) if quick else (5, max(frames // 5, 1))
    sec = interleaved(fns, rounds, per_round)
    rows = {
        k: {"ms_per_frame": round(1000 * med, 2), "best_ms_per_frame": round(1000 * best, 2)}
        for k, (med, best) in sec.items()
    }
    return {
        "input": f"{WIDTH}x{HEIGHT}",
        "frames": frames,
        "rounds": rounds,
        "per_round": per_round,
        "threads": torch.get_num_threads(),
        "cpu": cpu_flags(),
        "openvino": _version("openvino"),
        "env": {k: os.environ.get(k) for k in ("VSR_THREADS", "OMP_NUM_THREADS")},
        "models": notes,
        "rows": rows,
    }


def _version(pkg: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def runtimes_table(res: dict[str, Any]) -> str:
    if "rows" not in res:
        return f"not run: {res.get('error')}"
    lines = ["| path | ms/frame (median) | best round | 30 fps camera (<= 25 ms) |", "|---|---|---|---|"]
    for k, r in res["rows"].items():
        ok = "met" if r["best_ms_per_frame"] <= CAMERA_BUDGET_MS else "missed"
        lines.append(f"| {k} | {r['ms_per_frame']} | {r['best_ms_per_frame']} | {ok} |")
    return "\n".join(lines)


def runtimes_notes(res: dict[str, Any]) -> list[str]:
    cpu = res.get("cpu", {})
    out = [
        f"CPU: {cpu.get('model', '?')}, flags {', '.join(cpu.get('flags', [])) or 'none of AVX2/AVX-512/VNNI/AMX'}; "
        f"{res.get('threads')} threads, OpenVINO {res.get('openvino')}, {res.get('input')} in, x2 out, "
        f"{res.get('rounds')} interleaved rounds of {res.get('per_round')} frames; load average at start/end "
        f"{res.get('loadavg', {}).get('start')} / {res.get('loadavg', {}).get('end')} (ratios, not absolute ms).",
    ]
    if any(k.endswith(" Y only") for k in res.get("rows", {})):
        out.append(
            "- `openvino/int8 Y only`: a luma model's int8 graph with uint8 Y in and out, without the colour work "
            "around it (RGB to Y at the input, the chroma's upscaling and the RGB sum at the output): the gap to its "
            "`openvino/int8` row is what a stream path feeding Y from the decoder's planes and encoding the JPEG "
            "from the new Y and the source's chroma would save on the model's side (not built)."
        )
    if not any(k.startswith("opencv_") for k in res.get("rows", {})):
        out.append("- OpenCV ESPCN: not run (needs opencv-contrib, the `bench` extra, and ../shared/anchors).")
    for name, n in res.get("models", {}).items():
        q = n.get("int8")
        if q:
            verdict = "met" if q["used"] else f"missed ({q['reason']})"
            int8 = f"int8 {q['psnr_y']} vs fp32 {q['fp32_psnr_y']} dB PSNR-Y held out, -{q['delta_db']} dB: {verdict}"
        else:
            int8 = "no int8 variant"
        skipped = "; ".join(f"{k} {v}" for k, v in n.items() if "/" in k)
        out.append(f"- {name} ({n['parameters']} params, {n['input_space']}): auto chose {n['auto']}; {int8}"
                   + (f"; {skipped}" if skipped else "") + ".")  # fmt: skip
    return out
