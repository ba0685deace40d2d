"""Tiny pretrained systems built in the test and saved as their releases are: a Stable-Diffusion-layout diffusers
pipeline directory (random weights, a byte-level CLIP tokenizer with no merges), written with ``save_pretrained``.
Nothing is downloaded; numbers from them say the plumbing works, not how good a model is."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def _byte_symbols() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values (the alphabet of CLIP's byte-level BPE)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    symbols, extra = dict(zip(keep, keep, strict=True)), 0
    for b in range(256):
        if b not in symbols:
            symbols[b], extra = 256 + extra, extra + 1
    return [chr(symbols[b]) for b in range(256)]


def clip_tokenizer(folder: Path):
    """A CLIP tokenizer whose vocabulary is single bytes (with and without the end-of-word mark): no merges."""
    from transformers import CLIPTokenizer

    chars = _byte_symbols()
    vocab = {c: i for i, c in enumerate(chars)} | {c + "</w>": i + 256 for i, c in enumerate(chars)}
    vocab |= {"<|startoftext|>": 512, "<|endoftext|>": 513}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=(32, 64), down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=32,
                         sample_size=16)


def tiny_sd(out: Path, seed: int = 0) -> Path:
    """A StableDiffusionPipeline directory: 8x8x4 latents, 16x16 images, a 2-layer CLIP text encoder."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from diffbench.models.pretrained import quiet_loading

    quiet_loading()
    torch.manual_seed(seed)
    tok = clip_tokenizer(out / "tokenizer-files")
    text = CLIPTextModel(CLIPTextConfig(vocab_size=514, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                                        num_hidden_layers=2, max_position_embeddings=77, bos_token_id=512,
                                        eos_token_id=513, pad_token_id=513))
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                                attention_head_dim=8, norm_num_groups=32)
    sched = DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, clip_sample=False,
                          set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=tiny_vae(), text_encoder=text, tokenizer=tok, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(out / "sd"))
    return out / "sd"
