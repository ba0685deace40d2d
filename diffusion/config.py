"""The training loop's settings, apart from the loop: the one place their defaults live (the harness's settings
derive theirs from these, bench/settings.py), importable without loading the loop, its schedulers or diffusers."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from diffbench.core.errors import ConfigError

if TYPE_CHECKING:  # the config is read by the CLI's option parsing, which must not import torch (diffusion/ema.py)
    from diffbench.diffusion.ema import Ema

AUTOENCODER_STEPS = 200  # a latent pipeline's autoencoder: its training steps, before the stages


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 0  # > 0: a fixed number of steps
    train_flops: float = 0.0  # > 0: a compute budget instead (3 x forward FLOPs per image x images)
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0
    ema: str = "power"  # the scored weights' average (diffusion/ema.py): "power" (EDM2) or "constant"
    ema_std: float = 0.10  # power EMA: the profile's width relative to the training length
    ema_decay: float = 0.9999  # constant EMA: the per-step decay (DiT's)
    lr_warmup: int = 0  # steps of linear learning-rate warm-up from 0
    cond_dropout: float = 0.1  # labels / captions replaced by the null condition (guidance)
    prediction: str = "epsilon"
    seed: int = 0
    checkpoint_every: int = 100
    bf16: bool = True  # on GPU, forward passes under bf16 autocast (weights, optimizer and loss stay fp32)

    def __post_init__(self) -> None:
        if not all(math.isfinite(v) for v in (self.train_flops, self.lr, self.cond_dropout)):
            raise ConfigError("train_flops, lr and cond_dropout must be finite numbers")
        self.averaging()  # validates the EMA settings
        if self.lr_warmup < 0:
            raise ConfigError(f"lr_warmup must not be negative, got {self.lr_warmup}")
        if (self.steps > 0) == (self.train_flops > 0):
            raise ConfigError("give exactly one training budget: steps > 0 or train_flops > 0")
        if self.batch_size < 1 or self.lr <= 0 or not 0 <= self.cond_dropout < 1:
            raise ConfigError("batch_size >= 1, lr > 0 and 0 <= cond_dropout < 1 are required")

    def averaging(self) -> Ema:
        from diffbench.diffusion.ema import Ema

        return Ema(self.ema, self.ema_std, self.ema_decay)

    def lr_at(self, step: int) -> float:
        """The learning rate of update ``step`` (0-based): linear warm-up, then constant."""
        return self.lr * min(1.0, (step + 1) / self.lr_warmup) if self.lr_warmup else self.lr

    def total_steps(self, flops_per_image: int | None) -> int:
        if self.steps:
            return self.steps
        if not flops_per_image:
            raise ConfigError("a train_flops budget needs the model's forward FLOPs per image")
        return max(1, math.ceil(self.train_flops / (3 * flops_per_image * self.batch_size)))


@dataclass(frozen=True)
class Loop:
    """How the training loop runs, apart from what it trains (the same steps and loss curve whatever these are):
    DataLoader workers decoding ahead, micro-batches with accumulated gradients, torch.compile."""

    workers: int = 0  # DataLoader worker processes decoding ahead (0: in the loop's process)
    micro_batch: int = 0  # > 0: a rank's share in chunks of this many, gradients accumulated (0: all at once)
    compile: bool = False
    tf32: bool = True  # on GPUs, fp32 matmuls and convolutions in TF32 (what DiT's training script sets)
