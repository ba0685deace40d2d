"""The averaged weights a training run is scored with: EDM2's power-function EMA, or a constant decay.

A constant decay started from the random initialisation leaves ``decay**steps`` of the scored
weights on that initialisation: 0.47 after 150 steps at 0.995, which is what short CPU budgets
are. EDM2's power-function EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics
of Diffusion Models", eq. 127: ``beta_t = (1 - 1/t)^(gamma + 1)``) averages the iterates with a
profile ``~ t^gamma`` whose width is a fixed fraction (``std``, the relative standard deviation) of
the training length, whatever that length is. Its first update copies the weights (``beta_1 = 0``),
so nothing of the initialisation is left, and models trained for different numbers of steps are
averaged alike, which is what a scaling study compares. The constant decay stays available for
paper-faithful long runs (DiT: 0.9999).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from diffbench.core.errors import ConfigError

KINDS = ("power", "constant")


@functools.lru_cache(maxsize=16)
def std_to_exponent(std: float) -> float:
    """The power-function exponent gamma whose profile has relative standard deviation ``std``: the largest real
    root of gamma^3 + 7 gamma^2 + (16 - t) gamma + (12 - t), t = std^-2 (EDM2, eq. 126)."""
    t = std ** -2
    return float(np.roots([1.0, 7.0, 16.0 - t, 12.0 - t]).real.max())


def exponent_to_std(gamma: float) -> float:
    """Inverse of :func:`std_to_exponent` (EDM2, eq. 123)."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


@dataclass(frozen=True)
class Ema:
    kind: str = "power"
    std: float = 0.10  # power: the averaging profile's width relative to the training length
    decay: float = 0.9999  # constant: the per-step decay

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(f"ema must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not (math.isfinite(self.std) and 0 < self.std < 0.28):  # 0.28: gamma would be negative
            raise ConfigError(f"ema_std must be between 0 and 0.28, got {self.std}")
        if not (math.isfinite(self.decay) and 0 <= self.decay < 1):
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.decay}")

    def beta(self, step: int) -> float:
        """The weight kept by the average at update ``step`` (1 for the first update)."""
        if self.kind == "constant":
            return self.decay
        return (1 - 1 / step) ** (std_to_exponent(self.std) + 1)

    def init_weight(self, steps: int) -> float:
        """The share of the averaged weights that is still the initialisation after ``steps`` updates."""
        return 0.0 if self.kind == "power" and steps >= 1 else (self.decay ** steps if steps >= 0 else 1.0)

    @torch.no_grad()
    def update(self, averaged: Iterable[torch.Tensor], current: Iterable[torch.Tensor], step: int) -> None:
        beta = self.beta(step)
        for a, c in zip(averaged, current, strict=True):
            a.lerp_(c, 1 - beta)

    def describe(self, steps: int) -> dict[str, object]:
        """What was scored, for the records: the EMA's kind and parameters, and the weight left on the init."""
        params = {"std": self.std, "exponent": round(std_to_exponent(self.std), 4)} if self.kind == "power" \
            else {"decay": self.decay}
        return {"weights": "ema", "ema": self.kind, **params, "ema_init_weight": self.init_weight(steps)}
