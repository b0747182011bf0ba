"""DCTLSA (Zeng et al., "Densely connected transformer with linear self-attention for lightweight image
super-resolution", IEEE TIM 2023) written for the zengkun301/DCTLSA weights (Apache-2.0).

The network: a 3x3 conv; ``blocks`` local self-attention blocks (LSAB), densely connected (each block's input is a
1x1 + LeakyReLU fusion of the stem and every earlier block's output); a 1x1 fusion of all block outputs, a 3x3 conv
plus the stem, a pixel-shuffle head. An LSAB is two window stages; a stage pads to a multiple of the window
(reflect, bottom/right), layer-norms once, runs two transformer blocks (the second shifted by half a window) and crops
back. A block is ``x = attn(x); x = x + mlp(x)`` with no norms inside; the attention adds its own residuals: a
conv branch ``local = convs(x) + x`` feeds a *linear* attention per window (softmax of the keys over the tokens,
``q @ (k^T v)``, no mask), and ``proj(attention) + local`` comes out.

Module and parameter names follow the published state dict so it loads with ``strict=True``; the nesting
(``B1.body.0.transformer_body.0.blocks.0...``) is kept for that reason only. Hyper-parameters come from the weights'
shapes (:func:`dctlsa_config_from_state`) except two that no weight's shape records: ``heads`` (5) and ``window``
(16), whose defaults are the published values. Input and output are RGB in [0, 1], like the published weights.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional as F

_LEAKY = 0.05  # the fusions' LeakyReLU slope in the published network


class LinearWindowAttention(nn.Module):
    """Conv branch, then linear self-attention inside each ``window`` x ``window`` window; NHWC in and out."""

    def __init__(self, *, channels: int, heads: int, window: int) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be a multiple of heads ({heads})")
        self.heads = heads
        self.window = window
        self.scale = (channels // heads) ** -0.5
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.local = nn.Sequential(
            OrderedDict(
                pointwise_prenorm_0=nn.BatchNorm2d(channels),
                pointwise_conv_0=nn.Conv2d(channels, channels, 1, bias=False),
                depthwise_conv=nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False),
                pointwise_prenorm_1=nn.BatchNorm2d(channels),
                pointwise_conv_1=nn.Conv2d(channels, channels, 1, bias=False),
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        ws, nh, hd = self.window, self.heads, c // self.heads
        t = x.permute(0, 3, 1, 2)
        local = (self.local(t) + t).permute(0, 2, 3, 1)
        # (b, h/ws, ws, w/ws, ws, [q|k|v], head, hd) -> (q|k|v, window, head, token, hd)
        qkv = self.qkv(local).reshape(b, h // ws, ws, w // ws, ws, 3, nh, hd)
        q, k, v = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, -1, nh, ws * ws, hd).unbind(0)
        # linear attention: keys normalised over the window's tokens, so the cost is tokens x hd^2, not tokens^2
        out = (q * self.scale) @ (k.softmax(dim=-2).transpose(-2, -1) @ v)
        out = out.reshape(b, h // ws, w // ws, nh, ws, ws, hd).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, h, w, c)
        return self.proj(out) + local


class Mlp(nn.Module):
    def __init__(self, *, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class TransformerBlock(nn.Module):
    """``attn`` on the image rolled by ``-shift`` (no mask: windows wrap around), rolled back, then ``x + mlp(x)``."""

    def __init__(self, *, channels: int, heads: int, window: int, mlp_channels: int, shift: int) -> None:
        super().__init__()
        self.shift = shift
        self.attn = LinearWindowAttention(channels=channels, heads=heads, window=window)
        self.mlp = Mlp(channels=channels, hidden=mlp_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shift
        y = torch.roll(x, shifts=(-s, -s), dims=(1, 2)) if s else x
        y = self.attn(y)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        return y + self.mlp(y)


class WindowStage(nn.Module):
    """Pad to the window (reflect), LayerNorm, two blocks (unshifted, shifted by half a window), crop back; NCHW."""

    def __init__(self, *, channels: int, heads: int, window: int, mlp_channels: int) -> None:
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            TransformerBlock(
                channels=channels, heads=heads, window=window, mlp_channels=mlp_channels, shift=i * (window // 2)
            )
            for i in range(2)
        )
        self.patch_embed = nn.ModuleDict({"norm": nn.LayerNorm(channels)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.window, -w % self.window
        if ph or pw:  # reflect needs pad < size: DCTLSA.forward guarantees size >= window
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        t = self.patch_embed["norm"](x.permute(0, 2, 3, 1))
        for blk in self.blocks:
            t = blk(t)
        return t.permute(0, 3, 1, 2)[..., :h, :w]


class SwinT(nn.Module):
    """One window stage; the wrapper exists only for the published key path ``transformer_body.0``."""

    def __init__(self, *, channels: int, heads: int, window: int, mlp_channels: int) -> None:
        super().__init__()
        stage = WindowStage(channels=channels, heads=heads, window=window, mlp_channels=mlp_channels)
        self.transformer_body = nn.Sequential(stage)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transformer_body(x)


class LSAB(nn.Module):
    """Local self-attention block: two window stages in a row."""

    def __init__(self, *, channels: int, heads: int, window: int, mlp_channels: int) -> None:
        super().__init__()
        kw = {"channels": channels, "heads": heads, "window": window, "mlp_channels": mlp_channels}
        self.body = nn.Sequential(SwinT(**kw), SwinT(**kw))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _fusion(in_channels: int, channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, channels, 1), nn.LeakyReLU(_LEAKY))


class DCTLSA(nn.Module):
    """DCTLSA.

    Args:
        scale: upscaling factor.
        channels: feature width (55 published).
        blocks: number of LSABs (6 published).
        mlp_channels: hidden width of each transformer block's MLP (2 x channels published).
        heads: attention heads (5 published; not recorded in the weights).
        window: attention window (16 published; not recorded in the weights).
    """

    def __init__(
        self,
        *,
        scale: int = 4,
        channels: int = 55,
        blocks: int = 6,
        mlp_channels: int = 110,
        heads: int = 5,
        window: int = 16,
    ) -> None:
        super().__init__()
        self.scale = scale
        self.window = window
        self.blocks = blocks
        self.fea_conv = nn.Conv2d(3, channels, 3, padding=1)
        kw = {"channels": channels, "heads": heads, "window": window, "mlp_channels": mlp_channels}
        for i in range(1, blocks + 1):
            self.add_module(f"B{i}", LSAB(**kw))
        for i in range(1, blocks):  # c_i fuses the stem and blocks 1..i into block i+1's input
            self.add_module(f"c{i}", _fusion(channels * (i + 1), channels))
        self.c = _fusion(channels * blocks, channels)
        self.LR_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.upsampler = nn.Sequential(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))

    def _pad_small(self, x: torch.Tensor) -> torch.Tensor:
        """Replicate-pad (bottom/right) a side shorter than the window: the stages' reflect padding cannot reach
        that far. Sides >= window are left alone, so those inputs see exactly the published network."""
        ph, pw = (max(0, self.window - n) for n in x.shape[-2:])
        return F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """[stem, output of each LSAB] at the (padded) input size."""
        fea = self.fea_conv(x)
        outs: list[torch.Tensor] = []
        dense, inp = fea, fea
        for i in range(1, self.blocks + 1):
            outs.append(getattr(self, f"B{i}")(inp))
            if i < self.blocks:
                dense = torch.cat([dense, outs[-1]], dim=1)
                inp = getattr(self, f"c{i}")(dense)
        return [fea, *outs]

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features after the first conv and after each LSAB (for feature distillation), LR-sized."""
        h, w = x.shape[-2:]
        return [f[..., :h, :w] for f in self._trunk(self._pad_small(x))]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        feats = self._trunk(self._pad_small(x))
        out = self.LR_conv(self.c(torch.cat(feats[1:], dim=1))) + feats[0]
        return self.upsampler(out)[..., : h * self.scale, : w * self.scale]


def dctlsa_config_from_state(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Derive DCTLSA hyper-parameters from weight shapes (``heads`` and ``window`` are not in them: defaults)."""
    channels = state["fea_conv.weight"].shape[0]
    up = state["upsampler.0.weight"].shape[0]
    blocks = len({k.split(".")[0] for k in state if k.startswith("B") and k.split(".")[0][1:].isdigit()})
    return {
        "scale": round((up / 3) ** 0.5),
        "channels": channels,
        "blocks": blocks,
        "mlp_channels": state["B1.body.0.transformer_body.0.blocks.0.mlp.fc1.weight"].shape[0],
    }
