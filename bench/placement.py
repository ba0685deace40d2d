"""Placement: where a case runs (which devices, which worker, which job and node) — parsed from
``--devices`` for the runner, and recorded in every record's provenance so a report can say where
each case ran.

A launcher describes the placement of a case's process in the environment variable ``DIFFBENCH_PLACEMENT``
(JSON) before it starts the process; :func:`current` reads it back there, and adds what torchrun and
Slurm say about the process themselves (rank, world size, job and array ids, node).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from diffbench.core.errors import ConfigError

ENV = "DIFFBENCH_PLACEMENT"
THREADS_ENV = "DIFFBENCH_THREADS"  # torch.set_num_threads in the case's process (CPU workers share the cores)


@dataclass(frozen=True)
class Slot:
    """One device a worker owns: ``cpu`` or a CUDA index as the machine numbers it (``0``, ``1``, ...)."""

    name: str

    @property
    def is_cpu(self) -> bool:
        return self.name == "cpu"


def parse_devices(text: str) -> list[Slot]:
    """``--devices``: ``cpu,cpu`` (two CPU workers) or ``0,1,2,3`` (one worker per CUDA device, each device
    at most once). One kind per run: the cases' identity includes the device type."""
    names = [p.strip() for p in str(text).split(",")]
    if not names or any(not n for n in names):
        raise ConfigError(f"--devices {text!r}: expected a comma-separated list such as 0,1,2,3 or cpu,cpu")
    bad = [n for n in names if n != "cpu" and not n.isdigit()]
    if bad:
        raise ConfigError(f"--devices {text!r}: {bad[0]!r} is neither cpu nor a CUDA device index (0, 1, ...)")
    kinds = {n == "cpu" for n in names}
    if len(kinds) > 1:
        raise ConfigError(f"--devices {text!r} mixes cpu and CUDA devices; run each kind as its own suite run")
    gpus = [n for n in names if n != "cpu"]
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"--devices {text!r} names a CUDA device twice; each device has one worker")
    if len(names) > 64:
        raise ConfigError(f"--devices {text!r}: {len(names)} workers; at most 64")
    return [Slot(n) for n in names]


def device_of(slots: list[Slot]) -> str:
    """The ``--device`` a run on these slots has: ``cpu``, or ``cuda`` (each case's process sees its own
    devices only, numbered from 0, so every case runs on ``cuda:0``)."""
    if slots[0].is_cpu:
        return "cpu"

    if not torch.cuda.is_available():
        raise ConfigError(f"--devices {','.join(s.name for s in slots)}: no CUDA device is visible here; "
                          "use --devices cpu,cpu or no --devices")
    count = torch.cuda.device_count()
    missing = [s.name for s in slots if int(s.name) >= count]
    if missing:
        raise ConfigError(f"--devices: device {missing[0]} does not exist; {count} CUDA device(s) are visible")
    return "cuda:0"


def child_env(slots: list[Slot], workers: int, worker: int, launcher: str = "devices") -> dict[str, str]:
    """Environment of a case's process on ``slots`` (the devices its worker holds)."""
    env: dict[str, str] = {}
    if slots[0].is_cpu:
        threads = max(1, (os.cpu_count() or 1) // workers)  # workers share the cores instead of oversubscribing
        env[THREADS_ENV] = str(threads)
    else:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(s.name for s in slots)
    env[ENV] = json.dumps({"launcher": launcher, "worker": worker, "workers": workers,
                           "devices": [s.name for s in slots], **({"threads": int(env[THREADS_ENV])}
                                                                  if THREADS_ENV in env else {})})
    return env


def apply_threads() -> None:
    """In a case's process: use the number of threads its worker was given (if any)."""
    raw = os.environ.get(THREADS_ENV)
    if raw and raw.isdigit() and int(raw) > 0:
        torch.set_num_threads(int(raw))


def current(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Where this process runs (or one started with ``environ``): the launcher's description plus torchrun's and
    Slurm's own variables."""
    env = os.environ if environ is None else environ
    try:
        given = json.loads(env.get(ENV) or "{}")
    except ValueError:
        given = {}
    out: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    out.setdefault("launcher", "local")
    out["node"] = socket.gethostname()
    if "WORLD_SIZE" in env and "RANK" in env:  # torchrun (or any torch.distributed launcher)
        out["rank"], out["world_size"] = _int(env["RANK"]), _int(env["WORLD_SIZE"])
    if "SLURM_JOB_ID" in env:
        out["slurm_job_id"] = env["SLURM_JOB_ID"]
        for key, name in (("SLURM_ARRAY_JOB_ID", "array_job_id"), ("SLURM_ARRAY_TASK_ID", "array_task_id"),
                          ("SLURM_JOB_NODELIST", "nodelist"), ("SLURM_PROCID", "slurm_rank")):
            if key in env:
                out[name] = env[key]
    if "CUDA_VISIBLE_DEVICES" in env:
        out["cuda_visible_devices"] = env["CUDA_VISIBLE_DEVICES"]
    return out


def _int(v: str) -> int | str:
    return int(v) if v.isdigit() else v
