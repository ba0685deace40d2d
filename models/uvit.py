"""U-ViT: "All are Worth Words: A ViT Backbone for Diffusion Models" (Bao et al., CVPR 2023), written here.

Faithful to baofff/U-ViT ``libs/uvit.py`` (class-conditional / unconditional) and
``libs/uvit_t2i.py`` (text-conditional): every input is a token (time, label or 77 text
tokens, patches), learned position embeddings, long skips joining in-blocks to out-blocks
through ``Linear(2D, D)`` on the concatenation, ``depth`` counting in + out blocks (so
depth 12 builds 13 blocks: 6 in, 1 mid, 6 out), optional 3x3 conv after unpatchify.
Parameter names are the official ones, so official checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffbench.core.errors import ConfigError
from diffbench.models import shapes
from diffbench.models.about import about
from diffbench.models.family import FAMILIES, Family, Inputs, labels, noise_and_time, transformer_width_step
from diffbench.models.layers import Attention, Mlp, PatchEmbed, check_divisible, timestep_embedding
from diffbench.models.presets import add_preset
from diffbench.models.shapes import Conditioning, InputShape, Structure


@dataclass(frozen=True)
class UViTConfig:
    img_size: int = 32
    patch_size: int = 2
    in_chans: int = 3
    embed_dim: int = 512
    depth: int = 12  # in + out blocks; one mid block is added
    num_heads: int = 8
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    mlp_time_embed: bool = False
    num_classes: int = -1  # -1: no label token; ImageNet configs use 1001 (1000 + the null class)
    clip_dim: int = 0  # > 0: text-conditional, context tokens projected from this width
    num_clip_token: int = 77
    conv: bool = True  # 3x3 conv after unpatchify
    skip: bool = True  # long skips (False gives the ablation without them)

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"U-ViT embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.clip_dim > 0 and self.num_classes > 0:
            raise ConfigError("U-ViT is either class-conditional (num_classes) or text-conditional (clip_dim), "
                              "not both")
        check_divisible(self.img_size, self.patch_size, "U-ViT input")

    def build(self) -> _UViTBase:
        return UViTT2I(self) if self.clip_dim > 0 else UViT(self)


class Block(nn.Module):
    """Pre-norm transformer block; an out-block first fuses its long skip: Linear(cat(x, skip))."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, skip: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), approximate_gelu=False)
        self.skip_linear = nn.Linear(2 * dim, dim) if skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if self.skip_linear is not None:
            assert skip is not None, "an out-block with a long skip needs the matching in-block output"
            x = self.skip_linear(torch.cat([x, skip], dim=-1))  # (N, L, 2D) -> (N, L, D)
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def unpatchify(x: torch.Tensor, channels: int) -> torch.Tensor:
    """(N, h*w, p*p*C) -> (N, C, h*p, w*p), patch values laid out (p1, p2, C) as in the official code."""
    n, length, dim = x.shape
    p = int((dim // channels) ** 0.5)
    h = w = int(length**0.5)
    x = x.reshape(n, h, w, p, p, channels).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, channels, h * p, w * p)


class _UViTBase(nn.Module):
    def __init__(self, cfg: UViTConfig, extras: int) -> None:
        super().__init__()
        self.config = cfg
        self.embed_dim = d = cfg.embed_dim
        self.in_chans = cfg.in_chans
        self.extras = extras
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, d)
        num_patches = (cfg.img_size // cfg.patch_size) ** 2
        self.time_embed = (
            nn.Sequential(nn.Linear(d, 4 * d), nn.SiLU(), nn.Linear(4 * d, d)) if cfg.mlp_time_embed else nn.Identity()
        )
        self._make_condition_embedding(cfg)
        self.pos_embed = nn.Parameter(torch.zeros(1, extras + num_patches, d))
        args = (d, cfg.num_heads, cfg.mlp_ratio, cfg.qkv_bias)
        self.in_blocks = nn.ModuleList([Block(*args) for _ in range(cfg.depth // 2)])
        self.mid_block = Block(*args)
        self.out_blocks = nn.ModuleList([Block(*args, skip=cfg.skip) for _ in range(cfg.depth // 2)])
        self.norm = nn.LayerNorm(d)
        self.patch_dim = cfg.patch_size**2 * cfg.in_chans
        self.decoder_pred = nn.Linear(d, self.patch_dim)
        self.final_layer = nn.Conv2d(cfg.in_chans, cfg.in_chans, 3, padding=1) if cfg.conv else nn.Identity()
        if not self.pos_embed.is_meta:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            self.apply(self._init_weights)

    def _make_condition_embedding(self, cfg: UViTConfig) -> None:
        raise NotImplementedError

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.constant_(m.bias, 0)
        elif isinstance(m, nn.LayerNorm):
            nn.init.constant_(m.bias, 0)
            nn.init.constant_(m.weight, 1.0)

    def time_token(self, timesteps: torch.Tensor) -> torch.Tensor:
        return self.time_embed(timestep_embedding(timesteps, self.embed_dim)).unsqueeze(1)  # (N, 1, D)

    def _run(self, x: torch.Tensor, prefix: list[torch.Tensor]) -> torch.Tensor:
        """Patches after the ``prefix`` tokens, through in-, mid- and out-blocks; back to an image."""
        x = self.patch_embed(x)  # (N, L, D)
        length = x.shape[1]
        x = torch.cat([*prefix, x], dim=1) + self.pos_embed  # (N, extras + L, D)
        skips = []
        for blk in self.in_blocks:
            x = blk(x)
            skips.append(x)
        x = self.mid_block(x)
        for blk in self.out_blocks:
            x = blk(x, skips.pop())
        x = self.decoder_pred(self.norm(x))  # (N, extras + L, p*p*C)
        x = x[:, x.shape[1] - length:]  # drop the extra tokens
        return self.final_layer(unpatchify(x, self.in_chans))  # (N, C, H, W)


class UViT(_UViTBase):
    """Unconditional or class-conditional U-ViT. ``forward(x, timesteps, y=None)``; tokens [label,] time, patches."""

    def __init__(self, config: UViTConfig | None = None, **kwargs: object) -> None:
        cfg = config if config is not None else UViTConfig(**kwargs)  # type: ignore[arg-type]
        super().__init__(cfg, extras=2 if cfg.num_classes > 0 else 1)

    def _make_condition_embedding(self, cfg: UViTConfig) -> None:
        self.num_classes = cfg.num_classes
        if cfg.num_classes > 0:
            self.label_emb = nn.Embedding(cfg.num_classes, cfg.embed_dim)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        prefix = [self.time_token(timesteps)]
        if y is not None:
            prefix.insert(0, self.label_emb(y).unsqueeze(1))  # (N, 1, D), before the time token
        return self._run(x, prefix)


class UViTT2I(_UViTBase):
    """Text-conditional U-ViT. ``forward(x, timesteps, context)``, context (N, 77, clip_dim).

    Tokens: time, text, patches.
    """

    def __init__(self, config: UViTConfig | None = None, **kwargs: object) -> None:
        cfg = config if config is not None else UViTConfig(**kwargs)  # type: ignore[arg-type]
        super().__init__(cfg, extras=1 + cfg.num_clip_token)

    def _make_condition_embedding(self, cfg: UViTConfig) -> None:
        self.context_embed = nn.Linear(cfg.clip_dim, cfg.embed_dim)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self._run(x, [self.time_token(timesteps), self.context_embed(context)])  # (N, 77, D) text tokens


# --- the family: inputs, conditioning, sizing rules, paper configurations ---------------------------

def _inputs(cfg: UViTConfig, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    inp = noise_and_time((cfg.in_chans, cfg.img_size, cfg.img_size), batch, device, dtype)
    if cfg.num_classes > 0:
        inp["y"] = labels(cfg.num_classes, batch, device)
    if cfg.clip_dim > 0:
        inp["context"] = torch.randn(batch, cfg.num_clip_token, cfg.clip_dim, device=device, dtype=dtype)
    return inp


def _denoise(model: nn.Module, i: Inputs) -> torch.Tensor:
    if "context" in i:
        return model(i["x"], i["t"], i["context"])
    return model(i["x"], i["t"], y=i.get("y"))


def _condition(config: UViTConfig, cond: str, num_classes: int, text_len: int, text_dim: int) -> UViTConfig:
    """Classes with a null row (U-ViT's own label table), or text tokens of the trained text encoder."""
    rep: dict[str, Any] = ({"num_classes": num_classes + 1, "clip_dim": 0} if cond == "class" else
                           {"num_classes": -1, "clip_dim": text_dim, "num_clip_token": text_len} if cond == "text" else
                           {"num_classes": -1, "clip_dim": 0})
    return dataclasses.replace(config, **rep)


def uvit_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    p = shapes.patch_size(shape, patch)
    out = []
    for mlp_time in (False, True):  # the official code's mlp_time_embed switch (off in the paper's configs)
        def make(w: int, d: int, mlp_time: bool = mlp_time) -> UViTConfig:
            return UViTConfig(img_size=shape[1], patch_size=p, in_chans=shape[0], embed_dim=w, depth=d,
                              num_heads=shapes.heads(w), mlp_time_embed=mlp_time,
                              num_classes=cond.num_classes + 1 if cond.kind == "class" else -1,
                              clip_dim=cond.context_dim if cond.kind == "text" else 0,
                              num_clip_token=cond.context_tokens)

        def atyp(w: int, d: int, mlp_time: bool = mlp_time) -> float:
            return shapes.transformer_atypicality(w, d) + (0.2 if mlp_time else 0.0)

        out.append(Structure(("uvit", p, mlp_time), make, atyp, shapes.transformer_widths(),
                             functools.partial(shapes.depth_band, even=True), (64, 128, 192), (2, 4)))
    return out


FAMILIES.add("uvit", Family(
    **about("uvit"), config_cls=UViTConfig, input_shape=lambda c: (c.in_chans, c.img_size, c.img_size),
    make_inputs=_inputs, denoise=_denoise,
    tiny=lambda: UViTConfig(img_size=8, patch_size=2, in_chans=3, embed_dim=64, depth=2, num_heads=2, num_classes=11),
    width_field="embed_dim", depth_field="depth", width_step=transformer_width_step, condition=_condition,
    sizing=uvit_structures, odd_depth=True, conditions=("class", "text", "none"),
))

UVIT_PAPER = "Bao et al., All are Worth Words: A ViT Backbone for Diffusion Models, CVPR 2023 (baofff/U-ViT)"
# U-ViT (README table): name, config, params, GMACs, FID
_UVIT = [
    ("U-ViT-S/2", UViTConfig(img_size=32, patch_size=2, in_chans=3, embed_dim=512, depth=12, num_heads=8),
     44_255_328, 12.2, 3.11, "CIFAR10 U-ViT-S/2"),
    ("U-ViT-M/4", UViTConfig(img_size=64, patch_size=4, in_chans=3, embed_dim=768, depth=16, num_heads=12,
                             num_classes=1000), 130_940_292, 35.24, 5.85, "ImageNet64 U-ViT-M/4"),
    ("U-ViT-L/4", UViTConfig(img_size=64, patch_size=4, in_chans=3, embed_dim=1024, depth=20, num_heads=16,
                             num_classes=1000), 286_827_652, 76.47, 4.26, "ImageNet64 U-ViT-L/4"),
    ("U-ViT-L/2", UViTConfig(img_size=32, patch_size=2, in_chans=4, embed_dim=1024, depth=20, num_heads=16,
                             num_classes=1001), 286_763_172, 76.46, 3.40, "ImageNet256 (latent) U-ViT-L/2"),
    ("U-ViT-H/2", UViTConfig(img_size=32, patch_size=2, in_chans=4, embed_dim=1152, depth=28, num_heads=16,
                             num_classes=1001, conv=False), 500_832_016, 133.2, 2.29, "ImageNet256 (latent) U-ViT-H/2"),
    ("U-ViT-S/2-T2I", UViTConfig(img_size=32, patch_size=2, in_chans=4, embed_dim=512, depth=12, num_heads=8,
                                 clip_dim=768), 44_692_644, 16.23, 5.95, "MS-COCO U-ViT-S/2 (text)"),
    ("U-ViT-S/2-T2I-Deep", UViTConfig(img_size=32, patch_size=2, in_chans=4, embed_dim=512, depth=16, num_heads=8,
                                      clip_dim=768), 58_345_636, 21.24, 5.48, "MS-COCO U-ViT-S/2 deep"),
]
for _n, _uc, _p, _g, _fid, _model in _UVIT:
    add_preset(_n, "uvit", _uc, f"{UVIT_PAPER}, {_model}", params=_p, params_trainable=_p, gmacs=_g, paper_fid=_fid)
