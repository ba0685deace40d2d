"""Seeded sampling: image k depends only on (seed, k), whatever the batch size or device count.

Each sample owns a generator seeded by its global index, used for its initial noise and any
per-step noise (DDPM / Euler); samples stream out as uint8 batches, straight into metric
statistics, without writing files unless asked.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from bench.diffusion import make_scheduler, split_learned_variance
from bench.errors import ConfigError


def check_sampling(steps: int, guidance: float, batch_size: int = 1) -> None:
    if steps < 1:
        raise ConfigError(f"sampling needs at least 1 step, got {steps}; give --steps 1 or more")
    if guidance < 0:
        raise ConfigError(f"the guidance scale must be >= 0 (1 = no guidance), got {guidance}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be positive, got {batch_size}")


def sample_seed(seed: int, index: int) -> int:
    return seed * 1_000_003 + index


@torch.no_grad()
def sample(model: Any, n: int, shape: tuple[int, int, int], conds: torch.Tensor | None = None,
           scheduler: str = "ddim", steps: int = 50, guidance: float = 1.0, seed: int = 0, batch_size: int = 64,
           prediction: str = "epsilon", device: str = "cpu", start: int = 0) -> Iterator[torch.Tensor]:
    """Yield uint8 (B, C, H, W) batches of samples ``start`` .. ``start + n - 1``."""
    check_sampling(steps, guidance, batch_size)
    model = model.to(device).eval()
    for b0 in range(start, start + n, batch_size):
        idx = list(range(b0, min(b0 + batch_size, start + n)))
        gens = [torch.Generator().manual_seed(sample_seed(seed, k)) for k in idx]
        sched = make_scheduler(scheduler, prediction)
        sched.set_timesteps(steps)
        x = torch.stack([torch.randn(shape, generator=g) for g in gens]) * sched.init_noise_sigma
        c = None if conds is None else conds[[k - start for k in idx]].to(device)
        for t in sched.timesteps:
            xin = sched.scale_model_input(x, t)
            tt = torch.full((len(idx),), float(t), device=device)
            if guidance != 1.0 and c is not None:
                out = model(torch.cat([xin, xin]).to(device), torch.cat([tt, tt]),
                            torch.cat([c, model.null(len(idx), device)]))
                out = split_learned_variance(out, shape[0]).cpu()
                cond, uncond = out.chunk(2)
                eps = uncond + guidance * (cond - uncond)
            else:
                eps = split_learned_variance(model(xin.to(device), tt, c), shape[0]).cpu()
            x = sched.step(eps, t, x, generator=gens).prev_sample
        yield ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
