"""Seeded sampling: image k depends only on (seed, k), whatever the batch size or device count.

Each sample owns a generator seeded by its global index, used for its initial noise and any
per-step noise (DDPM / Euler); samples stream out as uint8 batches, straight into metric
statistics, without writing files unless asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import torch

from diffbench.core.errors import ConfigError
from diffbench.diffusion.process import PAPERS, make_scheduler, split_learned_variance


def check_sampling(steps: int, guidance: float, batch_size: int = 1) -> None:
    if steps < 1:
        raise ConfigError(f"sampling needs at least 1 step, got {steps}; give --steps 1 or more")
    if not math.isfinite(guidance) or guidance < 0:
        raise ConfigError(f"the guidance scale must be >= 0 (1 = no guidance), got {guidance}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")


def sample_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


def generators(seed: int, idx: list[int], salt: int | None = None) -> list[torch.Generator]:
    """One CPU generator per sample (by its global index; ``salt`` tells a pipeline's parts apart): the same
    numbers on every device and at every batch size."""
    if salt is None:
        return [torch.Generator().manual_seed(sample_seed(seed, k)) for k in idx]
    return [torch.Generator().manual_seed(sample_seed(seed, k) * 7919 + salt) for k in idx]


Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reverse_process(step: Step, shape: tuple[int, ...], gens: list[torch.Generator], scheduler: str, steps: int,
                    prediction: str = "epsilon", thresholding: bool = False, device: str = "cpu",
                    learned_variance: bool = False, noise: Callable[[int], torch.Tensor] | None = None
                    ) -> torch.Tensor:
    """The one sampling loop: per-sample noise, then ``steps`` scheduler steps of ``step(x_in, t) -> model output``
    (guidance inside ``step``). The latent and the scheduler live on ``device`` throughout (diffusers' schedulers
    take device tensors; per-step noise still comes from the CPU generators, so results do not depend on it)."""
    sched = make_scheduler(scheduler, prediction, thresholding, learned_variance)
    sched.set_timesteps(steps, device=device)
    if noise is not None:  # draw k of the loop (0: the initial noise), fed by a test to this loop and another
        if scheduler not in PAPERS:
            raise ConfigError(f"injected noise needs one of the papers' samplers ({', '.join(PAPERS)}), not "
                              f"{scheduler}")
        sched.noise_fn = noise
        x = noise(0).to(device)
    else:
        x = torch.stack([torch.randn(shape, generator=g) for g in gens]).to(device) * sched.init_noise_sigma
    for t in sched.timesteps:
        xin = sched.scale_model_input(x, t)
        tt = t.to(device=device, dtype=torch.float32).expand(len(gens))
        x = sched.step(step(xin, tt).float(), t, x, generator=gens).prev_sample
    return x


def guided(fn: Callable[[torch.Tensor, torch.Tensor, dict[str, Any]], torch.Tensor], inputs: dict[str, Any],
           null_inputs: dict[str, Any] | None, guidance: float, channels: int | None,
           guide_channels: int | None = None) -> Step:
    """``step(x, t)`` with classifier-free guidance over ``fn(x, t, conditions)``: the conditional and null
    passes run as one doubled batch. ``channels``: keep that many of a learned-variance output (DiT, ADM); None
    keeps all (a scheduler that reads the variance). ``guide_channels``: guide only the first that many channels
    and take the rest from the conditional pass, as DiT's released sampler does (``forward_with_cfg`` guides 3 of
    its 4 latent channels); None guides the prediction's channels."""
    def call(x: torch.Tensor, t: torch.Tensor, c: dict[str, Any]) -> torch.Tensor:
        out = fn(x, t, c)
        return out if channels is None else split_learned_variance(out, channels)

    if null_inputs is None or guidance == 1.0:
        return lambda x, t: call(x, t, inputs)
    both = {k: torch.cat([inputs[k], null_inputs[k]]) if torch.is_tensor(inputs[k]) else inputs[k] for k in inputs}

    def step(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond, uncond = call(torch.cat([x, x]), torch.cat([t, t]), both).chunk(2)
        k = guide_channels if guide_channels is not None else x.shape[1]
        if k >= cond.shape[1]:
            return uncond + guidance * (cond - uncond)
        out = cond.clone()  # the unguided channels (and a learned variance) from the conditional pass
        out[:, :k] = uncond[:, :k] + guidance * (cond[:, :k] - uncond[:, :k])
        return out
    return step


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images -> uint8 on the CPU (the one copy to the host per batch)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


@torch.no_grad()
def sample(model: Any, n: int, shape: tuple[int, int, int], conds: torch.Tensor | None = None,
           scheduler: str = "ddim", steps: int = 50, guidance: float = 1.0, seed: int = 0, batch_size: int = 64,
           prediction: str = "epsilon", device: str = "cpu", start: int = 0, raw: bool = False,
           learned_variance: bool = False, guide_channels: int | None = None,
           noise: Callable[[int], torch.Tensor] | None = None) -> Iterator[torch.Tensor]:
    """Yield uint8 (B, C, H, W) batches of samples ``start`` .. ``start + n - 1`` of a ``Denoiser`` (``raw``: the
    float output of the reverse process, e.g. latents for an autoencoder to decode). ``learned_variance``: a model
    emitting 2C channels samples with its own variance (DDPM's ``learned_range``, as DiT and ADM sample);
    ``guide_channels``: see :func:`guided`; ``noise``: the loop's draws injected (one batch; the papers' samplers
    only), for a test that feeds another implementation the same."""
    check_sampling(steps, guidance, batch_size)
    model = model.to(device).eval()

    def fn(x: torch.Tensor, t: torch.Tensor, c: dict[str, Any]) -> torch.Tensor:
        return model(x, t, c.get("c"))

    for b0 in range(start, start + n, batch_size):
        idx = list(range(b0, min(b0 + batch_size, start + n)))
        c = None if conds is None else conds[[k - start for k in idx]].to(device)
        null = None if c is None else {"c": model.null(len(idx), device)}
        step = guided(fn, {"c": c}, null, guidance, None if learned_variance else shape[0], guide_channels)
        x = reverse_process(step, shape, generators(seed, idx), scheduler, steps, prediction, device=device,
                            learned_variance=learned_variance, noise=noise)
        yield x if raw else to_uint8(x)
