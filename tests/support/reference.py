"""What a model's output should be, computed outside every serving path, and the check every user path uses.

The reference is the architecture's plain forward pass (``vsr.archs`` built by ``vsr.artifact.load_artifact`` from
the artifact's own weights), fp32 on the CPU, ``x / 255 -> model -> clamp -> round``: none of the engine, runner,
fused kernel, tiling, batcher or service code runs. A path is right when its output is within the path's tolerance
of the reference (0-1 level for lossless paths, the codec's error for JPEG/H.264) *and* clearly farther from what a
broken path would give instead: nearest-neighbour (the students' own anchor), bicubic, or a flat frame.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vsr.artifact import load_artifact


@lru_cache(maxsize=8)
def _model(artifact: str) -> tuple[torch.nn.Module, int]:
    model, meta = load_artifact(artifact, device="cpu")
    return model.float().eval(), meta.scale


def scale_of(artifact: str | Path) -> int:
    return _model(str(artifact))[1]


def reference(artifact: str | Path, frames: np.ndarray) -> np.ndarray:
    """uint8 RGB HWC (or NHWC) -> the plain forward pass of the artifact's architecture, uint8, same layout."""
    model, _ = _model(str(artifact))
    batch = frames[None] if frames.ndim == 3 else frames
    x = (
        torch.from_numpy(np.array(batch, dtype=np.float32)).permute(0, 3, 1, 2) / 255.0
    )  # a copy: PIL arrays are read-only
    with torch.inference_mode():
        y = model(x)
    out = (y.clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return out[0] if frames.ndim == 3 else out


def nearest(frame: np.ndarray, scale: int) -> np.ndarray:
    return frame.repeat(scale, axis=-3).repeat(scale, axis=-2)


def bicubic(frame: np.ndarray, scale: int) -> np.ndarray:
    h, w = frame.shape[:2]
    return np.asarray(Image.fromarray(frame).resize((w * scale, h * scale), Image.Resampling.BICUBIC))


def rms(a: np.ndarray, b: np.ndarray) -> float:
    """Root-mean-square difference in 8-bit levels."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.sqrt(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def impostors(lr: np.ndarray, scale: int, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """What a broken path would produce instead of the model (same shape as its output)."""
    return {
        "nearest": nearest(lr, scale),
        "bicubic": bicubic(lr, scale),
        "flat grey": np.full(shape, 128, np.uint8),
        "flat mean": np.full(shape, int(lr.mean()), np.uint8),
    }


def model_distance(out: np.ndarray, lr: np.ndarray, artifact: str | Path) -> tuple[float, dict[str, float]]:
    """(RMS of ``out`` from the reference, RMS from each impostor)."""
    assert out.shape[-1] == 3 and lr.shape[-1] == 3, (out.shape, lr.shape)
    ref = reference(artifact, lr)
    assert out.shape == ref.shape, f"output {out.shape}, the model gives {ref.shape}"
    scale = scale_of(artifact)
    return rms(out, ref), {k: rms(out, v) for k, v in impostors(lr, scale, ref.shape).items()}


def assert_model_output(
    out: np.ndarray, lr: np.ndarray, artifact: str | Path, *, tol: float = 0.5, margin: float = 2.0
) -> float:
    """``out`` (uint8 RGB HWC) is the artifact's model applied to ``lr``: within ``tol`` RMS levels of the reference
    (0.5: exact up to a rare 1-level rounding; a codec's path passes its own error) and at least ``margin`` times
    farther from nearest, bicubic and flat frames than from the reference. Returns the RMS from the reference."""
    d_ref, others = model_distance(out, lr, artifact)
    print(f"model output: {d_ref:.2f} RMS levels from the reference;", {k: round(v, 2) for k, v in others.items()})
    assert d_ref <= tol, f"output is {d_ref:.2f} RMS levels from the model's reference (tolerance {tol}); {others}"
    for name, d in others.items():
        assert d >= margin * max(d_ref, 0.25), (
            f"output is as close to {name} ({d:.2f}) as to the model ({d_ref:.2f}): not distinguishable"
        )
    return d_ref


def best_match(out: np.ndarray, lrs: list[np.ndarray], artifact: str | Path) -> tuple[int, float]:
    """(index, RMS) of the LR frame in ``lrs`` whose reference ``out`` is closest to (for streams: which source
    frame a served frame came from is not known, only that it is one of them)."""
    dists = [rms(out, reference(artifact, lr)) for lr in lrs]
    i = int(np.argmin(dists))
    return i, dists[i]


def decode_rgb(data: bytes) -> np.ndarray:
    import io

    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A synthetic uint8 RGB image with edges and texture at several scales (blocks, stripes, a disc, noise): where
    models, bicubic and nearest-neighbour differ clearly, unlike a smooth gradient."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    img = np.zeros((height, width, 3))
    for c in range(3):
        blocks = rng.uniform(40, 215, size=(height // 6 + 1, width // 6 + 1))
        img[..., c] = blocks.repeat(6, 0).repeat(6, 1)[:height, :width]
        img[..., c] += 30 * np.sin(xx * rng.uniform(0.6, 1.4) + yy * rng.uniform(0.1, 0.5) + rng.uniform(0, 6))
    disc = (yy - height / 2) ** 2 + (xx - width / 3) ** 2 < (min(height, width) / 4) ** 2
    img[disc] = 255 - img[disc]
    img += rng.normal(0, 6, size=img.shape)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)
