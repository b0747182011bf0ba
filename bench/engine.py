"""Engine benchmark: frames/s and ms/frame of the bundled models against bicubic and OpenCV's dnn_superres.

Everything is measured side by side in one process, interleaved per size, so ratios survive a noisy shared machine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vsr.artifact import load_artifact
from vsr.engine import pick_dtype
from vsr.imageops import upscale_bicubic
from vsr.inference import upscale_frames

SIZES = [(320, 180), (640, 360), (960, 540)]
ANCHORS = Path("../shared/anchors/opencv_dnn_superres")


def timeit(fn: Callable[[], Any], *, repeat: int, warmup: int = 2) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def opencv_models(scale: int) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    try:
        import cv2
    except ImportError:
        return {}
    out = {}
    for name, algo in (("ESPCN", "espcn"), ("FSRCNN", "fsrcnn")):
        path = ANCHORS / f"{name}_x{scale}.pb"
        if not path.is_file() or not hasattr(cv2, "dnn_superres"):
            continue
        sr = cv2.dnn_superres.DnnSuperResImpl_create()
        sr.readModel(str(path))
        sr.setModel(algo, scale)
        # OpenCV works in BGR; the conversions are part of its real cost in a pipeline like ours.
        out[f"opencv_{name.lower()}"] = lambda rgb, sr=sr, cv2=cv2: cv2.cvtColor(
            sr.upsample(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)), cv2.COLOR_BGR2RGB
        )
    return out


def set5_psnr(upscale: Callable[[np.ndarray], np.ndarray], scale: int) -> float | None:
    folder = Path("../shared/datasets/test/Set5")
    if not folder.is_dir():
        return None
    from training.evaluate import evaluate_set

    return round(float(evaluate_set(upscale, folder, scale, progress=False, with_bicubic=False)["psnr_y"]), 3)


def run_engine(models: list[str], *, batches: list[int], repeat: int, device: torch.device) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    dtype = pick_dtype("auto", device)
    rows: list[dict[str, Any]] = []
    psnr: dict[str, float | None] = {}
    for name in models:
        model, meta = load_artifact(name, device=device)
        model = model.to(memory_format=torch.channels_last)
        if device.type == "cuda":
            model = model.half()
        scale = meta.scale

        def up(x: np.ndarray, model=model, scale=scale) -> np.ndarray:
            return upscale_frames(model, x, scale=scale, device=device, dtype=dtype)

        psnr[name] = set5_psnr(up, scale)
        others = {"bicubic": lambda x, s=scale: upscale_bicubic(x, s), **opencv_models(scale)}
        for k, fn in others.items():
            psnr.setdefault(f"{k}_x{scale}", set5_psnr(fn, scale))
        for w, h in SIZES:
            frames = rng.integers(0, 256, size=(max(batches), h, w, 3), dtype=np.uint8)
            for b in batches:
                t = timeit(lambda b=b, f=frames: up(f[:b]), repeat=repeat)
                rows.append(
                    {
                        "impl": name,
                        "scale": scale,
                        "input": f"{w}x{h}",
                        "batch": b,
                        "ms_per_frame": round(1000 * t / b, 2),
                        "fps": round(b / t, 1),
                        "set5_psnr_y": psnr[name],
                    }
                )
            for k, fn in others.items():
                t = timeit(lambda fn=fn, f=frames: fn(f[0]), repeat=repeat)
                rows.append(
                    {
                        "impl": k,
                        "scale": scale,
                        "input": f"{w}x{h}",
                        "batch": 1,
                        "ms_per_frame": round(1000 * t, 2),
                        "fps": round(1 / t, 1),
                        "set5_psnr_y": psnr[f"{k}_x{scale}"],
                    }
                )
    return {"device": str(device), "dtype": str(dtype).removeprefix("torch."), "rows": rows}


def engine_table(res: dict[str, Any]) -> str:
    lines = ["| impl | scale | input | batch | ms/frame | fps | Set5 PSNR-Y |", "|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        lines.append(
            f"| {r['impl']} | x{r['scale']} | {r['input']} | {r['batch']} | {r['ms_per_frame']} | {r['fps']} | {r['set5_psnr_y']} |"
        )
    return "\n".join(lines)
