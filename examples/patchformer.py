"""PatchFormer: a backbone of your own as a diffbench family (docs/family.md walks through this file)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from diffbench import Family


@dataclass(frozen=True)
class PatchFormerConfig:
    """Patch tokens with the timestep and class added to every token, torch's pre-norm encoder layers."""

    in_channels: int = 4
    input_size: int = 32
    patch_size: int = 2
    width: int = 256
    depth: int = 8
    heads: int = 4
    num_classes: int = 1000  # 0: unconditional; label num_classes is the null class (guidance)

    def build(self) -> nn.Module:
        return PatchFormer(self)


class PatchFormer(nn.Module):
    def __init__(self, c: PatchFormerConfig) -> None:
        super().__init__()
        self.c, grid = c, c.input_size // c.patch_size
        self.patch = nn.Conv2d(c.in_channels, c.width, c.patch_size, c.patch_size)
        self.pos = nn.Parameter(torch.randn(1, grid * grid, c.width) * 0.02)
        self.time = nn.Sequential(nn.Linear(c.width, c.width), nn.SiLU(), nn.Linear(c.width, c.width))
        self.label = nn.Embedding(c.num_classes + 1, c.width) if c.num_classes else None
        layer = nn.TransformerEncoderLayer(c.width, c.heads, 4 * c.width, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(c.width), nn.Linear(c.width, c.patch_size ** 2 * c.in_channels))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        c, half = self.c, self.c.width // 2
        angles = t.float()[:, None] * torch.exp(-math.log(1e4) * torch.arange(half, device=x.device) / half)
        cond = self.time(torch.cat([angles.cos(), angles.sin()], 1))
        if self.label is not None and y is not None:
            cond = cond + self.label(y)
        h = self.blocks(self.patch(x).flatten(2).transpose(1, 2) + self.pos + cond[:, None])
        g, p = c.input_size // c.patch_size, c.patch_size
        out = self.out(h).reshape(len(x), g, g, p, p, c.in_channels)
        return out.permute(0, 5, 1, 3, 2, 4).reshape(x.shape)


PATCHFORMER = Family(
    name="patchformer", config_cls=PatchFormerConfig,
    width_field="width", depth_field="depth", width_step=16,  # every width a multiple of 16: the 4 heads divide it
    tiny=lambda: PatchFormerConfig(in_channels=3, input_size=8, width=32, depth=2, num_classes=10),
)
