"""U-Net backbones through diffusers: ADM-style pixel U-Nets and LDM / Stable Diffusion latent U-Nets.

diffusers' ``UNet2DModel`` and ``UNet2DConditionModel`` reproduce the official parameter
counts exactly once configured as below (docs/reference.md); this module only translates the
papers' flags (guided-diffusion's ``--num_channels --channel_mult --attention_resolutions
--resblock_updown --use_scale_shift_norm``; latent-diffusion's ``model_channels
channel_mult attention_resolutions context_dim``) into diffusers configs. Checkpoints in
diffusers layout load into the returned modules directly.

Conditioning: class labels added to the time embedding (``num_classes``), text tokens by
cross-attention (``context_dim``, LDM only), and concatenation of a low-resolution image
(``concat_channels``: super-resolution stages of Imagen / GLIDE / unCLIP / ADM-U).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffbench.core.errors import ConfigError
from diffbench.models.about import about
from diffbench.models.family import FAMILIES, Family, Inputs, labels, noise_and_time, unet_width_step
from diffbench.models.presets import add_preset
from diffbench.models.shapes import (
    UNET_PROBES,
    UNET_RES_BLOCKS,
    UNET_TIER_0,
    UNET_WIDTHS,
    Conditioning,
    InputShape,
    Structure,
    attention_variants,
    constant,
    groups,
    mults,
    unet_atypicality,
)


def _level_resolutions(image_size: int, levels: int) -> list[int]:
    return [image_size // 2**i for i in range(levels)]


def _check_groups(channels: list[int], groups: int, what: str) -> None:
    bad = [c for c in channels if c % groups]
    if bad:
        raise ConfigError(f"{what} channels {bad} are not divisible by {groups} GroupNorm groups; "
                          f"use multiples of {groups}")


@dataclass(frozen=True)
class ADMUNetConfig:
    """guided-diffusion ``UNetModel`` flags (Dhariwal & Nichol 2021, Appendix / script_util.py)."""

    image_size: int = 256
    in_channels: int = 3
    model_channels: int = 256
    channel_mult: tuple[float, ...] = (1, 1, 2, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (32, 16, 8)  # feature-map sizes that get self-attention
    num_head_channels: int = 64
    num_classes: int = 1000  # 0: unconditional; labels are added to the time embedding
    learn_sigma: bool = True  # 2x output channels
    resblock_updown: bool = True
    use_scale_shift_norm: bool = True
    concat_channels: int = 0  # > 0: super-resolution, a low-res image upsampled and concatenated
    norm_num_groups: int = 32
    dropout: float = 0.0
    mid_attention: bool = True  # False: no attention in the middle block (Karlo's super-resolution U-Net)

    def __post_init__(self) -> None:
        chans = self.block_out_channels
        _check_groups(chans, self.norm_num_groups, "ADM U-Net")
        for c, r in zip(chans, _level_resolutions(self.image_size, len(chans)), strict=True):
            if r in self.attention_resolutions and c % self.num_head_channels:
                raise ConfigError(f"ADM U-Net level of {c} channels is not divisible by num_head_channels "
                                  f"{self.num_head_channels}; choose channels that are")
        if self.image_size % 2 ** (len(chans) - 1):
            raise ConfigError(f"image size {self.image_size} cannot be halved {len(chans) - 1} times; "
                              f"use a multiple of {2 ** (len(chans) - 1)}")

    @property
    def block_out_channels(self) -> list[int]:
        return [int(self.model_channels * m) for m in self.channel_mult]

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    def diffusers_kwargs(self) -> dict[str, Any]:
        chans = self.block_out_channels
        attn = [r in self.attention_resolutions for r in _level_resolutions(self.image_size, len(chans))]
        plain_down = "ResnetDownsampleBlock2D" if self.resblock_updown else "DownBlock2D"
        plain_up = "ResnetUpsampleBlock2D" if self.resblock_updown else "UpBlock2D"
        return dict(
            sample_size=self.image_size,
            in_channels=self.in_channels + self.concat_channels,
            out_channels=self.out_channels,
            block_out_channels=tuple(chans),
            down_block_types=tuple("AttnDownBlock2D" if a else plain_down for a in attn),
            up_block_types=tuple("AttnUpBlock2D" if a else plain_up for a in reversed(attn)),
            layers_per_block=self.num_res_blocks,
            downsample_type="resnet" if self.resblock_updown else "conv",
            upsample_type="resnet" if self.resblock_updown else "conv",
            attention_head_dim=self.num_head_channels,
            resnet_time_scale_shift="scale_shift" if self.use_scale_shift_norm else "default",
            # diffusers drops the mid-block attention's GroupNorm under scale_shift; ADM has it.
            attn_norm_num_groups=self.norm_num_groups,
            norm_num_groups=self.norm_num_groups,
            time_embedding_dim=4 * self.model_channels,
            num_class_embeds=self.num_classes or None,
            flip_sin_to_cos=True,  # ADM's timestep_embedding: cos half first, no shift
            freq_shift=0,
            dropout=self.dropout,
            add_attention=self.mid_attention,
        )

    def build(self) -> nn.Module:
        from diffusers import UNet2DModel
        from diffusers.models.embeddings import Timesteps

        model: Any = UNet2DModel(**self.diffusers_kwargs())
        if self.block_out_channels[0] != self.model_channels:
            # ADM embeds timesteps at model_channels even when the first level is narrower
            # (512 px: channel_mult starts at 0.5); diffusers would use block_out_channels[0].
            temb = 4 * self.model_channels
            model.time_proj = Timesteps(self.model_channels, flip_sin_to_cos=True, downscale_freq_shift=0)
            model.time_embedding.linear_1 = nn.Linear(self.model_channels, temb)
        return model


@dataclass(frozen=True)
class LDMUNetConfig:
    """latent-diffusion ``openaimodel.UNetModel`` with spatial transformers (LDM, Stable Diffusion)."""

    image_size: int = 64  # latent size
    in_channels: int = 4
    out_channels: int = 4
    model_channels: int = 320
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (64, 32, 16)  # feature-map sizes with transformer blocks
    num_heads: int | tuple[int, ...] = 8  # per level when a tuple (SD 2: head dim 64)
    transformer_depth: int | tuple[int, ...] = 1
    context_dim: int = 768  # width of the cross-attention context (text encoder or class table)
    context_tokens: int = 77  # length of the context used to count compute
    use_linear_projection: bool = False  # SD 2 / SDXL: Linear instead of 1x1 conv around transformers
    num_classes: int = 0  # > 0: labels added to the time embedding
    addition_embed: bool = False  # SDXL: pooled text + size/crop micro-conditioning ("text_time")
    concat_channels: int = 0  # > 0: low-res image concatenated (upscaler / inpainting stages)
    norm_num_groups: int = 32

    def __post_init__(self) -> None:
        chans = self.block_out_channels
        _check_groups(chans, self.norm_num_groups, "LDM U-Net")
        heads = self.num_heads if isinstance(self.num_heads, tuple) else (self.num_heads,) * len(chans)
        if len(heads) != len(chans):
            raise ConfigError(f"num_heads has {len(heads)} entries for {len(chans)} levels")
        for c, h in zip(chans, heads, strict=True):
            if c % h:
                raise ConfigError(f"LDM U-Net level of {c} channels is not divisible by {h} heads")
        if self.image_size % 2 ** (len(chans) - 1):
            raise ConfigError(f"latent size {self.image_size} cannot be halved {len(chans) - 1} times")

    @property
    def block_out_channels(self) -> list[int]:
        return [int(self.model_channels * m) for m in self.channel_mult]

    def diffusers_kwargs(self) -> dict[str, Any]:
        chans = self.block_out_channels
        attn = [r in self.attention_resolutions for r in _level_resolutions(self.image_size, len(chans))]
        kw: dict[str, Any] = dict(
            sample_size=self.image_size,
            in_channels=self.in_channels + self.concat_channels,
            out_channels=self.out_channels,
            block_out_channels=tuple(chans),
            down_block_types=tuple("CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn),
            up_block_types=tuple("CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
            layers_per_block=self.num_res_blocks,
            cross_attention_dim=self.context_dim,
            # diffusers' legacy name: for these U-Nets ``attention_head_dim`` is the number of heads.
            attention_head_dim=self.num_heads,
            transformer_layers_per_block=self.transformer_depth,
            use_linear_projection=self.use_linear_projection,
            num_class_embeds=self.num_classes or None,
            norm_num_groups=self.norm_num_groups,
        )
        if self.addition_embed:
            kw.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=SDXL_POOLED_DIM + 6 * 256)
        return kw

    def build(self) -> nn.Module:
        from diffusers import UNet2DConditionModel

        model: Any = UNet2DConditionModel(**self.diffusers_kwargs())
        return model


SDXL_POOLED_DIM = 1280  # OpenCLIP bigG pooled text embedding fed to SDXL's addition embedding


def upsample_low_res(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Super-resolution conditioning: bilinear upsampling of the low-res image to the target size (ADM/Imagen)."""
    return nn.functional.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)


# --- the families: inputs, conditioning, sizing rules, paper configurations ------------------------

def unet_inputs(cfg: Any, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    """x, t, labels where the config takes them, and a 4x smaller image for super-resolution stages."""
    inp = noise_and_time((cfg.in_channels, cfg.image_size, cfg.image_size), batch, device, dtype)
    num_classes = getattr(cfg, "num_classes", 0)  # the text U-Net takes no labels
    if num_classes > 0:
        inp["y"] = labels(num_classes, batch, device)
    if cfg.concat_channels > 0:  # a 4x smaller image, as in the 64 -> 256 stages
        low = max(cfg.image_size // 4, 1)
        inp["low_res"] = torch.randn(batch, cfg.concat_channels, low, low, device=device, dtype=dtype)
    return inp


def with_low_res(i: Inputs) -> torch.Tensor:
    x = i["x"]
    if "low_res" not in i:
        return x
    return torch.cat([x, upsample_low_res(i["low_res"], x.shape[-1])], dim=1)  # (N, C + C_low, H, W)


def _ldm_inputs(cfg: LDMUNetConfig, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    inp = unet_inputs(cfg, batch, device, dtype)
    inp["context"] = torch.randn(batch, cfg.context_tokens, cfg.context_dim, device=device, dtype=dtype)
    if cfg.addition_embed:
        inp["added"] = {
            "text_embeds": torch.randn(batch, SDXL_POOLED_DIM, device=device, dtype=dtype),
            "time_ids": torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * batch, device=device),
        }
    return inp


def _adm_condition(config: ADMUNetConfig, cond: str, num_classes: int, text_len: int, text_dim: int
                   ) -> ADMUNetConfig:
    if cond == "text":
        raise ConfigError("the ADM U-Net takes class or no conditioning; use unet-ldm for text")
    return dataclasses.replace(config, num_classes=num_classes + 1 if cond == "class" else 0)


def _ldm_condition(config: LDMUNetConfig, cond: str, num_classes: int, text_len: int, text_dim: int
                   ) -> LDMUNetConfig:
    """Text as cross-attention context; a class as LDM-4's one context token (its table is the Denoiser's)."""
    return dataclasses.replace(config, num_classes=0, context_tokens=text_len if cond == "text" else 1,
                               context_dim=text_dim if cond == "text" else config.context_dim)


# Channel multipliers by resolution: guided-diffusion's script_util table first, then nearby
# variants of the same shape that fill the gaps between widths.
ADM_MULTS: dict[int, list[tuple[int, ...]]] = {
    32: [(1, 2, 2, 2), (1, 2, 2, 4), (1, 2, 3), (1, 1, 2, 2), (1, 2)],
    64: [(1, 2, 3, 4), (1, 2, 2, 4), (1, 2, 2), (1, 2)],
    128: [(1, 1, 2, 3, 4), (1, 1, 2, 2, 4), (1, 2, 2)],
    256: [(1, 1, 2, 2, 4, 4), (1, 1, 2, 2, 4)],
}
LDM_MULTS: dict[int, list[tuple[int, ...]]] = {
    32: [(1, 2, 4), (1, 2, 2), (1, 2, 2, 2), (1, 2, 4, 4), (1, 2)],
    64: [(1, 2, 4, 4), (1, 2, 3, 5), (1, 2, 4), (1, 2)],
    128: [(1, 2, 4), (1, 2, 4, 4)],
}


def adm_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    if cond.kind == "text":
        raise ConfigError("ADM U-Nets here are class-conditional or unconditional; use unet-ldm for text")
    size = shape[1]
    # DDPM CIFAR-10 attends at 16; ADM at 32, 16, 8; fewer attention levels fill the gaps
    wanted = [(16, 8), (16,), (8,)] if size <= 32 else [(32, 16, 8), (16, 8), (32, 16)]
    out: list[Structure] = []
    for i, mult in enumerate(mults(ADM_MULTS, size, "unet-adm")):
        levels = [size // 2**j for j in range(len(mult))]
        for a, attn in enumerate(attention_variants(levels, wanted)):
            for nres in UNET_RES_BLOCKS:
                def make(w: int, d: int, mult: tuple[int, ...] = mult, nres: int = nres,
                         attn: tuple[int, ...] = attn) -> ADMUNetConfig:
                    return ADMUNetConfig(image_size=size, in_channels=shape[0], model_channels=w, channel_mult=mult,
                                         num_res_blocks=nres, attention_resolutions=attn,
                                         num_head_channels=groups(w), norm_num_groups=groups(w),
                                         num_classes=cond.num_classes if cond.kind == "class" else 0)

                atyp = unet_atypicality(i, nres, a)
                out.append(Structure(("unet-adm", mult, nres, attn), make, constant(atyp),
                                     UNET_WIDTHS, lambda w: (0,), UNET_PROBES, (0,), flops_through_origin=True,
                                     tier=int(atyp > UNET_TIER_0)))
    return out


def ldm_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    size = shape[1]
    text = cond.kind == "text"
    out: list[Structure] = []
    for i, mult in enumerate(mults(LDM_MULTS, size, "unet-ldm")):
        levels = [size // 2**j for j in range(len(mult))]
        # SD 1/2: transformers on the first 3 levels; SDXL: none on the first
        wanted = [tuple(levels[:3]), tuple(levels[1:3])]
        for a, attn in enumerate(attention_variants(levels, wanted)):
            for nres in UNET_RES_BLOCKS:
                def make(w: int, d: int, mult: tuple[int, ...] = mult, nres: int = nres,
                         attn: tuple[int, ...] = attn) -> LDMUNetConfig:
                    # class conditioning as in LDM-4: a 512-d class embedding is the 1-token context
                    # (its table is counted apart, like a text encoder)
                    return LDMUNetConfig(image_size=size, in_channels=shape[0], out_channels=shape[0],
                                         model_channels=w, channel_mult=mult, num_res_blocks=nres,
                                         attention_resolutions=attn, num_heads=math.gcd(w, 8),
                                         context_dim=cond.context_dim if text else 512,
                                         context_tokens=cond.context_tokens if text else 1,
                                         norm_num_groups=groups(w))

                atyp = unet_atypicality(i, nres, a)
                out.append(Structure(("unet-ldm", mult, nres, attn), make, constant(atyp),
                                     UNET_WIDTHS, lambda w: (0,), UNET_PROBES, (0,), flops_through_origin=True,
                                     tier=int(atyp > UNET_TIER_0)))
    return out


FAMILIES.add("unet-adm", Family(
    **about("unet-adm"), config_cls=ADMUNetConfig,
    input_shape=lambda c: (c.in_channels, c.image_size, c.image_size), make_inputs=unet_inputs,
    denoise=lambda m, i: m(with_low_res(i), i["t"], class_labels=i.get("y")).sample,
    tiny=lambda: ADMUNetConfig(image_size=8, in_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                          attention_resolutions=(4,), num_head_channels=32, num_classes=10),
    width_field="model_channels", depth_field="num_res_blocks", width_step=unet_width_step,
    condition=_adm_condition, sizing=adm_structures, params_affine_in="num_res_blocks",
))

FAMILIES.add("unet-ldm", Family(
    **about("unet-ldm"), config_cls=LDMUNetConfig,
    input_shape=lambda c: (c.in_channels, c.image_size, c.image_size), make_inputs=_ldm_inputs,
    denoise=lambda m, i: m(with_low_res(i), i["t"], encoder_hidden_states=i["context"], class_labels=i.get("y"),
                           added_cond_kwargs=i.get("added")).sample,
    tiny=lambda: LDMUNetConfig(image_size=8, in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2),
                          num_res_blocks=1, attention_resolutions=(8, 4), num_heads=4, context_dim=16,
                          context_tokens=5),
    width_field="model_channels", depth_field="num_res_blocks", width_step=unet_width_step,
    condition=_ldm_condition, sizing=ldm_structures, params_affine_in="num_res_blocks",
    conditions=("class", "text", "none"),
))

ADM_PAPER = "Dhariwal & Nichol, Diffusion Models Beat GANs on Image Synthesis, 2021 (openai/guided-diffusion)"
LDM_PAPER = "Rombach et al., High-Resolution Image Synthesis with Latent Diffusion Models, CVPR 2022"
# ADM (guided-diffusion model cards / script flags)
_ADM = [
    ("ADM-64", ADMUNetConfig(image_size=64, model_channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3),
     295_904_454, 109.68, "ImageNet 64 (cond); FID 2.07 (ADM-G)"),
    ("ADM-128", ADMUNetConfig(image_size=128, model_channels=256, channel_mult=(1, 1, 2, 3, 4)),
     421_529_606, 306.93, "ImageNet 128 (cond); FID 2.97; official uses 4 heads, same counts"),
    ("ADM-256", ADMUNetConfig(image_size=256, model_channels=256, channel_mult=(1, 1, 2, 2, 4, 4)),
     553_838_086, 1119.83, "ImageNet 256 (cond); FID 4.59; DiT cites 1120 Gflops"),
    ("ADM-512", ADMUNetConfig(image_size=512, model_channels=256, channel_mult=(0.5, 1, 1, 2, 2, 4, 4)),
     558_997_638, 1982.33, "ImageNet 512 (cond); FID 7.72"),
    ("ADM-U-64-256", ADMUNetConfig(image_size=256, model_channels=192, channel_mult=(1, 1, 2, 2, 4, 4),
                                   concat_channels=3),
     311_795_910, 631.64, "upsampler 64->256 (cond); base 64 + this = 741.32 GMACs (DiT cites 742)"),
]
for _n, _ac, _p, _g, _note in _ADM:
    add_preset(_n, "unet-adm", _ac, ADM_PAPER, params=_p, params_trainable=_p, gmacs=_g, note=_note)

# LDM / Stable Diffusion U-Nets (latent-diffusion configs, diffusers model cards)
add_preset("LDM-4", "unet-ldm",
     LDMUNetConfig(image_size=64, in_channels=3, out_channels=3, model_channels=192, channel_mult=(1, 2, 3, 5),
                   attention_resolutions=(32, 16, 8), num_heads=1, context_dim=512, context_tokens=1),
     LDM_PAPER + ", cin256-v2 (ImageNet, 64x64x3 latent)", params=400_920_579, params_trainable=400_920_579,
     gmacs=104.23, paper_fid=3.60,
     note="the 1001x512 class table feeding cross-attention (512,512 params) is counted apart; DiT cites 103.6")
add_preset("SD-1.5", "unet-ldm", LDMUNetConfig(), "Stable Diffusion v1.5 UNet (runwayml), 64x64 latent, 77 tokens",
     params=859_520_964, params_trainable=859_520_964, gmacs=401.64)
add_preset("SD-2.1", "unet-ldm",
     LDMUNetConfig(num_heads=(5, 10, 20, 20), context_dim=1024, use_linear_projection=True),
     "Stable Diffusion v2.1 UNet (stabilityai), 64x64 latent, context dim 1024",
     params=865_910_724, params_trainable=865_910_724, gmacs=402.13)
add_preset("SDXL", "unet-ldm",
     LDMUNetConfig(image_size=128, channel_mult=(1, 2, 4), attention_resolutions=(64, 32), num_heads=(5, 10, 20),
                   transformer_depth=(1, 2, 10), context_dim=2048, use_linear_projection=True, addition_embed=True),
     "SDXL base 1.0 UNet (stabilityai), 128x128 latent", params=2_567_463_684, params_trainable=2_567_463_684,
     gmacs=3380.62)
