"""The papers' own samplers: ADM's and DiT's respaced Gaussian diffusion (openai/guided-diffusion,
facebookresearch/DiT), as diffbench samplers ``adm-ddpm``, ``adm-ddim`` and ``dit-ddpm``.

Written here, not taken from diffusers, because diffusers samples a different process. Its DDPMScheduler with 250
steps takes the timesteps 996, 992, ..., 0 and keeps the 1000-step betas; the papers *respace*. Respacing keeps the
timesteps ``space_timesteps(1000, "250")`` chooses (999, 995, ..., 0) and gives the shorter process each kept step's
own beta, ``1 - alpha_bar[t_i] / alpha_bar[t_(i-1)]``. Its posterior variances, and the learned variance that
interpolates between them and beta (Nichol & Dhariwal's ``learned_range``), are those of the respaced process.
``ddimN`` keeps the DDIM paper's integer stride (0, 40, ..., 960 for 25 steps), and its last step goes to
alpha_bar = 1.

Everything follows the official ``p_sample`` / ``ddim_sample`` (eta 0): coefficient tables in float64, taken per
step as float32, and the network called with the original timestep. ``clip_denoised`` is as each repository's
sampling script sets it: ADM clips the predicted x0 to [-1, 1] (pixels), DiT does not (latents). Per-step noise
comes from the samples' own generators, or from ``noise_fn`` where a test feeds both loops the same draws.
``tests/test_paper_samplers.py`` checks both loops against the official code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType, SimpleNamespace
from typing import Any

import numpy as np
import torch

from diffbench.core.errors import ConfigError

TRAIN_STEPS = 1000


def space_timesteps(num_timesteps: int, spacing: str) -> list[int]:
    """The kept timesteps, ascending: ``"ddimN"`` is the smallest integer stride giving exactly N steps from 0;
    ``"a,b,..."`` splits the process into equal sections (the first ``num_timesteps % sections`` one longer) and
    takes a, b, ... evenly spaced steps from each, rounded, first and last included."""
    if spacing.startswith("ddim"):
        want = int(spacing[4:])
        for stride in range(1, num_timesteps):
            if len(range(0, num_timesteps, stride)) == want:
                return list(range(0, num_timesteps, stride))
        raise ConfigError(f"no integer stride gives exactly {want} DDIM steps of {num_timesteps}; use another count")
    counts = [int(c) for c in spacing.split(",")]
    size, extra = divmod(num_timesteps, len(counts))
    kept: list[int] = []
    start = 0
    for i, count in enumerate(counts):
        length = size + (1 if i < extra else 0)
        if count > length:
            raise ConfigError(f"cannot take {count} steps from a section of {length}; use at most {length}")
        gap = 1.0 if count <= 1 else (length - 1) / (count - 1)
        at = 0.0
        for _ in range(count):  # accumulated, as the official code does (round(k * gap) can differ at .5)
            kept.append(start + round(at))
            at += gap
        start += length
    return sorted(set(kept))


def linear_betas(steps: int = TRAIN_STEPS) -> np.ndarray:
    """DDPM's linear schedule, scaled to ``steps`` (ADM's and DiT's ``linear``), in float64."""
    scale = 1000 / steps
    return np.linspace(scale * 1e-4, scale * 0.02, steps, dtype=np.float64)


class Respaced:
    """A respaced ADM/DiT sampler behind the interface ``diffusion.sampling.reverse_process`` drives (diffusers'
    scheduler methods: ``set_timesteps``, ``timesteps``, ``scale_model_input``, ``step``)."""

    init_noise_sigma = 1.0
    config: Mapping[str, Any] = MappingProxyType({})  # no diffusers options (thresholding): make_scheduler refuses them

    def __init__(self, method: str, clip_denoised: bool, prediction: str = "epsilon") -> None:
        if prediction != "epsilon":
            raise ConfigError(f"the papers' samplers (ADM, DiT) take epsilon prediction, not {prediction}; "
                              "use ddpm, ddim, dpm-solver++ or euler")
        self.method, self.clip_denoised = method, clip_denoised
        self.learned_variance = False
        self.noise_fn: Callable[[int], torch.Tensor] | None = None  # step index -> noise (parity tests)
        self.timesteps = torch.zeros(0, dtype=torch.long)
        self.kept: list[int] = []

    def set_timesteps(self, steps: int, device: Any = None) -> None:
        self.kept = space_timesteps(TRAIN_STEPS, f"ddim{steps}" if self.method == "ddim" else str(steps))
        ac_full = np.cumprod(1.0 - linear_betas())
        last, betas = 1.0, []
        for t in self.kept:  # each kept step's own beta: the respaced process has exactly these noise levels
            betas.append(1 - ac_full[t] / last)
            last = ac_full[t]
        b = np.array(betas, dtype=np.float64)
        ac = np.cumprod(1.0 - b)
        ac_prev = np.append(1.0, ac[:-1])
        post_var = b * (1.0 - ac_prev) / (1.0 - ac)
        # clipped: step 0's posterior variance is 0, so its log takes step 1's (one step: no noise is ever added)
        clipped = np.append(post_var[1], post_var[1:]) if len(b) > 1 else b
        self.tables = {
            "ac": ac, "ac_prev": ac_prev, "recip": np.sqrt(1.0 / ac), "recipm1": np.sqrt(1.0 / ac - 1),
            "log_beta": np.log(b), "post_log_var": np.log(clipped),
            "coef1": b * np.sqrt(ac_prev) / (1.0 - ac), "coef2": (1.0 - ac_prev) * np.sqrt(1.0 - b) / (1.0 - ac),
        }
        self.timesteps = torch.tensor(self.kept[::-1], dtype=torch.long, device=device)
        self._index = {t: i for i, t in enumerate(self.kept)}
        self._calls = 0

    def scale_model_input(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return x

    def _at(self, name: str, i: int, x: torch.Tensor) -> torch.Tensor:
        """The table's entry for step i as float32, as the official code extracts it."""
        return torch.tensor(self.tables[name][i], dtype=torch.float64).float().to(x.device)

    def _noise(self, x: torch.Tensor, generator: Any) -> torch.Tensor:
        self._calls += 1
        if self.noise_fn is not None:
            return self.noise_fn(self._calls).to(x.device, x.dtype)
        if isinstance(generator, list):
            return torch.stack([torch.randn(x.shape[1:], generator=g) for g in generator]).to(x.device, x.dtype)
        return torch.randn(x.shape, generator=generator).to(x.device, x.dtype)

    def step(self, model_output: torch.Tensor, t: Any, x: torch.Tensor, generator: Any = None) -> SimpleNamespace:
        i = self._index[int(t)]
        c = x.shape[1]
        eps = model_output[:, :c]
        x0 = self._at("recip", i, x) * x - self._at("recipm1", i, x) * eps
        if self.clip_denoised:
            x0 = x0.clamp(-1, 1)
        noise = self._noise(x, generator)  # drawn at every step, as the official loops draw it (DDIM's unused)
        if self.method == "ddim":  # eta 0: the deterministic update of DDIM's equation 12
            eps = (self._at("recip", i, x) * x - x0) / self._at("recipm1", i, x)
            return SimpleNamespace(prev_sample=x0 * torch.sqrt(self._at("ac_prev", i, x))
                                   + torch.sqrt(1 - self._at("ac_prev", i, x)) * eps)
        min_log = self._at("post_log_var", i, x)
        if self.learned_variance:
            if model_output.shape[1] != 2 * c:
                raise ConfigError(f"a learned variance needs {2 * c} output channels; the network gives "
                                  f"{model_output.shape[1]}")
            frac = (model_output[:, c:] + 1) / 2  # in [-1, 1] for [posterior variance, beta]
            log_var = frac * self._at("log_beta", i, x) + (1 - frac) * min_log
        else:
            log_var = min_log + torch.zeros_like(x)  # fixed small: the posterior variance
        mean = self._at("coef1", i, x) * x0 + self._at("coef2", i, x) * x
        if i == 0:  # the last step adds no noise (the official code multiplies it by 0: the same for finite values)
            return SimpleNamespace(prev_sample=mean)
        return SimpleNamespace(prev_sample=mean + torch.exp(0.5 * log_var) * noise)


SAMPLERS = {  # name -> (method, clip_denoised): the settings of each repository's sampling script
    "adm-ddpm": ("ddpm", True),  # guided-diffusion scripts/image_sample.py: clip_denoised=True
    "adm-ddim": ("ddim", True),  # the same script with use_ddim and timestep_respacing "ddimN"
    "dit-ddpm": ("ddpm", False),  # DiT sample.py: p_sample_loop(..., clip_denoised=False)
}
