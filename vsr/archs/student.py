"""Real-time student: a plain conv body with re-parameterisable blocks and an anchored pixel-shuffle head.

Training uses :class:`RepConv` blocks (3x3 + 1x1 + identity branches, RepVGG/ECBSR style); :meth:`RepStudent.fuse`
collapses every block into a single 3x3 conv, so inference costs exactly a plain ``depth``-layer conv net.

The head predicts ``3*scale**2`` channels and adds the input repeated ``scale**2`` times before the pixel shuffle
(the "anchor" of ABPN, Mobile AI 2021): the net learns the residual over nearest-neighbour upsampling, which costs
one add instead of an fp32 bicubic pass (~19 ms per 640x360 frame on the dev CPU).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _tracing() -> bool:
    """True while torch.jit traces the model (OpenVINO's converter does)."""
    return bool(torch.jit.is_tracing())  # type: ignore[attr-defined,no-untyped-call]


def _bias(conv: nn.Conv2d) -> torch.Tensor:
    """A conv's bias (all convs here have one; typed as optional by torch)."""
    assert conv.bias is not None
    return conv.bias


class RepConv(nn.Module):
    """A 3x3 conv that trains with extra linear branches and fuses to one 3x3 conv.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        expand: width multiplier of the 1x1 -> 3x3 expand-squeeze branch (0 disables it).
        fold: run the branches folded into one kernel on every forward (fast training); False runs them apart.
    """

    def __init__(self, *, in_ch: int, out_ch: int, expand: int = 2, fold: bool = True) -> None:
        super().__init__()
        self.in_ch, self.out_ch = in_ch, out_ch
        self.fold = fold
        self.conv3 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 1)
        self.expand = expand
        if expand > 0:
            mid = in_ch * expand
            self.es_1x1 = nn.Conv2d(in_ch, mid, 1)
            self.es_3x3 = nn.Conv2d(mid, out_ch, 3)  # padding handled explicitly, see forward
        self.identity = in_ch == out_ch
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.fused(x)
        if self.fold:
            # Fold-on-forward: build the one equivalent 3x3 kernel (differentiably, a few k-element ops) and run a
            # single conv. Same function as the branches (max diff ~1e-6) at the cost of a plain conv: the branchy
            # form runs 3-4 convs per block and was ~2.4x slower per training step.
            w, b = self.kernel()
            return F.conv2d(x, w, b, padding=1)
        return self.forward_branches(x)

    def forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        """The un-folded form: every branch run separately (reference for tests)."""
        y = self.conv3(x) + self.conv1(x)
        if self.expand > 0:
            # Pad the 1x1 output with its bias (not zeros) so that the branch is exactly one 3x3 conv after fusion.
            z = self.es_1x1(x)
            b = _bias(self.es_1x1).view(1, -1, 1, 1)
            z = F.pad(z - b, (1, 1, 1, 1)) + b
            y = y + self.es_3x3(z)
        if self.identity:
            y = y + x
        return y

    def kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight, bias) of the single 3x3 conv equal to all branches; differentiable w.r.t. every branch."""
        w = self.conv3.weight + F.pad(self.conv1.weight, (1, 1, 1, 1))
        b = _bias(self.conv3) + _bias(self.conv1)
        if self.expand > 0:
            k1 = self.es_1x1.weight[:, :, 0, 0]  # mid x in
            k3 = self.es_3x3.weight  # out x mid x 3 x 3
            w = w + torch.einsum("omhw,mi->oihw", k3, k1)
            b = b + _bias(self.es_3x3) + torch.einsum("omhw,m->o", k3, _bias(self.es_1x1))
        if self.identity:
            eye = torch.eye(self.out_ch, dtype=w.dtype, device=w.device).view(self.out_ch, self.out_ch, 1, 1)
            w = w + F.pad(eye, (1, 1, 1, 1))
        return w, b

    @torch.no_grad()
    def fused_kernel(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the (weight, bias) of the single 3x3 conv equivalent to all branches (detached)."""
        w, b = self.kernel()
        return w.detach().clone(), b.detach().clone()

    @torch.no_grad()
    def fuse(self) -> None:
        w, b = self.fused_kernel()
        conv = nn.Conv2d(self.in_ch, self.out_ch, 3, padding=1).to(w.device, w.dtype)
        conv.weight.copy_(w)
        _bias(conv).copy_(b)
        for name in ("conv3", "conv1", "es_1x1", "es_3x3"):
            if hasattr(self, name):
                delattr(self, name)
        self.expand = 0
        self.identity = False
        self.fused = conv


class RepStudent(nn.Module):
    """Student SR network: ``head -> depth x (RepConv + ReLU) -> tail -> +anchor -> PixelShuffle``.

    Args:
        scale: upscaling factor (2, 3 or 4).
        channels: feature width.
        depth: number of body blocks.
        expand: expand-squeeze width multiplier used while training (0 = plain 3x3 + 1x1 + identity).
        fused: build the already-fused (inference) layout, e.g. to load fused weights.
        colors: 3 for RGB in/out; 1 for a luma student (sees and predicts only Y, BT.601; see :mod:`vsr.luma`).
        fold: train with each RepConv's branches folded into one kernel per forward (see :class:`RepConv`).
        unshuffle: space-to-depth factor ``f`` in front of the head (1 = none): the convs run on ``f x f`` fewer
            positions with ``f*f`` times the input channels, and the tail predicts ``(scale*f)**2`` values per
            position. Why: on CPUs with AMX a small int8 conv costs about the same per position whatever its width
            (16x5 luma 7.0 ms, 8x6 7.7 ms a 640x360 frame), so fewer positions is what makes a net cheaper there; on
            AVX2 its FLOPs fall with the same factor. A frame whose sides are not multiples of ``f`` is padded by
            edge replication and the output cropped.

    Input and output are RGB (or Y) in [0, 1], NCHW; output is ``scale`` times larger.
    """

    def __init__(
        self,
        *,
        scale: int = 2,
        channels: int = 28,
        depth: int = 3,
        expand: int = 2,
        fused: bool = False,
        colors: int = 3,
        fold: bool = True,
        unshuffle: int = 1,
    ):
        super().__init__()
        if colors not in (1, 3):
            raise ValueError("colors must be 1 (luma) or 3 (RGB)")
        if unshuffle not in (1, 2, 4):
            raise ValueError("unshuffle must be 1, 2 or 4")
        self.scale = scale
        self.colors = colors
        self.unshuffle = unshuffle
        f = unshuffle
        out = colors * (scale * f) ** 2

        def block(i: int, o: int) -> nn.Module:
            if fused:
                return nn.Conv2d(i, o, 3, padding=1)
            return RepConv(in_ch=i, out_ch=o, expand=expand, fold=fold)

        self.head = block(colors * f * f, channels)
        self.body = nn.ModuleList([block(channels, channels) for _ in range(depth)])
        self.tail = block(channels, out)
        self.shuffle = nn.PixelShuffle(scale * f)
        if f > 1:
            # output channel c*(s*f)**2 + i*(s*f) + j lands on output pixel (h*s*f + i, w*s*f + j); its nearest
            # neighbour in the input is unshuffled channel c*f*f + (i // s)*f + (j // s) at (h, w)
            c, i, j = torch.meshgrid(
                torch.arange(colors), torch.arange(scale * f), torch.arange(scale * f), indexing="ij"
            )
            self.register_buffer(
                "anchor_index", (c * f * f + (i // scale) * f + j // scale).reshape(-1), persistent=False
            )
        if not fused:
            # Start as nearest-neighbour upsampling (the anchor) instead of anchor + noise: ~+20 dB at step 0.
            # Every branch's last layer and bias is zeroed; es_1x1 keeps its init so gradients reach es_3x3.
            for name, prm in self.tail.named_parameters():
                if not name.startswith("es_1x1"):
                    nn.init.zeros_(prm)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features after the head and after each body block (for feature distillation; 1/``unshuffle`` size)."""
        if self.unshuffle > 1:
            x = F.pixel_unshuffle(self._padded(x), self.unshuffle)
        feats = [F.relu(self.head(x))]
        for blk in self.body:
            feats.append(F.relu(blk(feats[-1])))
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.unshuffle > 1:
            return self._forward_unshuffled(x)
        # In-place ReLU: a conv's backward needs its input, not its output, so overwriting the output is safe and
        # saves one activation-sized allocation per layer.
        h = F.relu(self.head(x), inplace=True)
        for blk in self.body:
            h = F.relu(blk(h), inplace=True)
        anchor = x.repeat_interleave(self.scale * self.scale, dim=1)
        return self.shuffle(self.tail(h) + anchor)

    def _anchor_index(self) -> torch.Tensor:
        index = self.anchor_index
        assert isinstance(index, torch.Tensor)
        return index

    def _padded(self, x: torch.Tensor) -> torch.Tensor:
        f = self.unshuffle
        pad_h, pad_w = -x.shape[-2] % f, -x.shape[-1] % f
        # while tracing (the OpenVINO export) always pad: a Python test on the sizes would freeze into the graph
        if _tracing() or pad_h or pad_w:
            return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x

    def _forward_unshuffled(self, x: torch.Tensor) -> torch.Tensor:
        hgt, wid = x.shape[-2], x.shape[-1]
        u = F.pixel_unshuffle(self._padded(x), self.unshuffle)
        h = F.relu(self.head(u), inplace=True)
        for blk in self.body:
            h = F.relu(blk(h), inplace=True)
        y = self.shuffle(self.tail(h) + u.index_select(1, self._anchor_index()))
        return y[..., : hgt * self.scale, : wid * self.scale]

    @torch.no_grad()
    def fuse(self) -> RepStudent:
        """Collapse all RepConv branches in place; returns self."""
        for m in self.modules():
            if isinstance(m, RepConv):
                m.fuse()
        return self


def fused_state_dict(model: RepStudent) -> dict[str, torch.Tensor]:
    """State dict in the fused layout (``head.weight`` ...) whatever the model's current state."""
    out: dict[str, torch.Tensor] = {}
    for name, m in model.named_modules():
        if isinstance(m, RepConv):
            w, b = (m.fused.weight, _bias(m.fused)) if m.fused is not None else m.fused_kernel()
            out[f"{name}.weight"] = w.detach().clone()
            out[f"{name}.bias"] = b.detach().clone()
    return out
