"""Diffusion processes and samplers from diffusers, behind one small interface.

Training uses the DDPM forward process (linear betas, 1000 steps, as DDPM/ADM/DiT). Samplers
are diffusers' DDPM, DDIM, DPM-Solver++ and Euler schedulers (epsilon or v prediction), and the
papers' own respaced ADM/DiT samplers (``diffusion/respaced.py``: adm-ddpm, adm-ddim, dit-ddpm) and U-ViT's
DPM-Solver (``diffusion/dpm_solver.py``: uvit-dpm-solver);
models with a learned variance (2x output channels, DiT/ADM) contribute their first half, or their
variance to a DDPM sampler that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from diffbench.core.errors import ConfigError
from diffbench.core.registry import Registry
from diffbench.diffusion.dpm_solver import UViTDPMSolver
from diffbench.diffusion.respaced import SAMPLERS, Respaced

TRAIN_STEPS = 1000
SCHEDULERS: Registry[Callable[..., Any]] = Registry("scheduler", "samplers from diffusers")


def _diffusers(name: str) -> Any:
    """A diffusers scheduler class, imported when a scheduler is made (diffusers takes 1.4 s to load: a case that
    samples nothing does not pay it)."""
    import diffusers

    return getattr(diffusers, name)


COMMON = dict(num_train_timesteps=TRAIN_STEPS, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)
SCHEDULERS.add("ddpm", lambda pred: _diffusers("DDPMScheduler")(**COMMON, prediction_type=pred, clip_sample=False))
SCHEDULERS.add("ddim", lambda pred: _diffusers("DDIMScheduler")(**COMMON, prediction_type=pred, clip_sample=False,
                                                                set_alpha_to_one=False))
SCHEDULERS.add("dpm-solver++", lambda pred: _diffusers("DPMSolverMultistepScheduler")(
    **COMMON, prediction_type=pred, algorithm_type="dpmsolver++"))
SCHEDULERS.add("euler", lambda pred: _diffusers("EulerDiscreteScheduler")(**COMMON, prediction_type=pred))
for _name, (_method, _clip) in SAMPLERS.items():  # the papers' own: ADM's and DiT's respaced process
    SCHEDULERS.add(_name, lambda pred, m=_method, c=_clip: Respaced(m, c, pred))
SCHEDULERS.add("uvit-dpm-solver", UViTDPMSolver)  # U-ViT's: DPM-Solver-fast, order 3, its schedule and time input
PAPERS = (*SAMPLERS, "uvit-dpm-solver")  # the papers' own samplers: a test can inject their draws


PREDICTIONS = ("epsilon", "v_prediction", "sample")  # sample: the clean x0 (unCLIP's prior)


def make_scheduler(name: str, prediction: str = "epsilon", thresholding: bool = False,
                   learned_variance: bool = False) -> Any:
    """A fresh diffusers scheduler; ``thresholding`` is Imagen's dynamic thresholding of the predicted x0;
    ``learned_variance``: DDPM reads the model's second C channels as its interpolated log-variance
    (``learned_range``, Nichol & Dhariwal's parameterisation, which DiT and ADM sample with)."""
    if prediction not in PREDICTIONS:
        raise ConfigError(f"prediction must be one of {', '.join(PREDICTIONS)}, got {prediction!r}")
    sched = SCHEDULERS.get(name)(prediction)
    if thresholding:
        if "thresholding" not in sched.config:
            raise ConfigError(f"dynamic thresholding needs the ddpm, ddim or dpm-solver++ scheduler, not {name}")
        # overrides as keywords: diffusers resets the keys a config lists in _use_default_values, so a value put in
        # the dict itself is silently dropped (Imagen's thresholding was off until this was found)
        sched = type(sched).from_config(sched.config, thresholding=True, dynamic_thresholding_ratio=0.995,
                                        sample_max_value=1.0)
    if learned_variance and isinstance(sched, Respaced):
        if sched.method != "ddpm":
            raise ConfigError(f"a learned variance is sampled with a DDPM sampler; {name} does not read it")
        sched.learned_variance = True
    elif learned_variance:
        if name != "ddpm":
            raise ConfigError(f"a learned variance is sampled with ddpm; {name} does not read it")
        sched = type(sched).from_config(sched.config, variance_type="learned_range")
    return sched


def reads_variance(name: str) -> bool:
    """Whether the sampler ``name`` samples with a network's learned variance (the DDPM ones), as DiT's and ADM's
    releases sample."""
    return name == "ddpm" or SAMPLERS.get(name, ("", False))[0] == "ddpm"


def training_scheduler(prediction: str = "epsilon") -> Any:
    return make_scheduler("ddpm", prediction)


def noise_augment(x: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Imagen's noise-conditioning augmentation: the low-res input taken to timestep ``t`` of the
    training forward process (the super-resolution stage is told ``t``)."""
    return training_scheduler().add_noise(x, noise, t.long())


def split_learned_variance(out: torch.Tensor, channels: int) -> torch.Tensor:
    """The prediction part of a learned-variance output (DiT / ADM emit 2C channels)."""
    return out[:, :channels] if out.shape[1] == 2 * channels else out


def training_target(sched: Any, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    if sched.config.prediction_type == "v_prediction":
        return sched.get_velocity(x0, noise, t)
    if sched.config.prediction_type == "sample":
        return x0
    return noise
