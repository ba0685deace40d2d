"""U-ViT's sampler: DPM-Solver (Lu et al. 2022) with the settings of baofff/U-ViT's ``eval_ldm_discrete.py``, as the
diffbench sampler ``uvit-dpm-solver``.

Those settings: the data-prediction form (``predict_x0=True``), the "fast" method at order 3 (``steps // 3 + 1``
single steps, third order but for a last one of order 1 or 2, 50 network evaluations for U-ViT's 50 steps), on a
time-uniform grid from ``T = 1`` to ``eps = 1/N`` of the continuous time of the discrete VP schedule: log(alpha) is
piecewise linear between the N training steps placed at t = 1/N, 2/N, ..., 1, and extended linearly beyond. The
intermediate times of a third-order step are the grid's next two points (their logSNR ratios are ``r1``, ``r2``),
found again by inverting the schedule. The network sees ``t * N``, not an integer. The betas are the ones U-ViT's
latent models trained with, Stable Diffusion's (linear in sqrt from 0.00085 to 0.012, 1000 steps). Guidance in
U-ViT's form, ``cond + s * (cond - uncond)``, is diffbench's ``guidance = 1 + s`` (U-ViT-H/2's 0.4 is 1.4 here).

Written here, not taken from diffusers: its DPMSolverSinglestepScheduler evaluates the network at integer training
timesteps on its own grid and takes its own step orders; U-ViT's continuous time input and grid are not among its
options. Everything is float32, as the official code computes it. The solver is a state machine behind the
scheduler interface ``diffusion.sampling.reverse_process`` drives: ``timesteps`` are the network's 50 evaluation
times (``t * N``), and each ``step`` turns one evaluation into the point the next one is made at. Deterministic: no
per-step noise. ``tests/test_paper_samplers.py`` checks it against the official ``dpm_solver_pp.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType, SimpleNamespace
from typing import Any

import torch

from diffbench.core.errors import ConfigError

TRAIN_STEPS = 1000


def uvit_betas(steps: int = TRAIN_STEPS) -> torch.Tensor:
    """U-ViT's ``stable_diffusion_beta_schedule``: linear in sqrt from 0.00085 to 0.012, computed in float64 and
    handed to the solver as float32."""
    return (torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, steps, dtype=torch.float64) ** 2).float()


def interpolate(x: torch.Tensor, xp: torch.Tensor, yp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear y(x) through the knots (xp ascending), extended by the outer segments beyond them."""
    j = (torch.searchsorted(xp, x.reshape(-1).contiguous()) - 1).clamp(0, len(xp) - 2)
    x0, x1, y0, y1 = xp[j], xp[j + 1], yp[j], yp[j + 1]
    return (y0 + (x.reshape(-1) - x0) * (y1 - y0) / (x1 - x0)).reshape(x.shape)


class DiscreteVP:
    """The discrete-time VP schedule as a function of continuous time t in (0, 1] (DPM-Solver's ``discrete``)."""

    def __init__(self, betas: torch.Tensor) -> None:
        self.n = len(betas)
        self.t_knots = torch.linspace(1.0 / self.n, 1.0, self.n)
        self.log_alpha_knots = 0.5 * torch.log(1 - betas).cumsum(dim=0)

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return interpolate(t, self.t_knots, self.log_alpha_knots)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(1.0 - torch.exp(2.0 * self.log_alpha(t)))

    def lam(self, t: torch.Tensor) -> torch.Tensor:
        """Half the log-SNR: log(alpha_t) - log(sigma_t)."""
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(1.0 - torch.exp(2.0 * la))

    def time_of(self, lam: torch.Tensor) -> torch.Tensor:
        """The t whose half log-SNR is ``lam``."""
        la = -0.5 * torch.logaddexp(torch.zeros(1), -2.0 * lam)
        return interpolate(la, self.log_alpha_knots.flip(0), self.t_knots.flip(0))


def fast_orders(steps: int) -> list[int]:
    """DPM-Solver-fast's orders at order 3: ``steps`` network evaluations in ``steps // 3 + 1`` single steps."""
    k = steps // 3 + 1
    return {0: [3] * (k - 2) + [2, 1], 1: [3] * (k - 1) + [1], 2: [3] * (k - 1) + [2]}[steps % 3]


@dataclass
class Block:
    """One single step of order 1 to 3 from s to t: its evaluation times and coefficients (0-d float32)."""

    order: int
    times: list[torch.Tensor]  # s, then s1 and s2 as the order needs
    alpha: dict[str, torch.Tensor]
    sigma: dict[str, torch.Tensor]
    h: torch.Tensor
    r: tuple[torch.Tensor, ...]  # r1 (and r2): the intermediate points' shares of the step's logSNR


class UViTDPMSolver:
    """``uvit-dpm-solver`` behind the diffusers scheduler methods ``reverse_process`` calls."""

    init_noise_sigma = 1.0
    config: Mapping[str, Any] = MappingProxyType({})  # no diffusers options (thresholding): make_scheduler refuses them

    def __init__(self, prediction: str = "epsilon", betas: torch.Tensor | None = None) -> None:
        if prediction != "epsilon":
            raise ConfigError(f"uvit-dpm-solver takes epsilon prediction, as U-ViT trains, not {prediction}; use "
                              "ddpm, ddim, dpm-solver++ or euler")
        self.vp = DiscreteVP(uvit_betas() if betas is None else betas)
        self.noise_fn: Callable[[int], torch.Tensor] | None = None  # only its draw 0 (the start) is used: no noise
        self.timesteps = torch.zeros(0)
        self.blocks: list[Block] = []
        self._at: list[tuple[Block, int]] = []  # evaluation -> (its step, which of the step's evaluations)
        self._calls = 0
        self._x0s: list[torch.Tensor] = []  # the data predictions of the step under way
        self._start = torch.zeros(0)  # the point the step under way starts from

    def _block(self, order: int, s: torch.Tensor, t: torch.Tensor, r: tuple[torch.Tensor, ...]) -> Block:
        vp = self.vp
        lam_s = vp.lam(s)
        h = vp.lam(t) - lam_s
        times = [s] + [vp.time_of(lam_s + ri * h) for ri in r]
        named = dict(zip(("s", "s1", "s2"), times, strict=False), t=t)
        return Block(order, times, {k: torch.exp(vp.log_alpha(v)) for k, v in named.items()},
                     {k: vp.sigma(v) for k, v in named.items()}, h, r)

    def set_timesteps(self, steps: int, device: Any = None) -> None:
        n = self.vp.n
        grid = torch.linspace(1.0, 1.0 / n, steps + 1)
        lam = self.vp.lam(grid)
        self.blocks, i = [], 0
        for order in fast_orders(steps):
            h = lam[i + order] - lam[i]
            r = tuple((lam[i + k] - lam[i]) / h for k in range(1, order))  # the grid's inner points: r1, r2
            self.blocks.append(self._block(order, grid[i].reshape(1), grid[i + order].reshape(1), r))
            i += order
        evals = [tt * n for b in self.blocks for tt in b.times]  # what the network is given: t * N
        self.timesteps = torch.cat(evals).to(device)
        self._at = [(b, k) for b in self.blocks for k in range(b.order)]
        self._calls = 0

    def scale_model_input(self, x: torch.Tensor, t: Any) -> torch.Tensor:
        return x

    def step(self, model_output: torch.Tensor, t: Any, x: torch.Tensor, generator: Any = None) -> SimpleNamespace:
        b, k = self._at[self._calls]
        self._calls += 1
        if k == 0:
            self._start, self._x0s = x, []
        name = ("s", "s1", "s2")[k]
        a, s = (b.alpha[name].to(x.device), b.sigma[name].to(x.device))
        self._x0s.append((x - s * model_output[:, :x.shape[1]]) / a)  # the data prediction
        return SimpleNamespace(prev_sample=self._next(b, k, self._start, self._x0s))

    @staticmethod
    def _next(b: Block, k: int, x: torch.Tensor, x0: list[torch.Tensor]) -> torch.Tensor:
        """After evaluation k of step b: the point of the next evaluation (s1, s2), or the step's end, x_t."""
        al = {n: v.to(x.device) for n, v in b.alpha.items()}
        sg = {n: v.to(x.device) for n, v in b.sigma.items()}
        h = b.h.to(x.device)
        if b.order == 1:
            phi = (torch.exp(-h) - 1.0) / -1.0
            return (sg["t"] / sg["s"]) * x + (al["t"] * phi) * x0[0]
        r1 = b.r[0].to(x.device)
        if k == 0:  # to s1
            return (sg["s1"] / sg["s"]) * x - (al["s1"] * torch.expm1(-r1 * h)) * x0[0]
        phi_1 = torch.expm1(-h)
        if b.order == 2:
            return ((sg["t"] / sg["s"]) * x - (al["t"] * phi_1) * x0[0]
                    - (0.5 / r1) * (al["t"] * phi_1) * (x0[1] - x0[0]))
        r2 = b.r[1].to(x.device)
        if k == 1:  # to s2
            phi_22 = torch.expm1(-r2 * h) / (r2 * h) + 1.0
            return ((sg["s2"] / sg["s"]) * x - (al["s2"] * torch.expm1(-r2 * h)) * x0[0]
                    + r2 / r1 * (al["s2"] * phi_22) * (x0[1] - x0[0]))
        phi_2 = phi_1 / h + 1.0
        return (sg["t"] / sg["s"]) * x - (al["t"] * phi_1) * x0[0] + (1.0 / r2) * (al["t"] * phi_2) * (x0[2] - x0[0])
