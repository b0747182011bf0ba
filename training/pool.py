"""A rolling pool of pre-cut aligned crops: batches are gathered by index and augmented in one vectorised step.

Cutting crops one sample at a time in Python (``data.sample_batch``) cost ~24 ms per batch of 32 on the first dev
CPU (~2.8 ms on this session's Zen 3, see bench/results/train-speed-cpu.md). Here crops are cut into fixed uint8/fp16
arrays once; every batch re-cuts a few slots round-robin (``refresh`` per batch: the pool keeps drawing new
positions, so it never freezes into a small fixed set; its contents are a function of the seed and the batch count,
so a resumed run rebuilds it), gathers ``n`` random slots with one ``index_select`` and applies the 8 flips /
transposes of a square with one ``gather`` per tensor over the whole batch.

Data sources plug in as lists of :class:`~training.data.Pair` (HR, LR, optional teacher output). ``teacher_only``
pairs ("zoom-out" samples: an HR image fed to the teacher as LR) carry no ground truth; their ``has_hr`` is False
and only the KD terms can learn from them. Degradations (camera data) are applied to LR crops as they are cut.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np
import torch

from training.data import Batch, Pair
from training.degrade import DegradeConfig, degrade


@functools.cache
def _dihedral_index(size: int) -> torch.Tensor:
    """8 x size*size: for each flip/transpose of a size x size square, the source pixel of every output pixel."""
    grid = torch.arange(size * size).view(size, size)
    out = []
    for code in range(8):
        g = grid.t() if code & 1 else grid
        g = g.flip(1) if code & 2 else g
        out.append((g.flip(0) if code & 4 else g).reshape(-1))
    return torch.stack(out)


def dihedral(xs: Sequence[torch.Tensor], codes: torch.Tensor) -> list[torch.Tensor]:
    """Apply the per-sample flip/transpose ``codes`` (N ints in 0..7) to square NHWC tensors alike.

    One ``gather`` per tensor over the flattened pixels (each crop read and written once), on the uint8/fp16 crops
    before the float conversion; three masked ``where`` over the batch cost ~3x more here."""
    out = []
    for x in xs:
        n, h, w, c = x.shape
        index = _dihedral_index(h).index_select(0, codes)  # N x HW
        flat = x.reshape(n, h * w, c)
        out.append(flat.gather(1, index.unsqueeze(-1).expand(n, h * w, c)).view(n, h, w, c))
    return out


class CropPool:
    """``size`` aligned crops of ``patch`` LR pixels (and ``patch * scale`` HR / teacher pixels).

    Args:
        pairs: images with ground truth (``soft`` set on all or none of them).
        teacher_only: zoom-out pairs (``hr`` unused, ``soft`` = the teacher's output); they fill ``teacher_share``
            of the pool's slots, and need ``soft`` on ``pairs`` too.
    """

    def __init__(
        self,
        pairs: Sequence[Pair],
        *,
        scale: int,
        patch: int,
        size: int,
        seed: int,
        refresh: int = 8,
        degradations: DegradeConfig | None = None,
        teacher_only: Sequence[Pair] = (),
        teacher_share: float = 0.0,
    ) -> None:
        if not pairs:
            raise ValueError("no training images")
        with_soft = pairs[0].soft is not None
        if any((p.soft is not None) != with_soft for p in pairs):
            raise ValueError("soft targets must be set on every pair or none")
        if teacher_only and not with_soft:
            raise ValueError("teacher-only samples need soft targets on the ground-truth pairs too")
        self.pairs, self.extra = list(pairs), list(teacher_only)
        self.scale, self.patch, self.size, self.refresh = scale, patch, size, refresh
        self.degradations = degradations if degradations is not None and degradations.enabled else None
        self.teacher_share = teacher_share if self.extra else 0.0
        hp = patch * scale
        self.lr = np.zeros((size, patch, patch, 3), np.uint8)
        self.hr = np.zeros((size, hp, hp, 3), np.uint8)
        self.soft = np.zeros((size, hp, hp, 3), np.float16) if with_soft else None
        self.has_hr = np.ones(size, bool)
        self.seed = seed
        self.draws = 0  # batches drawn so far; with the seed it fixes the pool's contents (see seek)
        self.seek(0)

    def _pick(self, rng: np.random.Generator) -> tuple[Pair, bool]:
        if self.teacher_share > 0 and rng.random() < self.teacher_share:
            return self.extra[int(rng.integers(len(self.extra)))], False
        return self.pairs[int(rng.integers(len(self.pairs)))], True

    def fill(self, slot: int, generation: int) -> None:
        """Cut the ``generation``-th crop of ``slot``: a pure function of (seed, slot, generation), so the pool's
        contents after any number of batches can be rebuilt on resume without storing them."""
        rng = np.random.default_rng([self.seed, slot, generation])
        p, s = self.patch, self.scale
        pair, has_hr = self._pick(rng)
        h, w = pair.lr.shape[:2]
        y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
        lr = pair.lr[y : y + p, x : x + p]
        self.lr[slot] = degrade(np.ascontiguousarray(lr), self.degradations, rng) if self.degradations else lr
        self.has_hr[slot] = has_hr
        if has_hr:
            self.hr[slot] = pair.hr[y * s : (y + p) * s, x * s : (x + p) * s]
        if self.soft is not None:
            assert pair.soft is not None
            self.soft[slot] = pair.soft[y * s : (y + p) * s, x * s : (x + p) * s]

    def seek(self, draws: int) -> None:
        """Rebuild the pool as it is after ``draws`` batches (slots are re-cut round-robin, ``refresh`` per batch)."""
        done = draws * self.refresh
        for slot in range(self.size):
            self.fill(slot, done // self.size + (1 if slot < done % self.size else 0))
        self.draws = draws

    def batch(self, n: int, rng: np.random.Generator) -> Batch:
        """``n`` random crops, randomly flipped/transposed; then ``refresh`` slots are re-cut."""
        idx = torch.from_numpy(rng.integers(self.size, size=n))
        arrays = [self.lr, self.hr] + ([self.soft] if self.soft is not None else [])
        crops = [torch.from_numpy(a).index_select(0, idx) for a in arrays]
        codes = torch.from_numpy(rng.integers(8, size=n))
        tensors = [_to_float(t) for t in dihedral(crops, codes)]  # RGB; luma students convert (loop.adapt_batch)
        has_hr = torch.from_numpy(self.has_hr[idx.numpy()])
        done = self.draws * self.refresh
        for k in range(done, done + self.refresh):
            self.fill(k % self.size, k // self.size + 1)
        self.draws += 1
        return Batch(
            lr=tensors[0],
            hr=tensors[1],
            soft=tensors[2] if self.soft is not None else None,
            has_hr=None if bool(has_hr.all()) else has_hr,
        )


def _to_float(x: torch.Tensor) -> torch.Tensor:
    """NHWC uint8 (0-255) or fp16 (0-1) -> NCHW float32 in [0, 1], channels-last in memory (no copy to NCHW)."""
    y = x.permute(0, 3, 1, 2).float()
    return y.div_(255.0) if x.dtype == torch.uint8 else y
