"""Primitives shared by the transformer backbones (DiT, U-ViT, ViT), written here.

Module and parameter names follow the official implementations (timm's ``Attention`` /
``Mlp`` / ``PatchEmbed`` as used by DiT, U-ViT's own copies), so official state dicts load.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffbench.core.errors import ConfigError


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep features, cos half first (GLIDE/ADM ``timestep_embedding``). (N,) -> (N, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def sincos_pos_embed_2d(dim: int, grid: int) -> np.ndarray:
    """Fixed 2-D sin-cos position embedding (MAE/DiT): half the channels encode rows, half columns.

    Returns (grid*grid, dim) float64. Computed in numpy float64 as the official code does,
    so the float32 values match a released checkpoint's frozen ``pos_embed`` bit for bit.
    """
    if dim % 4:
        raise ValueError(f"sin-cos position embedding needs a width divisible by 4, got {dim}")
    coords = np.arange(grid, dtype=np.float32)
    ww, hh = np.meshgrid(coords, coords)  # w first, as in MAE

    def one_axis(pos: np.ndarray) -> np.ndarray:
        omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
        out = np.einsum("m,d->md", pos.reshape(-1), omega)  # (M, dim/4)
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, dim/2)

    return np.concatenate([one_axis(ww), one_axis(hh)], axis=1)  # (M, dim)


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens by a strided conv. (N, C, H, W) -> (N, H*W/p^2, D)."""

    def __init__(self, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, T, D)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm / U-ViT layout: ``qkv``, ``proj``)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        qkv = self.qkv(x).reshape(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, H, T, Dh)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class CrossAttention(nn.Module):
    """Multi-head attention from tokens to a conditioning sequence (DiT's cross-attention ablation)."""

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None) -> None:
        super().__init__()
        context_dim = context_dim or dim
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape
        h = self.num_heads
        q = self.q(x).reshape(n, t, h, d // h).transpose(1, 2)
        kv = self.kv(context).reshape(n, context.shape[1], 2, h, d // h).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, kv[0], kv[1])  # (N, H, T, Dh)
        return self.proj(x.transpose(1, 2).reshape(n, t, d))


class Mlp(nn.Module):
    """Two-layer MLP (timm layout: ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int, approximate_gelu: bool) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU(approximate="tanh" if approximate_gelu else "none")
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def check_divisible(size: int, patch: int, what: str = "input") -> None:
    if size % patch:
        raise ConfigError(
            f"{what} size {size} is not divisible by the patch size {patch}; "
            f"use a size that is a multiple of {patch} or another patch size"
        )
