"""torchrun support: who this process is among the ranks, and which work is its own.

Work is split by *global batch index*: the N items are cut into batches of the batch size as one
process would cut them, and batch j goes to rank j mod world_size. A sample therefore sits in the
same batch, with the same per-sample seed, whatever the world size — its pixels do not depend on
how many processes made it. Rank 0 writes; the other ranks only compute.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from diffbench.core.errors import ConfigError

# torch is imported where a process group is used, never at import: the CLI asks from_env() for every command,
# and --help, --version and the listings must not pay torch's import (1.3 s)


def _dist() -> Any:
    """torch.distributed when a process group may exist (torch already imported), else None."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() else None


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    def mine(self, batch_index: int) -> bool:
        return batch_index % self.size == self.rank


def from_env() -> World:
    """The world torchrun describes (RANK, WORLD_SIZE, LOCAL_RANK), or a world of one."""
    env = os.environ
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ConfigError("RANK/WORLD_SIZE/LOCAL_RANK are not integers; start diffbench with torchrun") from None
    if size < 1 or not 0 <= rank < size:
        raise ConfigError(f"RANK {rank} outside WORLD_SIZE {size}; start diffbench with torchrun")
    return World(rank, size, local)


def current() -> World:
    """This process's world once :func:`init` ran (a world of one otherwise)."""
    dist = _dist()
    if dist is not None and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), from_env().local_rank)
    return World()


def init(device: str) -> tuple[World, str]:
    """Join the process group torchrun set up (gloo on CPU, NCCL on CUDA); returns the world and this rank's
    device (``cuda:LOCAL_RANK`` on GPUs). A world of one needs nothing. (Which work may run under torchrun is
    its caller's to say: the CLI marks its commands.)"""
    world = from_env()
    if not world.is_distributed:
        return world, device

    import torch
    import torch.distributed as dist

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: no CUDA device is visible here")
        torch.cuda.set_device(world.local_rank)
        device, backend = f"cuda:{world.local_rank}", "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return world, device


def shard(n: int, batch_size: int, world: World) -> Iterator[tuple[int, int, int]]:
    """(global batch index, first item, end) of this rank's batches of ``n`` items."""
    for j, b0 in enumerate(range(0, n, batch_size)):
        if world.mine(j):
            yield j, b0, min(b0 + batch_size, n)


def gather_to_writer(obj: Any, world: World) -> list[Any] | None:
    """Every rank's ``obj``, in rank order, on rank 0 (None elsewhere)."""
    if not world.is_distributed:
        return [obj]

    import torch.distributed as dist

    got: list[Any] | None = [None] * world.size if world.is_writer else None
    dist.gather_object(obj, got, dst=0)
    return got


def all_gather(obj: Any, world: World) -> list[Any]:
    if not world.is_distributed:
        return [obj]

    import torch.distributed as dist

    got: list[Any] = [None] * world.size
    dist.all_gather_object(got, obj)
    return got


def quiet_unless_writer(world: World) -> None:
    """Ranks other than 0 print nothing on stdout (errors still reach stderr)."""
    if world.is_distributed and not world.is_writer:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def finish(barrier: bool = True) -> None:
    """Leave the process group (after the other ranks, unless this rank failed)."""
    dist = _dist()
    if dist is not None and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()


def mean(value: float, world: World) -> float:
    """The mean of a number over the ranks (the value itself in a world of one)."""
    if not world.is_distributed:
        return value

    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return float(t) / world.size


def any_rank(flag: bool, world: World) -> bool:
    """True on every rank when any rank's ``flag`` is True."""
    if not world.is_distributed:
        return flag

    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t)


def barrier() -> None:
    dist = _dist()
    if dist is not None and dist.is_initialized():
        dist.barrier()


def _collective_device() -> str:
    """Where a collective's tensor must live: this rank's GPU under NCCL, else the CPU (gloo)."""
    import torch
    import torch.distributed as dist

    return f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"
