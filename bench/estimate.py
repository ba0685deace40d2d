"""Modelled GPU time of a case that trains and samples: what ``diffbench run --dry-run`` shows before a cluster
is asked for, and what ``scripts/scale_model.py`` tabulates in ``docs/scale.md``.

A model, not a measurement: the network's forward cost is diffbench's exact count; seconds come from a GPU's
dense bf16 peak and the fraction of it reached (MFU), both assumptions. Training is 3 forward passes per image
(forward and backward), plus one SD-VAE encoding per image when a latent backbone trains on images (the
official DiT script encodes every batch; latents from ``diffbench latents`` spare it). Sampling is one forward
per step (two with guidance), one SD-VAE decoding per latent image, and Inception-v3 features per image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffbench.diffusion.latents import MANIFEST

# counted once by scripts/scale_model.py (diffbench's counters on the SD-VAE at 256 px and Inception-v3 at 299 px)
VAE_ENCODE_256_GMACS = 136.4
VAE_DECODE_256_GMACS = 311.1
INCEPTION_299_GMACS = 5.71


@dataclass(frozen=True)
class Assumptions:
    peak_tflops: float = 989.0  # H100/H200 SXM dense bf16
    train_mfu: float = 0.40
    sample_mfu: float = 0.30

    def describe(self) -> str:
        return (f"modelled: {self.peak_tflops:g} TFLOP/s bf16 peak, MFU {self.train_mfu:.0%} training and "
                f"{self.sample_mfu:.0%} sampling (bench/estimate.py)")


def seconds(gmacs: float, steps: int, batch: int, samples: int, sample_steps: int, guided: bool, latent: bool,
            encode_on_the_fly: bool, a: Assumptions = Assumptions()) -> dict[str, float]:
    """GPU-seconds of training and of sampling and scoring, summed over the GPUs that share them."""
    peak = a.peak_tflops * 1e12
    per_image = 3 * gmacs + (VAE_ENCODE_256_GMACS if encode_on_the_fly else 0.0)
    train = 2 * per_image * 1e9 * steps * batch / (peak * a.train_mfu)
    sample = 2 * gmacs * 1e9 * samples * sample_steps * (2 if guided else 1)
    sample += 2 * ((VAE_DECODE_256_GMACS if latent else 0.0) + INCEPTION_299_GMACS) * 1e9 * samples
    return {"train": train, "sample": sample / (peak * a.sample_mfu)}


def gpu_hours(spec: Any, gmacs: float | None, shape: tuple[int, ...] = (), a: Assumptions = Assumptions()
              ) -> float | None:
    """A case's modelled GPU-hours (None when it does not train, or its cost is not counted); ``shape``: the
    backbone's input (4 channels: SD-VAE latents, decoded to be scored)."""
    t, s = spec.training, spec.sampler
    if t is None or s is None or not gmacs:
        return None
    latent = len(shape) == 3 and shape[0] == 4
    # a dataset not found here (planned on a login node) is taken to hold latents when the backbone is latent
    data = Path(t.dataset)
    on_disk_latents = (data / MANIFEST).is_file() or not data.exists()
    got = seconds(gmacs, t.train_steps, t.train_batch, t.samples if "quality" in spec.measure else 0,
                  s.sample_steps, s.guidance != 1.0, latent, latent and not on_disk_latents, a)
    return (got["train"] + got["sample"]) / 3600
