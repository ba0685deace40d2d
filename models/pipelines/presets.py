"""The canon's pipelines as presets of ``models.pipeline``: each at paper scale (counted on the meta
device; exact where the released configs are known) and at tiny scale (trained and sampled on a CPU).

Paper-scale sources and what is exact:
- ``ldm``: Stable Diffusion 1.5 (CLIP ViT-L/14 text 123,060,480; KL-f8 autoencoder 83,653,863;
  U-Net 859,520,964): exact, from the released diffusers configs.
- ``unclip``: Karlo's released diffusers configs (prior 1,022,030,080; decoder 885,439,686;
  super-resolution 691,579,523): exact. DALL-E 2's cascade 64 -> 256 -> 1024 is built with two
  super-resolution stages of Karlo's SR config (Karlo itself released 64 -> 256 only).
- ``glide``: the released GLIDE (filtered) base and upsampler, text transformers included:
  385,030,726 and 398,361,286, exact.
- ``imagen``: T5-XXL encoder exact (4,762,310,656); the 64 px base from the paper's flags
  (512 channels, mult 1,2,3,4, 3 blocks, attention 32/16/8), which gives 2.23B in this layout
  against the paper's rounded "2B"; the super-resolution stages are diffusers U-Nets sized near
  the paper's 600M and 400M (its Efficient U-Net layout is not reproduced).
- ``ediffi``: T5-XXL + CLIP ViT-L/14 text; the base stage is three experts of the Imagen-style
  base, the 256 stage two experts; the paper gives no per-network counts, so none are claimed.
- ``dit`` / ``uvit`` / ``uvit-t2i``: DiT-XL/2, U-ViT-H/2, U-ViT-S/2-T2I presets plus SD's autoencoder
  (and CLIP ViT-L/14 text for the text-to-image U-ViT), exact per component.

Tiny scale: 16x16 outputs (cascades 8 -> 16; latent pipelines with an f=2 autoencoder trained by the
harness), text encoders of the same kinds at 32-64 wide and trainable (no pretrained weights ship).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from diffbench.core.errors import ConfigError
from diffbench.core.registry import Registry
from diffbench.metrics.captions import MAX_WORDS, VOCAB
from diffbench.metrics.detectors import EMBEDDED_DIM as FEATURE_DIM
from diffbench.models.dit import DiTConfig
from diffbench.models.pipelines.spec import AutoencoderSpec, PipelineSpec, PriorSpec, StageSpec
from diffbench.models.presets import PRESETS
from diffbench.models.text_encoders import CLIP_L14, CLIP_L14_PROJ, GLIDE_TEXT, T5_XXL, TextEncoderSpec
from diffbench.models.textunet import TextUNetConfig
from diffbench.models.unet import ADMUNetConfig, LDMUNetConfig
from diffbench.models.uvit import UViTConfig

SCALES = ("paper", "tiny")


@dataclass(frozen=True)
class PipelinePreset:
    name: str
    title: str
    description: str
    paper: Callable[[], PipelineSpec]
    tiny: Callable[[], PipelineSpec]
    # component -> params the source reports; "a+b" keys: a released network made of components a and b
    reported: dict[str, float] = field(default_factory=dict)
    exact: bool = False  # reported counts are exact (released configs), not rounded

    def spec(self, scale: str = "paper") -> PipelineSpec:
        if scale not in SCALES:
            raise ConfigError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
        return self.paper() if scale == "paper" else self.tiny()


PIPELINES: Registry[PipelinePreset] = Registry("pipeline", "the canon's pipelines (models/pipelines.py)")

SD_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
          "up_block_types": ("UpDecoderBlock2D",) * 4, "layers_per_block": 2, "latent_channels": 4,
          "sample_size": 512}
KARLO_PRIOR: dict[str, Any] = {}  # diffusers' PriorTransformer defaults are Karlo's prior

# --- tiny building blocks ---------------------------------------------------------------------------
TINY_WIDTH = 32
TINY_CLIP = {"vocab_size": len(VOCAB), "hidden_size": TINY_WIDTH, "intermediate_size": 2 * TINY_WIDTH,
             "num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": MAX_WORDS,
             "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0}  # the embedded vocabulary has no such tokens
TINY_T5 = {"vocab_size": len(VOCAB), "d_model": TINY_WIDTH, "d_kv": 16, "d_ff": 2 * TINY_WIDTH, "num_layers": 1,
           "num_heads": 2, "feed_forward_proj": "gated-gelu", "is_encoder_decoder": False}
TINY_GLIDE_TEXT = {"vocab": len(VOCAB), "length": MAX_WORDS, "dim": TINY_WIDTH, "layers": 1, "heads": 2,
                   "mlp_ratio": 2, "padding_embedding": True}
TINY_VAE = {"block_out_channels": (32, 64), "down_block_types": ("DownEncoderBlock2D",) * 2,
            "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "latent_channels": 4,
            "norm_num_groups": 8, "sample_size": 16}
TINY_RES = 16


def _tiny_text(kind: str = "clip", **extra: Any) -> TextEncoderSpec:
    configs: dict[str, dict[str, Any]] = {"clip": TINY_CLIP, "t5": TINY_T5, "glide": TINY_GLIDE_TEXT}
    cfg = configs[kind]
    return TextEncoderSpec(kind, {**cfg, **extra}, trainable=True, max_length=MAX_WORDS)


def _tiny_text_unet(size: int, **kw: Any) -> TextUNetConfig:
    base: dict[str, Any] = dict(image_size=size, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                attention_resolutions=(size // 2,), num_head_channels=8, context_dim=TINY_WIDTH,
                                context_tokens=MAX_WORDS, class_embed="projection", class_embed_dim=TINY_WIDTH,
                                norm_num_groups=8)
    return TextUNetConfig(**{**base, **kw})


# --- Stable Diffusion / LDM --------------------------------------------------------------------------

def _ldm_paper() -> PipelineSpec:
    unet = PRESETS.get("SD-1.5").config
    return PipelineSpec("ldm", "Stable Diffusion 1.5", (StageSpec("unet", "unet-ldm", (unet,)),),
                        (TextEncoderSpec("clip", CLIP_L14, name="CLIP ViT-L/14"),),
                        autoencoder=AutoencoderSpec(SD_VAE), guidance=7.5, steps=50,
                        source="Rombach et al. 2022; runwayml/stable-diffusion-v1-5 configs")


def _ldm_tiny() -> PipelineSpec:
    unet = LDMUNetConfig(image_size=TINY_RES // 2, in_channels=4, out_channels=4, model_channels=32,
                         channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8, 4), num_heads=4,
                         context_dim=TINY_WIDTH, context_tokens=MAX_WORDS, norm_num_groups=8)
    return PipelineSpec("ldm", "Stable Diffusion (tiny)", (StageSpec("unet", "unet-ldm", (unet,)),),
                        (_tiny_text("clip"),), autoencoder=AutoencoderSpec(TINY_VAE), guidance=3.0, steps=20)


# --- Imagen ------------------------------------------------------------------------------------------

def _imagen_base(size: int = 64) -> TextUNetConfig:
    return TextUNetConfig(image_size=size, model_channels=512, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                          attention_resolutions=(32, 16, 8), context_dim=1024, text_proj_dim=4096,
                          context_tokens=128, class_embed="none", pooled_text=True)


def _imagen_sr(size: int, blocks: tuple[int, ...]) -> TextUNetConfig:
    return TextUNetConfig(image_size=size, model_channels=128, channel_mult=(1, 2, 4, 8, 8), num_res_blocks=blocks,
                          attention_resolutions=(size // 16,), context_dim=1024, text_proj_dim=4096,
                          context_tokens=128, class_embed="timestep", pooled_text=True, concat_channels=3,
                          learn_sigma=False)


def _imagen_paper() -> PipelineSpec:
    return PipelineSpec("imagen", "Imagen", (
        StageSpec("base64", "unet-glide", (_imagen_base(),), thresholding=True),
        StageSpec("sr256", "unet-glide", (_imagen_sr(256, (2, 2, 3, 3, 3)),), low_res_from="base64", aug_level=100,
                  thresholding=True),
        StageSpec("sr1024", "unet-glide", (_imagen_sr(1024, (2, 2, 2, 2, 2)),), low_res_from="sr256",
                  aug_level=100, thresholding=True)),
        (TextEncoderSpec("t5", T5_XXL, name="T5-XXL encoder", max_length=128),), guidance=7.0, steps=50,
        source="Saharia et al. 2022 (Appendix F flags); T5-XXL (google/t5-v1_1-xxl) config")


def _tiny_cascade_stages(cond: str = "text", experts: int = 1, sr_experts: int = 1, low_embed: str = "timestep",
                         pooled: bool = True) -> tuple[StageSpec, StageSpec]:
    text_kw: dict[str, Any] = {}
    half = TINY_RES // 2
    base = _tiny_text_unet(half, class_embed="none" if pooled else "projection", pooled_text=pooled, **text_kw)
    sr = _tiny_text_unet(TINY_RES, class_embed=low_embed, pooled_text=pooled, concat_channels=3, learn_sigma=False,
                         **text_kw)
    bounds = tuple(int(1000 * (experts - i) / experts) for i in range(1, experts))
    sr_bounds = tuple(int(1000 * (sr_experts - i) / sr_experts) for i in range(1, sr_experts))
    return (StageSpec(f"base{half}", "unet-glide", (base,) * experts, cond, boundaries=bounds, thresholding=True),
            StageSpec(f"sr{TINY_RES}", "unet-glide", (sr,) * sr_experts, "text", boundaries=sr_bounds,
                      low_res_from=f"base{half}", aug_level=100, thresholding=True))


def _imagen_tiny() -> PipelineSpec:
    return PipelineSpec("imagen", "Imagen (tiny)", _tiny_cascade_stages(), (_tiny_text("t5"),), guidance=3.0, steps=20)


# --- eDiff-I -----------------------------------------------------------------------------------------

def _ediffi_paper() -> PipelineSpec:
    base, sr = _imagen_base(), _imagen_sr(256, (2, 2, 3, 3, 3))
    return PipelineSpec("ediffi", "eDiff-I", (
        StageSpec("base64", "unet-glide", (base,) * 3, boundaries=(667, 333)),
        StageSpec("sr256", "unet-glide", (sr,) * 2, boundaries=(500,), low_res_from="base64", aug_level=100),
        StageSpec("sr1024", "unet-glide", (_imagen_sr(1024, (2, 2, 2, 2, 2)),), low_res_from="sr256",
                  aug_level=100)),
        (TextEncoderSpec("t5", T5_XXL, name="T5-XXL encoder", max_length=77),
         TextEncoderSpec("clip", CLIP_L14, name="CLIP ViT-L/14")),
        guidance=7.5, steps=50,
        source="Balaji et al. 2022 (experts by noise interval; T5 + CLIP text); Imagen-style U-Nets")


def _ediffi_tiny() -> PipelineSpec:
    return PipelineSpec("ediffi", "eDiff-I (tiny)", _tiny_cascade_stages(experts=2, sr_experts=1),
                        (_tiny_text("t5"), _tiny_text("clip")), guidance=3.0, steps=20)


# --- unCLIP (DALL-E 2 / Karlo) -----------------------------------------------------------------------

def _karlo_decoder() -> TextUNetConfig:
    return TextUNetConfig(image_size=64, model_channels=320, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                          attention_resolutions=(32, 16, 8), context_dim=1536, context_tokens=77 + 4,
                          class_embed="identity", text_proj_dim=0)


def _karlo_sr(size: int) -> ADMUNetConfig:
    return ADMUNetConfig(image_size=size, in_channels=3, concat_channels=3, model_channels=320,
                         channel_mult=(1, 2, 3, 4), num_res_blocks=3, attention_resolutions=(), num_classes=0,
                         learn_sigma=False, use_scale_shift_norm=False, mid_attention=False)


def _unclip_paper() -> PipelineSpec:
    return PipelineSpec("unclip", "unCLIP (DALL-E 2, Karlo sizes)", (
        StageSpec("decoder", "unet-glide", (_karlo_decoder(),), "image"),
        StageSpec("sr256", "unet-adm", (_karlo_sr(256),), "none", low_res_from="decoder", aug_level=0),
        StageSpec("sr1024", "unet-adm", (_karlo_sr(1024),), "none", low_res_from="sr256", aug_level=0)),
        (TextEncoderSpec("clip", CLIP_L14_PROJ, name="CLIP ViT-L/14 (with projection)"),),
        prior=PriorSpec(KARLO_PRIOR, 768), guidance=4.0, steps=25,
        source="Ramesh et al. 2022; kakaobrain/karlo-v1-alpha diffusers configs")


def _unclip_tiny() -> PipelineSpec:
    w = FEATURE_DIM  # the embedded CLIP's embedding width: its image embeddings are the prior's targets
    decoder = _tiny_text_unet(TINY_RES // 2, class_embed="identity", context_tokens=MAX_WORDS + 2)
    sr = ADMUNetConfig(image_size=TINY_RES, in_channels=3, concat_channels=3, model_channels=32, channel_mult=(1, 2),
                       num_res_blocks=1, attention_resolutions=(), num_classes=0, learn_sigma=False,
                       use_scale_shift_norm=False, mid_attention=False, norm_num_groups=8)
    prior = {"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 2, "embedding_dim": w,
             "num_embeddings": MAX_WORDS, "additional_embeddings": 4}
    return PipelineSpec("unclip", "unCLIP (tiny)", (
        StageSpec("decoder", "unet-glide", (decoder,), "image"),
        StageSpec(f"sr{TINY_RES}", "unet-adm", (sr,), "none", low_res_from="decoder", aug_level=0)),
        (_tiny_text("clip", hidden_size=w, intermediate_size=2 * w, projection_dim=w),),
        prior=PriorSpec(prior, w, extra_tokens=2), guidance=3.0, steps=20)


# --- GLIDE -------------------------------------------------------------------------------------------

def _glide_paper() -> PipelineSpec:
    text = TextEncoderSpec("glide", GLIDE_TEXT, trainable=True, name="GLIDE text transformer")
    up = TextUNetConfig(image_size=256, channel_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, concat_channels=3)
    return PipelineSpec("glide", "GLIDE (filtered, released)", (
        StageSpec("base64", "unet-glide", (TextUNetConfig(),)),
        StageSpec("up256", "unet-glide", (up,), low_res_from="base64", text_encoder=text)),
        (text,), guidance=3.0, steps=100, source="Nichol et al. 2022; openai/glide-text2im model flags")


def _glide_tiny() -> PipelineSpec:
    text = _tiny_text("glide")
    base = _tiny_text_unet(TINY_RES // 2)
    up = _tiny_text_unet(TINY_RES, concat_channels=3)
    return PipelineSpec("glide", "GLIDE (tiny)", (
        StageSpec(f"base{TINY_RES // 2}", "unet-glide", (base,)),
        StageSpec(f"up{TINY_RES}", "unet-glide", (up,), low_res_from=f"base{TINY_RES // 2}", text_encoder=text)),
        (text,), guidance=3.0, steps=20)


# --- DiT, U-ViT (latent, class- or text-conditional) -------------------------------------------------

def _latent_class(name: str, title: str, preset: str) -> PipelineSpec:
    cfg = PRESETS.get(preset).config
    family = "dit" if isinstance(cfg, DiTConfig) else "uvit"
    return PipelineSpec(name, title, (StageSpec("denoiser", family, (cfg,), "class"),),
                        autoencoder=AutoencoderSpec(SD_VAE), num_classes=1000, guidance=1.5, steps=250,
                        source=f"{preset} with the SD (ft-EMA) KL-f8 autoencoder")


def _dit_tiny() -> PipelineSpec:
    cfg = DiTConfig(input_size=TINY_RES // 2, patch_size=2, in_channels=4, hidden_size=64, depth=4, num_heads=4,
                    num_classes=10, class_dropout_prob=0.1)  # > 0 keeps the null-class row
    return PipelineSpec("dit", "DiT (tiny)", (StageSpec("denoiser", "dit", (cfg,), "class"),),
                        autoencoder=AutoencoderSpec(TINY_VAE), num_classes=10, guidance=1.5, steps=20)


def _uvit_tiny() -> PipelineSpec:
    cfg = UViTConfig(img_size=TINY_RES // 2, patch_size=2, in_chans=4, embed_dim=64, depth=5, num_heads=4,
                     num_classes=11)
    return PipelineSpec("uvit", "U-ViT (tiny)", (StageSpec("denoiser", "uvit", (cfg,), "class"),),
                        autoencoder=AutoencoderSpec(TINY_VAE), num_classes=10, guidance=1.5, steps=20)


def _uvit_t2i_paper() -> PipelineSpec:
    cfg = PRESETS.get("U-ViT-S/2-T2I").config
    return PipelineSpec("uvit-t2i", "U-ViT-S/2 text-to-image (MS-COCO)", (StageSpec("denoiser", "uvit", (cfg,)),),
                        (TextEncoderSpec("clip", CLIP_L14, name="CLIP ViT-L/14"),),
                        autoencoder=AutoencoderSpec(SD_VAE), guidance=3.0, steps=50,
                        source="Bao et al. 2023 (MS-COCO U-ViT-S/2) with SD's autoencoder and CLIP ViT-L/14")


def _uvit_t2i_tiny() -> PipelineSpec:
    cfg = UViTConfig(img_size=TINY_RES // 2, patch_size=2, in_chans=4, embed_dim=64, depth=5, num_heads=4,
                     num_classes=-1, clip_dim=TINY_WIDTH, num_clip_token=MAX_WORDS)
    return PipelineSpec("uvit-t2i", "U-ViT text-to-image (tiny)", (StageSpec("denoiser", "uvit", (cfg,)),),
                        (_tiny_text("clip"),), autoencoder=AutoencoderSpec(TINY_VAE), guidance=3.0, steps=20)


def _add(name: str, title: str, description: str, paper: Callable[[], PipelineSpec],
         tiny: Callable[[], PipelineSpec], reported: dict[str, float] | None = None, exact: bool = False) -> None:
    PIPELINES.add(name, PipelinePreset(name, title, description, paper, tiny, reported or {}, exact))


_add("ldm", "Stable Diffusion / LDM", "CLIP text -> latent U-Net with cross-attention -> KL-f8 decoder",
     _ldm_paper, _ldm_tiny, {"text_encoder": 123_060_480, "autoencoder": 83_653_863, "unet": 859_520_964}, True)
_add("imagen", "Imagen", "frozen T5 -> pixel cascade 64 -> 256 -> 1024 (noise-augmented concat), dynamic thresholding",
     _imagen_paper, _imagen_tiny, {"text_encoder": 4_762_310_656, "base64": 2e9, "sr256": 6e8, "sr1024": 4e8})
_add("ediffi", "eDiff-I", "T5 + CLIP text -> cascade whose stages are experts owning intervals of noise levels",
     _ediffi_paper, _ediffi_tiny)
_add("unclip", "unCLIP (DALL-E 2)",
     "CLIP text -> prior -> CLIP image embedding -> decoder -> 2 super-resolution stages",
     _unclip_paper, _unclip_tiny, {"prior": 1_022_030_080, "decoder": 885_439_686, "sr256": 691_579_523,
                                   "sr1024": 691_579_523}, True)
_add("glide", "GLIDE", "own text transformer -> pixel U-Net (text in attention) -> text-conditioned upsampler",
     _glide_paper, _glide_tiny, {"text_encoder+base64": 385_030_726, "up256.text_encoder+up256": 398_361_286}, True)
_add("dit", "DiT", "class-conditional latent DiT-XL/2 with SD's autoencoder",
     lambda: _latent_class("dit", "DiT-XL/2 (latent)", "DiT-XL/2"), _dit_tiny)
_add("uvit", "U-ViT", "class-conditional latent U-ViT-H/2 with SD's autoencoder",
     lambda: _latent_class("uvit", "U-ViT-H/2 (latent)", "U-ViT-H/2"), _uvit_tiny)
_add("uvit-t2i", "U-ViT text-to-image", "CLIP text tokens -> latent U-ViT (every input a token) -> KL-f8 decoder",
     _uvit_t2i_paper, _uvit_t2i_tiny)
