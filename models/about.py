"""What each backbone family is, in words, in listing order: the one place its title and description are written.
The families' registrations read it (``Family(**about("dit"), ...)``), and ``diffbench list families`` lists it
without importing the networks, so without torch."""

from __future__ import annotations

from typing import TypedDict

ENTRY_POINTS = "diffbench.families"  # the entry point group an installed package declares its families in


class About(TypedDict):
    name: str
    title: str
    description: str


ABOUT: dict[str, tuple[str, str]] = {  # name -> (title, description)
    "dit": ("DiT", "ViT with adaLN-Zero conditioning (Peebles & Xie 2023); also adaLN / cross-attention / in-context"),
    "uvit": ("U-ViT", "ViT with long skips, every input a token (Bao et al. 2023)"),
    "vit": ("ViT", "plain isotropic transformer, in-context conditioning, no long skips (baseline)"),
    "unet-adm": ("ADM U-Net", "pixel U-Net of guided-diffusion (Dhariwal & Nichol 2021) via diffusers UNet2DModel"),
    "unet-ldm": ("LDM U-Net", "latent U-Net with cross-attention (LDM / Stable Diffusion) via diffusers "
                              "UNet2DConditionModel"),
    "unet-glide": ("GLIDE U-Net", "pixel U-Net with text tokens in every attention layer (GLIDE, unCLIP decoder, "
                                  "Imagen-style) via diffusers"),
}


def about(name: str) -> About:
    """A family registration's name, title and description (``Family(**about("dit"), ...)``)."""
    title, description = ABOUT[name]
    return About(name=name, title=title, description=description)
