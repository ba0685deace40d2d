"""What each training step draws, as a function of (seed, step) only, and how its items reach the loop.

Every rank of a data-parallel world draws the whole global batch of step k from the same generator: the
item indices, the noise, the timesteps, the condition drop-outs (one generator, in that order, as the loop
always drew them) and the horizontal flips (a second generator of the same (seed, step), so that sources
that never flip draw exactly what they drew before flips existed). Each rank then takes its rows
``[rank * B/W, (rank + 1) * B/W)``. So the loss curve does not depend on the world size beyond the order of
the floating-point reduction, and a resumed run needs no data-order state.

Items are decoded by :class:`StepItems`, a map-style dataset whose item k is step ``start + k``'s share of
images: with DataLoader workers, decoding runs ahead of the loop in other processes (pinned on a GPU).
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from diffbench.core.errors import ConfigError
from diffbench.diffusion.preemption import SIGNALS
from diffbench.diffusion.process import TRAIN_STEPS


def batch_rng(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def flip_rng(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) ^ 0x5DEECE66D)


@dataclass(frozen=True)
class Share:
    """Which rows of the global batch a rank owns."""

    rank: int = 0
    world: int = 1

    def rows(self, batch: int) -> slice:
        if batch % self.world:
            raise ConfigError(f"the global batch {batch} does not split over {self.world} ranks; give a train_batch "
                              f"that is a multiple of the world size (devices_per_case x nodes)")
        per = batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)


def indices(n: int, batch: int, seed: int, step: int) -> torch.Tensor:
    return torch.randint(0, n, (batch,), generator=batch_rng(seed, step))


def flips(batch: int, seed: int, step: int) -> torch.Tensor:
    return torch.rand(batch, generator=flip_rng(seed, step)) < 0.5


@dataclass
class Draw:
    """One step's random draws for this rank's rows, and the generator (pipelines draw their conditions on)."""

    noise: torch.Tensor
    t: torch.Tensor
    drop: torch.Tensor
    generator: torch.Generator


def draw(shape: tuple[int, ...], batch: int, seed: int, step: int, share: Share, n: int) -> Draw:
    g = batch_rng(seed, step)
    torch.randint(0, n, (batch,), generator=g)  # the indices (StepItems draws them again where it decodes)
    noise = torch.randn((batch, *shape), generator=g)
    t = torch.randint(0, TRAIN_STEPS, (batch,), generator=g)
    drop = torch.rand(batch, generator=g)
    rows = share.rows(batch)
    return Draw(noise[rows], t[rows], drop[rows], g)


class StepItems(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """Item k: (images, conds) of this rank's rows of step ``start + k``, fetched from the source."""

    def __init__(self, source: Any, batch: int, seed: int, start: int, stop: int, share: Share) -> None:
        self.source, self.batch, self.seed, self.start, self.stop, self.share = source, batch, seed, start, stop, share

    def __len__(self) -> int:
        return max(0, self.stop - self.start)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, Any, list[str]]:
        step = self.start + k
        rows = self.share.rows(self.batch)
        idx = indices(len(self.source), self.batch, self.seed, step)[rows]
        fl = flips(self.batch, self.seed, step)[rows] if getattr(self.source, "flippable", False) else None
        b = self.source.fetch(idx.tolist(), fl.tolist() if fl is not None else None)
        return b.x, b.conds, getattr(b, "skipped", [])  # a worker's skipped files travel with its batch


def loader(source: Any, batch: int, seed: int, start: int, stop: int, share: Share, workers: int,
           pin: bool) -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    items = StepItems(source, batch, seed, start, stop, share)
    return torch.utils.data.DataLoader(items, batch_size=None, shuffle=False, num_workers=workers,
                                       pin_memory=pin, persistent_workers=False,
                                       prefetch_factor=4 if workers else None,
                                       worker_init_fn=_deaf_to_preemption if workers else None)


def _deaf_to_preemption(worker_id: int) -> None:
    """In a DataLoader worker: Slurm signals every process of the step, workers too; a worker killed by SIGUSR2
    or SIGTERM would fail the loop before it could checkpoint. The loop's process alone answers them. (A forked
    worker inherits the loop's handler, which only raises a flag; one started by spawn or forkserver, Python
    3.14's default, would take the default action and die.)"""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


class StepTimer:
    """Measured, not estimated: each step's wall time and the part of it spent waiting for its data (the loop
    blocked on the loader), the first step apart (compilation and warm-up). On a GPU the step ends after a
    synchronisation, so a step's time is its kernels', not its launch's."""

    def __init__(self, device: str) -> None:
        self.cuda = str(device).startswith("cuda")
        self.waits: list[float] = []
        self.steps: list[float] = []
        self.skipped: set[str] = set()  # undecodable files the batches replaced (skip_bad)
        self._start = 0.0

    def wait(self, batches: Any) -> Any:
        it = iter(batches)
        while True:
            self._start = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            self.waits.append(time.perf_counter() - self._start)
            self.skipped.update(item[2])
            yield item[:2]

    def stepped(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.steps.append(time.perf_counter() - self._start)

    def describe(self, batch: int, world: int) -> dict[str, Any]:
        if not self.steps:
            return {"world_size": world, "skipped_files": sorted(self.skipped)}
        steady = self.steps[1:] or self.steps
        waits = self.waits[1:len(self.steps)] or self.waits[:1]
        q = np.quantile(np.asarray(steady), [0.5, 0.9])
        return {"world_size": world, "first_step_s": self.steps[0], "step_s_p50": float(q[0]),
                "step_s_p90": float(q[1]), "images_per_s": batch * len(steady) / sum(steady),
                "data_wait_fraction": sum(waits) / sum(steady), "timed_steps": len(steady),
                "step_ms": [round(x * 1e3, 4) for x in steady], "skipped_files": sorted(self.skipped)}
