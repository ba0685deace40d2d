"""What makes a backbone family, and the registry of them.

Every family presents ``denoise(model, inputs) -> tensor`` over a dict of inputs with the same
keys (``x``, ``t``, and where the family uses them ``y`` labels, ``context`` text tokens,
``low_res`` image, ``added`` SDXL micro-conditioning), so that counting, timing, training and
sampling never special-case a family. Each family module (``dit``, ``uvit``, ``vit``, ``unet``,
``textunet``) ends with its entry: its inputs, its sizing rules, how it takes a condition, which
fields are its width and depth, and its paper configurations. ``models.families`` imports them
all, in listing order.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffbench.core.registry import Registry

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
    width_field: str  # the field a common width factor scales (pipelines' --params sizing)
    depth_field: str  # transformer blocks, or U-Net blocks per level
    width_step: Callable[[Any], int]  # widths stay multiples of this (heads, GroupNorm groups)
    # (config, cond, num_classes, text_len, text_dim) -> the config that takes this condition (training)
    condition: Callable[[Any, str, int, int, int], Any] | None = None
    # (input shape, Conditioning, patch) -> the shapes `diffbench match` searches; None: sized inside pipelines only
    sizing: Callable[..., list[Any]] | None = None
    params_affine_in: str | None = None  # a depth field the params are exactly affine in (sizing probes fewer)
    odd_depth: bool = False  # the depth must stay odd (U-ViT: in-blocks, a mid-block, out-blocks)

    def build(self, config: Any) -> nn.Module:
        return config.build()


FAMILIES: Registry[Family] = Registry("family", "backbone families")


def noise_and_time(shape: tuple[int, int, int], batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    return {
        "x": torch.randn(batch, *shape, device=device, dtype=dtype),
        "t": torch.full((batch,), 500.0, device=device),  # any timestep: compute does not depend on it
    }


def labels(num_classes: int, batch: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.long, device=device)  # class 0: compute does not depend on it


def transformer_width_step(cfg: Any) -> int:
    return math.lcm(cfg.num_heads, 16)


def unet_width_step(cfg: Any) -> int:
    heads = cfg.num_heads if isinstance(getattr(cfg, "num_heads", None), int) else 1
    attends = bool(getattr(cfg, "attention_resolutions", ())) or getattr(cfg, "mid_attention", False)
    head_ch = getattr(cfg, "num_head_channels", 1) if attends else 1
    return math.lcm(cfg.norm_num_groups, max(head_ch, 1), heads)


def family_of(config: Any) -> Family:
    for _, fam in FAMILIES.items():
        if isinstance(config, fam.config_cls):
            return fam
    raise TypeError(f"no family for config type {type(config).__name__}")
