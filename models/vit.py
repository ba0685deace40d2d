"""ViT baseline: the plain isotropic transformer on patches that U-ViT and DiT improve on.

Conditioning enters as in-context tokens (time token, then the class token), with learned
position embeddings and no long skips and no output conv: the "ViT" column of the U-ViT
paper's ablation. The transformer blocks are U-ViT's (pre-norm, exact GELU), so the two
families differ only in the skips, which is the comparison the harness is for.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from diffbench.core.errors import ConfigError
from diffbench.models import shapes
from diffbench.models.about import about
from diffbench.models.dit import class_or_none, patch_inputs
from diffbench.models.family import FAMILIES, Family, transformer_width_step
from diffbench.models.layers import PatchEmbed, check_divisible, timestep_embedding
from diffbench.models.shapes import Conditioning, InputShape, Structure
from diffbench.models.uvit import Block, unpatchify


@dataclass(frozen=True)
class ViTConfig:
    input_size: int = 32
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 768
    depth: int = 12  # number of blocks
    num_heads: int = 12
    mlp_ratio: float = 4.0
    num_classes: int = 1000  # 0: unconditional; a null class is added for guidance when > 0
    learn_sigma: bool = False

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"ViT hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        check_divisible(self.input_size, self.patch_size, "ViT input")

    def build(self) -> ViT:
        return ViT(self)


class ViT(nn.Module):
    """``forward(x, t, y=None)``: (N, C, H, W), (N,), (N,) -> (N, C_out, H, W)."""

    def __init__(self, config: ViTConfig | None = None, **kwargs: object) -> None:
        super().__init__()
        cfg = config if config is not None else ViTConfig(**kwargs)  # type: ignore[arg-type]
        self.config = cfg
        d = cfg.hidden_size
        self.out_channels = cfg.in_channels * (2 if cfg.learn_sigma else 1)
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.time_embed = nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d))
        self.label_emb = nn.Embedding(cfg.num_classes + 1, d) if cfg.num_classes > 0 else None
        extras = 1 + int(cfg.num_classes > 0)
        self.num_patches = (cfg.input_size // cfg.patch_size) ** 2
        self.pos_embed = nn.Parameter(torch.zeros(1, extras + self.num_patches, d))
        self.blocks = nn.ModuleList(
            [Block(d, cfg.num_heads, cfg.mlp_ratio, qkv_bias=False) for _ in range(cfg.depth)]
        )
        self.norm = nn.LayerNorm(d)
        self.decoder_pred = nn.Linear(d, cfg.patch_size**2 * self.out_channels)
        if not self.pos_embed.is_meta:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.patch_embed(x)  # (N, L, D)
        prefix = [self.time_embed(timestep_embedding(t, self.config.hidden_size)).unsqueeze(1)]  # (N, 1, D)
        if self.label_emb is not None:
            if y is None:
                raise ValueError("this ViT is class-conditional: pass labels y (num_classes is the null class)")
            prefix.append(self.label_emb(y).unsqueeze(1))
        h = torch.cat([*prefix, tokens], dim=1) + self.pos_embed  # (N, extras + L, D)
        for blk in self.blocks:
            h = blk(h)
        h = self.decoder_pred(self.norm(h))[:, -self.num_patches:]  # (N, L, p*p*C_out)
        return unpatchify(h, self.out_channels)


# --- the family: inputs (DiT's), conditioning, sizing rules --------------------------------------

def _condition(config: ViTConfig, cond: str, num_classes: int, text_len: int, text_dim: int) -> ViTConfig:
    return dataclasses.replace(config, **class_or_none("vit", cond, num_classes))


def vit_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    if cond.kind == "text":
        raise ConfigError("the ViT family takes class or no conditioning; use --cond class or none")
    p = shapes.patch_size(shape, patch)

    def make(w: int, d: int) -> ViTConfig:
        return ViTConfig(input_size=shape[1], patch_size=p, in_channels=shape[0], hidden_size=w, depth=d,
                         num_heads=shapes.heads(w), num_classes=cond.num_classes if cond.kind == "class" else 0)

    return [Structure(("vit", p), make, shapes.transformer_atypicality, shapes.transformer_widths(), shapes.depth_band,
                      (64, 128, 192), (2, 4))]


def _register() -> None:
    FAMILIES.add("vit", Family(
        **about("vit"), config_cls=ViTConfig, input_shape=lambda c: (c.in_channels, c.input_size, c.input_size),
        make_inputs=patch_inputs, denoise=lambda m, i: m(i["x"], i["t"], i.get("y")),
        tiny=lambda: ViTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=64, depth=2, num_heads=2,
                          num_classes=10),
        width_field="hidden_size", depth_field="depth", width_step=transformer_width_step, condition=_condition,
        sizing=vit_structures,
    ))


_register()
