"""Backbone families: one registry entry per family, each with the same denoiser call.

Every family presents ``denoise(model, inputs) -> tensor`` over a dict of inputs with the
same keys (``x``, ``t``, and where the family uses them ``y`` labels, ``context`` text
tokens, ``low_res`` image, ``added`` SDXL micro-conditioning), so that counting, timing,
training and sampling never special-case a family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffbench.core.registry import Registry
from diffbench.models.dit import DiTConfig
from diffbench.models.textunet import TextUNetConfig
from diffbench.models.unet import SDXL_POOLED_DIM, ADMUNetConfig, LDMUNetConfig, upsample_low_res
from diffbench.models.uvit import UViTConfig
from diffbench.models.vit import ViTConfig

Inputs = dict[str, Any]


@dataclass(frozen=True)
class Family:
    name: str
    title: str
    description: str
    config_cls: type
    input_shape: Callable[[Any], tuple[int, int, int]]  # (C, H, W) of the noisy input
    make_inputs: Callable[[Any, int, torch.device, torch.dtype], Inputs]
    denoise: Callable[[nn.Module, Inputs], torch.Tensor]
    tiny: Callable[[], Any]  # a config small enough for a CPU forward and backward in well under a second

    def build(self, config: Any) -> nn.Module:
        return config.build()


FAMILIES: Registry[Family] = Registry("family", "backbone families (sizing rules in models/sizing.py)")


def _noise_and_time(shape: tuple[int, int, int], batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    return {
        "x": torch.randn(batch, *shape, device=device, dtype=dtype),
        "t": torch.full((batch,), 500.0, device=device),  # any timestep: compute does not depend on it
    }


def _labels(num_classes: int, batch: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.long, device=device)  # class 0: compute does not depend on it


# --- DiT ------------------------------------------------------------------------------------------

def _patch_inputs(cfg: DiTConfig | ViTConfig, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    """DiT and ViT share the official DiT signature: x, t and (when class-conditional) y."""
    inp = _noise_and_time((cfg.in_channels, cfg.input_size, cfg.input_size), batch, device, dtype)
    if cfg.num_classes > 0:
        inp["y"] = _labels(cfg.num_classes, batch, device)
    return inp


FAMILIES.add("dit", Family(
    "dit", "DiT", "ViT with adaLN-Zero conditioning (Peebles & Xie 2023); also adaLN / cross-attention / in-context",
    DiTConfig, lambda c: (c.in_channels, c.input_size, c.input_size), _patch_inputs,
    lambda m, i: m(i["x"], i["t"], i.get("y")),
    lambda: DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=64, depth=2, num_heads=2, num_classes=10),
))


# --- U-ViT ----------------------------------------------------------------------------------------

def _uvit_inputs(cfg: UViTConfig, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    inp = _noise_and_time((cfg.in_chans, cfg.img_size, cfg.img_size), batch, device, dtype)
    if cfg.num_classes > 0:
        inp["y"] = _labels(cfg.num_classes, batch, device)
    if cfg.clip_dim > 0:
        inp["context"] = torch.randn(batch, cfg.num_clip_token, cfg.clip_dim, device=device, dtype=dtype)
    return inp


def _uvit_denoise(model: nn.Module, i: Inputs) -> torch.Tensor:
    if "context" in i:
        return model(i["x"], i["t"], i["context"])
    return model(i["x"], i["t"], y=i.get("y"))


FAMILIES.add("uvit", Family(
    "uvit", "U-ViT", "ViT with long skips, every input a token (Bao et al. 2023)",
    UViTConfig, lambda c: (c.in_chans, c.img_size, c.img_size), _uvit_inputs, _uvit_denoise,
    lambda: UViTConfig(img_size=8, patch_size=2, in_chans=3, embed_dim=64, depth=2, num_heads=2, num_classes=11),
))


# --- ViT ------------------------------------------------------------------------------------------

FAMILIES.add("vit", Family(
    "vit", "ViT", "plain isotropic transformer, in-context conditioning, no long skips (baseline)",
    ViTConfig, lambda c: (c.in_channels, c.input_size, c.input_size), _patch_inputs,
    lambda m, i: m(i["x"], i["t"], i.get("y")),
    lambda: ViTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=64, depth=2, num_heads=2, num_classes=10),
))


# --- U-Nets ---------------------------------------------------------------------------------------

def _unet_common(cfg: ADMUNetConfig | LDMUNetConfig | TextUNetConfig, batch: int, device: torch.device,
                 dtype: torch.dtype) -> Inputs:
    inp = _noise_and_time((cfg.in_channels, cfg.image_size, cfg.image_size), batch, device, dtype)
    num_classes = getattr(cfg, "num_classes", 0)  # the text U-Net takes no labels
    if num_classes > 0:
        inp["y"] = _labels(num_classes, batch, device)
    if cfg.concat_channels > 0:  # a 4x smaller image, as in the 64 -> 256 stages
        low = max(cfg.image_size // 4, 1)
        inp["low_res"] = torch.randn(batch, cfg.concat_channels, low, low, device=device, dtype=dtype)
    return inp


def _with_low_res(i: Inputs) -> torch.Tensor:
    x = i["x"]
    if "low_res" not in i:
        return x
    return torch.cat([x, upsample_low_res(i["low_res"], x.shape[-1])], dim=1)  # (N, C + C_low, H, W)


def _ldm_inputs(cfg: LDMUNetConfig, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    inp = _unet_common(cfg, batch, device, dtype)
    inp["context"] = torch.randn(batch, cfg.context_tokens, cfg.context_dim, device=device, dtype=dtype)
    if cfg.addition_embed:
        inp["added"] = {
            "text_embeds": torch.randn(batch, SDXL_POOLED_DIM, device=device, dtype=dtype),
            "time_ids": torch.tensor([[1024.0, 1024.0, 0.0, 0.0, 1024.0, 1024.0]] * batch, device=device),
        }
    return inp


FAMILIES.add("unet-adm", Family(
    "unet-adm", "ADM U-Net", "pixel U-Net of guided-diffusion (Dhariwal & Nichol 2021) via diffusers UNet2DModel",
    ADMUNetConfig, lambda c: (c.in_channels, c.image_size, c.image_size), _unet_common,
    lambda m, i: m(_with_low_res(i), i["t"], class_labels=i.get("y")).sample,
    lambda: ADMUNetConfig(image_size=8, in_channels=3, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                          attention_resolutions=(4,), num_head_channels=32, num_classes=10),
))

FAMILIES.add("unet-ldm", Family(
    "unet-ldm", "LDM U-Net",
    "latent U-Net with cross-attention (LDM / Stable Diffusion) via diffusers UNet2DConditionModel",
    LDMUNetConfig, lambda c: (c.in_channels, c.image_size, c.image_size), _ldm_inputs,
    lambda m, i: m(_with_low_res(i), i["t"], encoder_hidden_states=i["context"], class_labels=i.get("y"),
                   added_cond_kwargs=i.get("added")).sample,
    lambda: LDMUNetConfig(image_size=8, in_channels=4, out_channels=4, model_channels=32, channel_mult=(1, 2),
                          num_res_blocks=1, attention_resolutions=(8, 4), num_heads=4, context_dim=16,
                          context_tokens=5),
))


def _glide_inputs(cfg: TextUNetConfig, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    inp = _unet_common(cfg, batch, device, dtype)
    if cfg.context_dim > 0:
        inp["context"] = torch.randn(batch, cfg.context_tokens, cfg.token_dim, device=device, dtype=dtype)
    if cfg.class_embed == "identity":
        inp["class_embed"] = torch.randn(batch, cfg.time_embed_dim, device=device, dtype=dtype)
    elif cfg.class_embed == "projection":
        inp["class_embed"] = torch.randn(batch, cfg.class_embed_dim, device=device, dtype=dtype)
    elif cfg.class_embed == "timestep":
        inp["class_embed"] = torch.full((batch,), 100.0, device=device)  # a noise-augmentation level
    return inp


FAMILIES.add("unet-glide", Family(
    "unet-glide", "GLIDE U-Net",
    "pixel U-Net with text tokens in every attention layer (GLIDE, unCLIP decoder, Imagen-style) via diffusers",
    TextUNetConfig, lambda c: (c.in_channels, c.image_size, c.image_size), _glide_inputs,
    lambda m, i: m(_with_low_res(i), i["t"], encoder_hidden_states=i.get("context"),
                   class_labels=i.get("class_embed")).sample,
    lambda: TextUNetConfig(image_size=8, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                           attention_resolutions=(4,), num_head_channels=16, context_dim=16, context_tokens=5,
                           class_embed_dim=16, norm_num_groups=8),
))


def family_of(config: Any) -> Family:
    for _, fam in FAMILIES.items():
        if isinstance(config, fam.config_cls):
            return fam
    raise TypeError(f"no family for config type {type(config).__name__}")
