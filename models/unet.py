"""U-Net backbones through diffusers: ADM-style pixel U-Nets and LDM / Stable Diffusion latent U-Nets.

diffusers' ``UNet2DModel`` and ``UNet2DConditionModel`` reproduce the official parameter
counts exactly once configured as below (REFERENCE.md); this module only translates the
papers' flags (guided-diffusion's ``--num_channels --channel_mult --attention_resolutions
--resblock_updown --use_scale_shift_norm``; latent-diffusion's ``model_channels
channel_mult attention_resolutions context_dim``) into diffusers configs. Checkpoints in
diffusers layout load into the returned modules directly.

Conditioning: class labels added to the time embedding (``num_classes``), text tokens by
cross-attention (``context_dim``, LDM only), and concatenation of a low-resolution image
(``concat_channels``: super-resolution stages of Imagen / GLIDE / unCLIP / ADM-U).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffbench.core.errors import ConfigError


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
