"""The real-time frame path, measured in one run on the same 640x360 JPEG frames (``vsr bench kernel engine cli``):

- ``kernel``: the bare fast kernel the engine chose (``vsr.kernel.StudentKernel`` or ``vsr.ov.OvKernel``, as it
  measured; a luma model's torch kernel with ``vsr.yuv`` around it), decoded RGB in memory -> uint8 out; also the reference path it replaced (``vsr.inference.upscale_frames``, float glue) and, at
  batch 4, the per-frame cost (the allocator settings of ``vsr.runtime`` are what make batching not slower);
- ``engine``: ``vsr.engine.Engine.run`` (what the service's worker and ``vsr upscale`` call);
- ``cli``: ``vsr upscale IN_DIR OUT_DIR`` as a user runs it (subprocess), JPEG files in, 1280x720 JPEG files out;
  fps = frames / wall time including start-up, and the steady rate = extra frames / extra time between a 1-frame
  and an N-frame run (start-up, model load and warm-up cancel out);
- OpenCV ``dnn_superres`` ESPCN and FSRCNN (``../shared/anchors``) on the same frames, in memory (with their BGR
  conversions) and file to file (``cv2.imread`` -> upsample -> ``cv2.imwrite`` JPEG), one frame at a time.

Every in-memory figure is the median over rounds that interleave the implementations, so a drifting machine
affects all of them alike; ratios are what the targets are judged on.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.serve import REPO

WIDTH, HEIGHT = 640, 360
JPEG_QUALITY = 90


def shared_dir() -> Path | None:
    """``../shared`` of this checkout (or of any parent: worktrees live one level deeper), if present."""
    for parent in REPO.parents:
        if (parent / "shared" / "anchors").is_dir():
            return parent / "shared"
    return None


def bench_frames(n: int) -> list[np.ndarray]:
    """``n`` 640x360 RGB frames: the Set14/Set5 photos, 16:9 centre crops, resized (synthetic without the data)."""
    shared = shared_dir()
    photos = sorted((shared / "datasets" / "test").glob("Set*/*.png")) if shared else []
    frames = []
    for i in range(n):
        if photos:
            img = Image.open(photos[i % len(photos)]).convert("RGB")
            w, h = img.size
            ch = min(h, round(w * 9 / 16))
            cw = round(ch * 16 / 9)
            left, top = (w - cw) // 2, (h - ch) // 2
            img = img.crop((left, top, left + cw, top + ch)).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
            frames.append(np.asarray(img))
        else:
            rng = np.random.default_rng(i)
            frames.append(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    return frames


CLI_COPIES = 4  # file to file: the frames written this many times over


def write_jpegs(frames: list[np.ndarray], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, f in enumerate(frames):
        p = folder / f"frame{i:04d}.jpg"
        Image.fromarray(f).save(p, quality=JPEG_QUALITY)
        paths.append(p)
    return paths


def opencv_anchors(scale: int = 2) -> dict[str, Any]:
    """OpenCV dnn_superres models by name (empty without opencv-contrib or the anchor files)."""
    try:
        import cv2
    except ImportError:
        return {}
    shared = shared_dir()
    out = {}
    for name, algo in (("ESPCN", "espcn"), ("FSRCNN", "fsrcnn")):
        path = shared / "anchors" / "opencv_dnn_superres" / f"{name}_x{scale}.pb" if shared else None
        if path is None or not path.is_file() or not hasattr(cv2, "dnn_superres"):
            continue
        sr = cv2.dnn_superres.DnnSuperResImpl_create()  # type: ignore[attr-defined]
        sr.readModel(str(path))
        sr.setModel(algo, scale)
        out[f"opencv_{algo}"] = sr
    return out


def interleaved(fns: dict[str, Callable[[int], object]], rounds: int, per_round: int) -> dict[str, tuple[float, float]]:
    """(median, best) seconds per call of each fn (called with a frame index), in rounds that interleave them.

    The best round is what the code does when nothing else runs; the median includes this shared machine's noise."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn(0)  # warm-up
    for r in range(rounds):
        for k, fn in fns.items():
            t = time.perf_counter()
            for i in range(per_round):
                fn(r * per_round + i)
            times[k].append((time.perf_counter() - t) / per_round)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def run_cli(src: Path, dst: Path, extra_env: dict[str, str] | None = None) -> float:
    """Wall seconds of ``vsr upscale src dst`` as a subprocess (start-up included)."""
    env = {**os.environ, **(extra_env or {})}
    cmd = [sys.executable, "-m", "vsr_cli", "--log-level", "WARNING", "upscale", str(src), str(dst)]
    t = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - t


def opencv_file_to_file(sr: Any, src: list[Path], dst: Path) -> float:
    """Seconds per frame of OpenCV reading a JPEG, upscaling, writing a JPEG (its own I/O, like a user's script)."""
    import cv2

    dst.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for p in src:
        cv2.imwrite(str(dst / p.name), sr.upsample(cv2.imread(str(p))), [cv2.IMWRITE_JPEG_QUALITY, 95])
    return (time.perf_counter() - t) / len(src)


def run_realtime(*, device: torch.device, quick: bool, parts: list[str]) -> dict[str, Any]:
    from vsr.engine import Engine
    from vsr.inference import upscale_frames
    from vsr.runner import rgb_fn

    n = 8 if quick else 32
    frames = bench_frames(n)
    engine = Engine.open(["x2"], device=str(device))
    name = engine.default_model
    runner = engine.runner(name)
    kernel = rgb_fn(runner.kernel, luma=runner.luma, scale=2)  # a torch kernel of a luma model (x2) takes Y
    ref_model = engine.models[name].model
    batch4 = [np.stack([frames[(i + k) % n] for k in range(4)]) for i in range(n)]
    cv = opencv_anchors()
    fns: dict[str, Callable[[int], object]] = {}
    if "kernel" in parts:
        fns["kernel"] = lambda i: kernel(frames[i % n][None])
        fns["kernel_batch4"] = lambda i: kernel(batch4[i % n])
        fns["reference_fp32"] = lambda i: upscale_frames(ref_model, frames[i % n], scale=2, device=device)
    if "engine" in parts:
        fns["engine"] = lambda i: engine.run(name, frames[i % n][None])
    for k, sr in cv.items():
        fns[k] = partial(_cv_frame, sr, frames)
    rounds, per_round = (3, 2) if quick else (7, 4)
    sec = interleaved(fns, rounds, per_round)
    rows: dict[str, dict[str, float]] = {}
    for k, (med, best) in sec.items():
        per = 4 if k.endswith("batch4") else 1
        rows[k] = {"ms_per_frame": round(1000 * med / per, 2), "best_ms_per_frame": round(1000 * best / per, 2)}
        rows[k]["fps"] = round(1000 / rows[k]["ms_per_frame"], 2)
    res: dict[str, Any] = {
        "device": str(device),
        "input": f"{WIDTH}x{HEIGHT}",
        "frames": n,
        "model": name,
        "runner": runner.info.__dict__,
        "threads": torch.get_num_threads(),
        "env": {k: os.environ.get(k) for k in ("OMP_WAIT_POLICY", "MALLOC_MMAP_THRESHOLD_", "OMP_NUM_THREADS")},
        "in_memory": rows,
    }
    if "kernel" in parts:
        from bench.gpu import conv_flops, matmul_peak

        # how close the kernel runs to this CPU's limit: the model's conv FLOPs at the kernel's rate over the
        # rate of a large matmul in the kernel's dtype, measured here (the best this CPU does on dense math)
        flops = conv_flops(ref_model, HEIGHT, WIDTH)
        peak = matmul_peak(device, runner.dtype, 512 if quick else 2048)
        res["conv_gflop_per_frame"] = round(flops / 1e9, 2)
        res["matmul_peak_gflops"] = round(peak / 1e9, 1)
        res["matmul_dtype"] = str(runner.dtype).removeprefix("torch.")  # torch has no int8 matmul: fp32 under int8
        res["kernel_fraction_of_matmul_peak"] = round(flops * rows["kernel"]["fps"] / peak, 3)
    if "cli" in parts:
        res["file_to_file"] = file_to_file(frames, cv, quick)
    res["ratios"] = ratios(res)
    return res


def _cv_frame(sr: Any, frames: list[np.ndarray], i: int) -> np.ndarray:
    return cv_rgb(sr, frames[i % len(frames)])


def cv_rgb(sr: Any, rgb: np.ndarray) -> np.ndarray:
    import cv2

    out: np.ndarray = cv2.cvtColor(sr.upsample(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), cv2.COLOR_BGR2RGB)
    return out


def file_to_file(frames: list[np.ndarray], cv: dict[str, Any], quick: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="vsr-bench-") as tmp:
        root = Path(tmp)
        # the frames 4 times over (128 files): the steady rate is (files - 1) / (wall - wall of one file), and with
        # 32 files the work (~0.5 s on an AMX Xeon) was as small as the start-up's run-to-run spread (two runs of the
        # same code gave 77.8 and 44.7 fps)
        src = write_jpegs(frames * (1 if quick else CLI_COPIES), root / "in")
        one = root / "one"
        one.mkdir()
        (one / src[0].name).write_bytes(src[0].read_bytes())
        # best of two runs each: a run only gets slower when something else takes the cores
        t_one = min(run_cli(one, root / "out1") for _ in range(1 if quick else 2))
        t_all = min(run_cli(root / "in", root / "out") for _ in range(1 if quick else 2))
        out_size = Image.open(root / "out" / src[0].name).size
        steady = (len(src) - 1) / max(t_all - t_one, 1e-6)
        res: dict[str, Any] = {
            "vsr_upscale": {
                "frames": len(src),
                "wall_s": round(t_all, 2),
                "wall_1_frame_s": round(t_one, 2),
                "fps_total": round(len(src) / t_all, 2),
                "fps_steady": round(steady, 2),
                "output_size": f"{out_size[0]}x{out_size[1]}",
            }
        }
        for k, sr in cv.items():
            s = min(opencv_file_to_file(sr, src[: 4 if quick else 12], root / k) for _ in range(1 if quick else 2))
            res[k] = {"fps": round(1 / s, 2), "ms_per_frame": round(1000 * s, 2)}
    return res


def ratios(res: dict[str, Any]) -> dict[str, float]:
    mem, f2f = res["in_memory"], res.get("file_to_file", {})
    out: dict[str, float] = {}
    for anchor in ("opencv_espcn", "opencv_fsrcnn"):
        for k in ("kernel", "engine", "reference_fp32"):
            if k in mem and anchor in mem:
                out[f"{k}/{anchor}"] = round(mem[k]["fps"] / mem[anchor]["fps"], 2)
        if "vsr_upscale" in f2f and anchor in f2f:
            out[f"cli_steady/{anchor}_file"] = round(f2f["vsr_upscale"]["fps_steady"] / f2f[anchor]["fps"], 2)
            out[f"cli_total/{anchor}_file"] = round(f2f["vsr_upscale"]["fps_total"] / f2f[anchor]["fps"], 2)
    return out


def realtime_table(res: dict[str, Any]) -> str:
    lines = ["| path | ms/frame (median) | best round ms/frame | fps (median) |", "|---|---|---|---|"]
    for k, r in res["in_memory"].items():
        lines.append(f"| {k} (in memory) | {r['ms_per_frame']} | {r.get('best_ms_per_frame', '')} | {r['fps']} |")
    for k, r in res.get("file_to_file", {}).items():
        if k == "vsr_upscale":
            lines.append(f"| vsr upscale, file to file, steady ({r['frames']} frames) | | | {r['fps_steady']} |")
            lines.append(f"| vsr upscale, file to file, incl. start-up ({r['wall_s']} s) | | | {r['fps_total']} |")
        else:
            lines.append(f"| {k}, file to file | {r['ms_per_frame']} | | {r['fps']} |")
    return "\n".join(lines)
