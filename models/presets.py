"""Paper configurations as data, keyed by the papers' names, with their sources and reported numbers.

``reference`` holds the exact counts of the official code (REFERENCE.md: ``params``,
``params_trainable``, ``gmacs``) and what the paper reports (``paper_gflops``, ``paper_fid``,
``paper_params``), so that tests and reports can set measured beside reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from diffbench.core.registry import Registry
from diffbench.models.dit import DiTConfig
from diffbench.models.unet import ADMUNetConfig, LDMUNetConfig
from diffbench.models.uvit import UViTConfig

DIT_PAPER = "Peebles & Xie, Scalable Diffusion Models with Transformers, ICCV 2023 (facebookresearch/DiT)"
UVIT_PAPER = "Bao et al., All are Worth Words: A ViT Backbone for Diffusion Models, CVPR 2023 (baofff/U-ViT)"
ADM_PAPER = "Dhariwal & Nichol, Diffusion Models Beat GANs on Image Synthesis, 2021 (openai/guided-diffusion)"
LDM_PAPER = "Rombach et al., High-Resolution Image Synthesis with Latent Diffusion Models, CVPR 2022"


@dataclass(frozen=True)
class Preset:
    name: str
    family: str
    config: Any  # the family's frozen config dataclass
    source: str
    reference: dict[str, Any] = field(default_factory=dict)


PRESETS: Registry[Preset] = Registry("preset", "paper configurations (REFERENCE.md)")


def _add(name: str, family: str, config: Any, source: str, **reference: Any) -> None:
    PRESETS.add(name, Preset(name, family, config, source, reference))


# DiT Table 4: name, depth, hidden, heads, patch, params all, trainable, GMACs, paper Gflops, FID-50K @400K
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
    _add(_n, "dit", DiTConfig(depth=_d, hidden_size=_h, num_heads=_nh, patch_size=_p), DIT_PAPER + ", Table 4",
         params=_all, params_trainable=_tr, gmacs=_g, paper_gflops=_pg, paper_fid=_fid,
         fid_note="FID-50K at 400K steps, no guidance")

# DiT conditioning ablation (Figure 5 / Section 3.2) on XL/2: paper params (rounded), Gflops, FID.
for _cond, _pp, _pg, _fid in [("in-context", 449_000_000, 119.37, 35.24),
                              ("cross-attention", 598_000_000, 137.62, 26.14),
                              ("adaLN", 600_000_000, 118.56, 25.21)]:
    _add(f"DiT-XL/2-{_cond}", "dit", DiTConfig(conditioning=_cond), DIT_PAPER + ", conditioning ablation",
         paper_params=_pp, paper_gflops=_pg, paper_fid=_fid,
         note="ablation code unreleased; built from the paper's description, params within 0.5% of the paper's")

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
    _add(_n, "uvit", _uc, f"{UVIT_PAPER}, {_model}", params=_p, params_trainable=_p, gmacs=_g, paper_fid=_fid)

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
    _add(_n, "unet-adm", _ac, ADM_PAPER, params=_p, params_trainable=_p, gmacs=_g, note=_note)

# LDM / Stable Diffusion U-Nets (latent-diffusion configs, diffusers model cards)
_add("LDM-4", "unet-ldm",
     LDMUNetConfig(image_size=64, in_channels=3, out_channels=3, model_channels=192, channel_mult=(1, 2, 3, 5),
                   attention_resolutions=(32, 16, 8), num_heads=1, context_dim=512, context_tokens=1),
     LDM_PAPER + ", cin256-v2 (ImageNet, 64x64x3 latent)", params=400_920_579, params_trainable=400_920_579,
     gmacs=104.23, paper_fid=3.60,
     note="the 1001x512 class table feeding cross-attention (512,512 params) is counted apart; DiT cites 103.6")
_add("SD-1.5", "unet-ldm", LDMUNetConfig(), "Stable Diffusion v1.5 UNet (runwayml), 64x64 latent, 77 tokens",
     params=859_520_964, params_trainable=859_520_964, gmacs=401.64)
_add("SD-2.1", "unet-ldm",
     LDMUNetConfig(num_heads=(5, 10, 20, 20), context_dim=1024, use_linear_projection=True),
     "Stable Diffusion v2.1 UNet (stabilityai), 64x64 latent, context dim 1024",
     params=865_910_724, params_trainable=865_910_724, gmacs=402.13)
_add("SDXL", "unet-ldm",
     LDMUNetConfig(image_size=128, channel_mult=(1, 2, 4), attention_resolutions=(64, 32), num_heads=(5, 10, 20),
                   transformer_depth=(1, 2, 10), context_dim=2048, use_linear_projection=True, addition_embed=True),
     "SDXL base 1.0 UNet (stabilityai), 128x128 latent", params=2_567_463_684, params_trainable=2_567_463_684,
     gmacs=3380.62)
