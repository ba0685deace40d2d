"""The pixel U-Net of GLIDE, unCLIP's decoder and Imagen-style cascades, through diffusers.

GLIDE (Nichol et al. 2022) extended the ADM U-Net so that text tokens feed every attention
layer's keys and values (guided-diffusion's ``encoder_kv``), and a pooled text vector is added
to the time embedding. diffusers' ``UNet2DConditionModel`` with ``SimpleCrossAttn`` blocks is
exactly that layout (it reproduces Karlo's unCLIP decoder to the parameter, docs/reference.md), so
this module only translates the papers' flags into a diffusers config.

What is added to the time embedding (``class_embed``):
- ``none``;
- ``identity``: a vector already at the time-embedding width (unCLIP: the projected CLIP image
  and text embeddings);
- ``projection``: a linear map of a pooled vector (GLIDE: the text transformer's last token);
- ``timestep``: a sinusoidal embedding of a noise level (Imagen / IF super-resolution stages:
  the level of the noise-conditioning augmentation of the low-resolution input).
``pooled_text`` adds an attention-pooled summary of the text tokens as well (Imagen / IF).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffbench.core.errors import ConfigError
from diffbench.models.about import about
from diffbench.models.family import FAMILIES, Family, Inputs, unet_width_step
from diffbench.models.unet import unet_inputs, with_low_res

CLASS_EMBEDS = ("none", "identity", "projection", "timestep")


@dataclass(frozen=True)
class TextUNetConfig:
    """guided-diffusion ``Text2ImUNet`` flags (GLIDE) plus the conditioning of unCLIP and Imagen."""

    image_size: int = 64
    in_channels: int = 3
    model_channels: int = 192
    channel_mult: tuple[int, ...] = (1, 2, 3, 4)
    num_res_blocks: int | tuple[int, ...] = 3  # per level when a tuple (Imagen's Efficient U-Net)
    attention_resolutions: tuple[int, ...] = (32, 16, 8)
    num_head_channels: int = 64
    learn_sigma: bool = True
    context_dim: int = 512  # width of the text tokens fed to every attention layer (0: no text)
    context_tokens: int = 128  # length of the text used to count compute
    class_embed: str = "projection"
    class_embed_dim: int = 512  # input width of the "projection" embedding
    pooled_text: bool = False  # Imagen / IF: attention-pooled text tokens added to the time embedding
    text_proj_dim: int = 0  # > 0: tokens of this width are first projected to context_dim (IF's T5 projection)
    concat_channels: int = 0  # > 0: super-resolution, the low-res image upsampled and concatenated
    resblock_updown: bool = True
    norm_num_groups: int = 32

    def __post_init__(self) -> None:
        if self.class_embed not in CLASS_EMBEDS:
            raise ConfigError(f"class_embed must be one of {', '.join(CLASS_EMBEDS)}, got {self.class_embed!r}")
        chans = self.block_out_channels
        bad = [c for c in chans if c % self.norm_num_groups]
        if bad:
            raise ConfigError(f"text U-Net channels {bad} are not divisible by {self.norm_num_groups} GroupNorm "
                              "groups; use multiples of them")
        for c, r in zip(chans, self._resolutions(), strict=True):
            if r in self.attention_resolutions and c % self.num_head_channels:
                raise ConfigError(f"text U-Net level of {c} channels is not divisible by num_head_channels "
                                  f"{self.num_head_channels}")
        if isinstance(self.num_res_blocks, tuple) and len(self.num_res_blocks) != len(chans):
            raise ConfigError(f"num_res_blocks has {len(self.num_res_blocks)} entries for {len(chans)} levels")
        if self.image_size % 2 ** (len(chans) - 1):
            raise ConfigError(f"image size {self.image_size} cannot be halved {len(chans) - 1} times")
        if self.context_dim <= 0 and any(r in self.attention_resolutions for r in self._resolutions()):
            raise ConfigError("a text U-Net with attention needs context_dim > 0 (the width of the text tokens)")

    def _resolutions(self) -> list[int]:
        return [self.image_size // 2**i for i in range(len(self.channel_mult))]

    @property
    def block_out_channels(self) -> list[int]:
        return [self.model_channels * m for m in self.channel_mult]

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.block_out_channels[0]

    @property
    def token_dim(self) -> int:
        """Width of the text tokens this U-Net takes (before any projection of its own)."""
        return self.text_proj_dim or self.context_dim

    def diffusers_kwargs(self) -> dict[str, Any]:
        attn = [r in self.attention_resolutions for r in self._resolutions()]
        plain_down = "ResnetDownsampleBlock2D" if self.resblock_updown else "DownBlock2D"
        plain_up = "ResnetUpsampleBlock2D" if self.resblock_updown else "UpBlock2D"
        kw: dict[str, Any] = dict(
            sample_size=self.image_size,
            in_channels=self.in_channels + self.concat_channels,
            out_channels=self.out_channels,
            block_out_channels=tuple(self.block_out_channels),
            down_block_types=tuple("SimpleCrossAttnDownBlock2D" if a else plain_down for a in attn),
            up_block_types=tuple("SimpleCrossAttnUpBlock2D" if a else plain_up for a in reversed(attn)),
            mid_block_type="UNetMidBlock2DSimpleCrossAttn" if self.context_dim > 0 else None,
            layers_per_block=self.num_res_blocks,
            cross_attention_dim=max(self.context_dim, 1),
            attention_head_dim=self.num_head_channels,
            resnet_time_scale_shift="scale_shift",
            norm_num_groups=self.norm_num_groups,
        )
        if self.class_embed == "identity":
            kw["class_embed_type"] = "identity"
        elif self.class_embed == "projection":
            kw.update(class_embed_type="simple_projection", projection_class_embeddings_input_dim=self.class_embed_dim)
        elif self.class_embed == "timestep":
            kw["class_embed_type"] = "timestep"
        if self.pooled_text:
            kw.update(addition_embed_type="text", addition_embed_type_num_heads=max(1, self.token_dim // 64))
        if self.text_proj_dim:
            kw.update(encoder_hid_dim=self.text_proj_dim, encoder_hid_dim_type="text_proj")
        return kw

    def build(self) -> nn.Module:
        from diffusers import UNet2DConditionModel

        model: Any = UNet2DConditionModel(**self.diffusers_kwargs())
        return model


# --- the family: inputs (no sizing rules of its own: sized inside pipelines) -----------------------

def _inputs(cfg: TextUNetConfig, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    inp = unet_inputs(cfg, batch, device, dtype)
    if cfg.context_dim > 0:
        inp["context"] = torch.randn(batch, cfg.context_tokens, cfg.token_dim, device=device, dtype=dtype)
    if cfg.class_embed == "identity":
        inp["class_embed"] = torch.randn(batch, cfg.time_embed_dim, device=device, dtype=dtype)
    elif cfg.class_embed == "projection":
        inp["class_embed"] = torch.randn(batch, cfg.class_embed_dim, device=device, dtype=dtype)
    elif cfg.class_embed == "timestep":
        inp["class_embed"] = torch.full((batch,), 100.0, device=device)  # a noise-augmentation level
    return inp


def _denoise(m: nn.Module, i: Inputs) -> torch.Tensor:
    return m(with_low_res(i), i["t"], encoder_hidden_states=i.get("context"), class_labels=i.get("class_embed")).sample


FAMILIES.add("unet-glide", Family(
    **about("unet-glide"), config_cls=TextUNetConfig,
    input_shape=lambda c: (c.in_channels, c.image_size, c.image_size), make_inputs=_inputs, denoise=_denoise,
    tiny=lambda: TextUNetConfig(image_size=8, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(4,), num_head_channels=16, context_dim=16, context_tokens=5,
                           class_embed_dim=16, norm_num_groups=8),
    width_field="model_channels", depth_field="num_res_blocks", width_step=unet_width_step,
    condition=None, sizing=None, conditions=("text",),  # sized inside the pipelines that use it
))
