"""DiT: "Scalable Diffusion Models with Transformers" (Peebles & Xie, ICCV 2023), written here.

Faithful to facebookresearch/DiT ``models.py``: same modules, parameter names and init, so a
released checkpoint (a plain state dict such as ``DiT-XL-2-256x256.pt``) loads with
``strict=True`` and ``forward(x, t, y)`` means what it means there. Besides adaLN-Zero (the
paper's choice) the block offers the three other conditioning designs of its Section 3.2 /
Figure 5 ablation: in-context tokens, cross-attention and adaLN (no zero init). The
ablation's code was not released; these follow the paper's description and match its
parameter counts within 0.3% (see ``tests/test_presets.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffbench.core.errors import ConfigError
from diffbench.models import shapes
from diffbench.models.about import about
from diffbench.models.family import FAMILIES, Family, Inputs, labels, noise_and_time, transformer_width_step
from diffbench.models.layers import Attention, CrossAttention, Mlp, PatchEmbed, check_divisible, sincos_pos_embed_2d
from diffbench.models.layers import timestep_embedding as _timestep_embedding
from diffbench.models.presets import add_preset
from diffbench.models.shapes import Conditioning, InputShape, Structure

CONDITIONINGS = ("adaLN-Zero", "adaLN", "cross-attention", "in-context")


@dataclass(frozen=True)
class DiTConfig:
    input_size: int = 32  # latent height = width
    patch_size: int = 2
    in_channels: int = 4
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    class_dropout_prob: float = 0.1  # > 0 adds the null class used by classifier-free guidance
    num_classes: int = 1000  # 0: unconditional (no label embedder)
    learn_sigma: bool = True  # 2x output channels (epsilon and the variance interpolation)
    conditioning: str = "adaLN-Zero"

    def __post_init__(self) -> None:
        if self.conditioning not in CONDITIONINGS:
            raise ConfigError(f"DiT conditioning must be one of {', '.join(CONDITIONINGS)}, got {self.conditioning!r}")
        if self.hidden_size % self.num_heads:
            raise ConfigError(f"DiT hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        check_divisible(self.input_size, self.patch_size, "DiT input")

    def build(self) -> DiT:
        return DiT(self)


def _zero_linear(layer: Any) -> None:
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


class TimestepEmbedder(nn.Module):
    """256-d sinusoidal frequencies -> MLP -> (N, D)."""

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(frequency_embedding_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.frequency_embedding_size = frequency_embedding_size

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(_timestep_embedding(t, self.frequency_embedding_size))


class LabelEmbedder(nn.Module):
    """Class table with one extra row, the null class, when labels are dropped for guidance."""

    def __init__(self, num_classes: int, hidden_size: int, dropout_prob: float) -> None:
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + int(dropout_prob > 0), hidden_size)
        self.num_classes = num_classes
        self.dropout_prob = dropout_prob

    def token_drop(self, labels: torch.Tensor, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if force_drop_ids is None:
            drop = torch.rand(labels.shape[0], device=labels.device) < self.dropout_prob
        else:
            drop = force_drop_ids == 1
        return torch.where(drop, self.num_classes, labels)

    def forward(self, labels: torch.Tensor, train: bool, force_drop_ids: torch.Tensor | None = None) -> torch.Tensor:
        if (train and self.dropout_prob > 0) or force_drop_ids is not None:
            labels = self.token_drop(labels, force_drop_ids)
        return self.embedding_table(labels)


class DiTBlock(nn.Module):
    """Transformer block; how ``c`` enters depends on the conditioning design."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, conditioning: str) -> None:
        super().__init__()
        self.conditioning = conditioning
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden_size, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(hidden_size, int(hidden_size * mlp_ratio), approximate_gelu=True)
        if conditioning in ("adaLN-Zero", "adaLN"):
            # adaLN-Zero regresses shift, scale and gate for both sub-layers; adaLN only shift, scale.
            n_mod = 6 if conditioning == "adaLN-Zero" else 4
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, n_mod * hidden_size))
        elif conditioning == "cross-attention":
            self.norm_cross = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
            self.cross_attn = CrossAttention(hidden_size, num_heads)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.conditioning == "adaLN-Zero":
            shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.adaLN_modulation(c).chunk(6, dim=1)
            x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
            return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        if self.conditioning == "adaLN":
            shift_msa, scale_msa, shift_mlp, scale_mlp = self.adaLN_modulation(c).chunk(4, dim=1)
            x = x + self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
            return x + self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))
        x = x + self.attn(self.norm1(x))
        if self.conditioning == "cross-attention":
            x = x + self.cross_attn(self.norm_cross(x), c)  # c: (N, 2, D) time and class tokens
        return x + self.mlp(self.norm2(x))


class FinalLayer(nn.Module):
    def __init__(self, hidden_size: int, patch_size: int, out_channels: int, adaptive: bool) -> None:
        super().__init__()
        self.norm_final = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=1e-6)
        self.linear = nn.Linear(hidden_size, patch_size * patch_size * out_channels)
        self.adaptive = adaptive
        if adaptive:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = self.norm_final(x)
        if self.adaptive:
            shift, scale = self.adaLN_modulation(c).chunk(2, dim=1)
            x = modulate(x, shift, scale)
        return self.linear(x)  # (N, T, p*p*C_out)


class DiT(nn.Module):
    """Diffusion transformer. ``forward(x, t, y)``: (N, C, H, W), (N,), (N,) -> (N, C_out, H, W)."""

    def __init__(self, config: DiTConfig | None = None, **kwargs: object) -> None:
        super().__init__()
        cfg = config if config is not None else DiTConfig(**kwargs)  # type: ignore[arg-type]
        self.config = cfg
        self.learn_sigma = cfg.learn_sigma
        self.in_channels = cfg.in_channels
        self.out_channels = cfg.in_channels * 2 if cfg.learn_sigma else cfg.in_channels
        self.patch_size = cfg.patch_size
        self.num_heads = cfg.num_heads
        d = cfg.hidden_size

        self.x_embedder = PatchEmbed(cfg.patch_size, cfg.in_channels, d)
        self.t_embedder = TimestepEmbedder(d)
        self.y_embedder = (
            LabelEmbedder(cfg.num_classes, d, cfg.class_dropout_prob) if cfg.num_classes > 0 else None
        )
        self.num_patches = (cfg.input_size // cfg.patch_size) ** 2
        # Fixed sin-cos embedding, stored as a frozen parameter as the official code does (it
        # is in the checkpoints and in the paper's parameter count: "all" vs "trainable").
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_patches, d), requires_grad=False)
        self.blocks = nn.ModuleList(
            [DiTBlock(d, cfg.num_heads, cfg.mlp_ratio, cfg.conditioning) for _ in range(cfg.depth)]
        )
        adaptive_final = cfg.conditioning in ("adaLN-Zero", "adaLN")
        self.final_layer = FinalLayer(d, cfg.patch_size, self.out_channels, adaptive_final)
        if not self.pos_embed.is_meta:
            self.initialize_weights()

    def initialize_weights(self) -> None:
        def _basic_init(module: nn.Module) -> None:
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.constant_(module.bias, 0)

        self.apply(_basic_init)
        grid = int(self.num_patches**0.5)
        pos = sincos_pos_embed_2d(self.pos_embed.shape[-1], grid)
        self.pos_embed.data.copy_(torch.from_numpy(pos).float().unsqueeze(0))
        w = self.x_embedder.proj.weight.data  # patch embedding initialised like nn.Linear
        nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
        nn.init.zeros_(self.x_embedder.proj.bias)  # type: ignore[arg-type]
        if self.y_embedder is not None:
            nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        t_mlp: Any = self.t_embedder.mlp
        nn.init.normal_(t_mlp[0].weight, std=0.02)
        nn.init.normal_(t_mlp[2].weight, std=0.02)
        if self.config.conditioning == "adaLN-Zero":  # the "-Zero": every block starts as the identity
            blocks: Any = self.blocks
            for block in blocks:
                _zero_linear(block.adaLN_modulation[-1])
        final: Any = self.final_layer
        if final.adaptive:
            _zero_linear(final.adaLN_modulation[-1])
        _zero_linear(self.final_layer.linear)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        c, p = self.out_channels, self.patch_size
        h = w = int(x.shape[1] ** 0.5)
        x = x.reshape(x.shape[0], h, w, p, p, c)
        x = torch.einsum("nhwpqc->nchpwq", x)
        return x.reshape(x.shape[0], c, h * p, w * p)  # (N, C_out, H, W)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.x_embedder(x) + self.pos_embed  # (N, T, D), T = H * W / p^2
        t_emb = self.t_embedder(t)  # (N, D)
        y_emb = self._label_embedding(y)  # (N, D) or None when unconditional
        if self.config.conditioning in ("adaLN-Zero", "adaLN"):
            c = t_emb if y_emb is None else t_emb + y_emb  # (N, D)
            for block in self.blocks:
                x = block(x, c)
            x = self.final_layer(x, c)  # (N, T, p*p*C_out)
        else:
            tokens = torch.stack([t_emb] if y_emb is None else [t_emb, y_emb], dim=1)  # (N, K, D)
            if self.config.conditioning == "in-context":
                x = torch.cat([tokens, x], dim=1)  # (N, K + T, D)
            for block in self.blocks:
                x = block(x, tokens)
            x = x[:, x.shape[1] - self.num_patches:]  # in-context: drop the K tokens after the last block
            x = self.final_layer(x, tokens)  # (N, T, p*p*C_out)
        return self.unpatchify(x)  # (N, C_out, H, W)

    def _label_embedding(self, y: torch.Tensor | None) -> torch.Tensor | None:
        if self.y_embedder is None:
            return None
        if y is None:
            raise ValueError("this DiT is class-conditional: pass labels y (num_classes is the null class)")
        return self.y_embedder(y, self.training)

    def forward_with_cfg(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor, cfg_scale: float,
                         guided_channels: int | None = 3) -> torch.Tensor:
        """Classifier-free guidance on a batch whose second half carries null labels.

        The official sampler guides only the first 3 of the 4 latent channels (its comment: "for
        exact reproducibility reasons"); ``guided_channels=None`` guides all ``in_channels``.
        """
        half = x[: len(x) // 2]
        out = self.forward(torch.cat([half, half], dim=0), t, y)
        k = self.in_channels if guided_channels is None else guided_channels
        eps, rest = out[:, :k], out[:, k:]
        cond_eps, uncond_eps = torch.split(eps, len(eps) // 2, dim=0)
        half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
        return torch.cat([torch.cat([half_eps, half_eps], dim=0), rest], dim=1)


# --- the family: inputs, conditioning, sizing rules, paper configurations ---------------------------

def patch_inputs(cfg: DiTConfig | Any, batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    """DiT and ViT share the official DiT signature: x, t and (when class-conditional) y."""
    inp = noise_and_time((cfg.in_channels, cfg.input_size, cfg.input_size), batch, device, dtype)
    if cfg.num_classes > 0:
        inp["y"] = labels(cfg.num_classes, batch, device)
    return inp


def class_or_none(family: str, cond: str, num_classes: int) -> dict[str, Any]:
    """DiT and ViT take class labels (or nothing); never text."""
    if cond == "text":
        raise ConfigError(f"the {family} family takes class or no conditioning, not text")
    return {"num_classes": num_classes if cond == "class" else 0}


def _condition(config: DiTConfig, cond: str, num_classes: int, text_len: int, text_dim: int) -> DiTConfig:
    rep = class_or_none("dit", cond, num_classes)
    return dataclasses.replace(config, **rep, class_dropout_prob=0.1 if cond == "class" else 0.0)


def dit_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    if cond.kind == "text":
        raise ConfigError("the DiT family is class-conditional or unconditional; use --cond class or none")
    p = shapes.patch_size(shape, patch)
    ncls = cond.num_classes if cond.kind == "class" else 0

    def make(w: int, d: int) -> DiTConfig:
        return DiTConfig(input_size=shape[1], patch_size=p, in_channels=shape[0], hidden_size=w, depth=d,
                         num_heads=shapes.heads(w), num_classes=ncls)

    return [Structure(("dit", p), make, shapes.transformer_atypicality, shapes.transformer_widths(), shapes.depth_band,
                      (64, 128, 192), (2, 4))]


FAMILIES.add("dit", Family(
    **about("dit"), config_cls=DiTConfig, input_shape=lambda c: (c.in_channels, c.input_size, c.input_size),
    make_inputs=patch_inputs, denoise=lambda m, i: m(i["x"], i["t"], i.get("y")),
    tiny=lambda: DiTConfig(input_size=8, patch_size=2, in_channels=3, hidden_size=64, depth=2, num_heads=2,
                           num_classes=10),
    width_field="hidden_size", depth_field="depth", width_step=transformer_width_step, condition=_condition,
    sizing=dit_structures, conditions=("class", "none"),
))

DIT_PAPER = "Peebles & Xie, Scalable Diffusion Models with Transformers, ICCV 2023 (facebookresearch/DiT)"
# DiT Table 4: name, depth, hidden, shapes.heads, patch, params all, trainable, GMACs, paper Gflops, FID-50K @400K
_DIT_TABLE = [
    ("DiT-S/8", 12, 384, 6, 8, 33_148_160, 33_142_016, 0.358, 0.36, 153.60),
    ("DiT-S/4", 12, 384, 6, 4, 32_945_024, 32_920_448, 1.413, 1.41, 100.41),
    ("DiT-S/2", 12, 384, 6, 2, 32_963_360, 32_865_056, 6.056, 6.06, 68.40),
    ("DiT-B/8", 12, 768, 12, 8, 130_881_536, 130_869_248, 1.418, 1.42, 122.74),
    ("DiT-B/4", 12, 768, 12, 4, 130_475_648, 130_426_496, 5.565, 5.56, 68.38),
    ("DiT-B/2", 12, 768, 12, 2, 130_512_416, 130_315_808, 23.005, 23.01, 43.47),
    ("DiT-L/8", 24, 1024, 16, 8, 458_594_816, 458_578_432, 5.011, 5.01, 118.87),
    ("DiT-L/4", 24, 1024, 16, 4, 458_053_760, 457_988_224, 19.696, 19.7, 45.64),
    ("DiT-L/2", 24, 1024, 16, 2, 458_102_816, 457_840_672, 80.698, 80.71, 23.33),
    ("DiT-XL/8", 28, 1152, 16, 8, 675_683_072, 675_664_640, 7.392, 7.39, 106.41),
    ("DiT-XL/4", 28, 1152, 16, 4, 675_074_432, 675_000_704, 29.044, 29.05, 43.01),
    ("DiT-XL/2", 28, 1152, 16, 2, 675_129_632, 674_834_720, 118.621, 118.64, 19.47),
]
for _n, _d, _h, _nh, _p, _all, _tr, _g, _pg, _fid in _DIT_TABLE:
    add_preset(_n, "dit", DiTConfig(depth=_d, hidden_size=_h, num_heads=_nh, patch_size=_p), DIT_PAPER + ", Table 4",
         params=_all, params_trainable=_tr, gmacs=_g, paper_gflops=_pg, paper_fid=_fid,
         fid_note="FID-50K at 400K steps, no guidance")

# DiT conditioning ablation (Figure 5 / Section 3.2) on XL/2: paper params (rounded), Gflops, FID.
for _cond, _pp, _pg, _fid in [("in-context", 449_000_000, 119.37, 35.24),
                              ("cross-attention", 598_000_000, 137.62, 26.14),
                              ("adaLN", 600_000_000, 118.56, 25.21)]:
    add_preset(f"DiT-XL/2-{_cond}", "dit", DiTConfig(conditioning=_cond), DIT_PAPER + ", conditioning ablation",
         paper_params=_pp, paper_gflops=_pg, paper_fid=_fid,
         note="ablation code unreleased; built from the paper's description, params within 0.5% of the paper's")
