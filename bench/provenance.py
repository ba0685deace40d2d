"""Provenance: where, when and with what a measurement was made.

Collected once per process (it shells out to git and asks NVML), attached to every record.
"""

from __future__ import annotations

import functools
import platform
import socket
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from diffbench.bench import placement
from diffbench.core.records import utc_now
from diffbench.core.version import diffbench_version
from diffbench.metrics.device import device_name

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Provenance:
    """Where a record came from. Every field is documented because reports show them."""

    git_commit: str | None  # HEAD of diffbench's own checkout; None when installed (see diffbench_version)
    git_dirty: bool | None  # True when the checkout had uncommitted changes (the numbers may not be reproducible)
    diffbench_version: str  # the installed distribution's version
    torch_version: str  # torch.__version__
    cuda_version: str | None  # CUDA runtime torch was built with (torch.version.cuda), None for CPU builds
    driver_version: str | None  # NVIDIA driver from NVML, None without a GPU/NVML
    python_version: str  # platform.python_version()
    device_name: str  # GPU name for cuda devices, CPU model for cpu
    host: str  # socket.gethostname()
    precision: dict[str, Any] = field(default_factory=dict)  # dtype, tf32, autocast, compile, attention, channels_last
    seed: int | None = None  # the case's seed
    started_at: str | None = None  # when the case started (ISO-8601 UTC)
    recorded_at: str | None = None  # when this record line was written (ISO-8601 UTC)
    placement: dict[str, Any] = field(default_factory=dict)  # launcher, worker, devices, job/array ids, node, rank


def is_own_checkout(root: Path = REPO_ROOT) -> bool:
    """True when ``root`` is a source checkout of diffbench itself (not an installed copy that happens
    to sit inside someone else's git repository, whose commit would be recorded as ours)."""
    pyproject = root / "pyproject.toml"
    try:
        return (root / ".git").exists() and 'name = "diffbench"' in pyproject.read_text()
    except OSError:
        return False


@functools.lru_cache(maxsize=1)
def git_state(root: Path = REPO_ROOT) -> tuple[str | None, bool | None]:
    """(commit, dirty) of diffbench's own checkout, or (None, None) when installed (the version says it)."""
    if not is_own_checkout(root):
        return None, None
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None, None
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return commit.stdout.strip(), bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        return None, None


@functools.lru_cache(maxsize=1)
def nvidia_driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            v = pynvml.nvmlSystemGetDriverVersion()
            return v.decode() if isinstance(v, bytes) else str(v)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no library, no driver, no GPU: not available, never guessed
        return None


def collect(device: str = "cpu", precision: dict[str, Any] | None = None, seed: int | None = None,
            started_at: str | None = None, where: dict[str, Any] | None = None) -> Provenance:
    """Provenance for a case on ``device``; ``recorded_at`` is filled when a record is written."""
    commit, dirty = git_state()
    return Provenance(
        git_commit=commit,
        git_dirty=dirty,
        diffbench_version=diffbench_version(),
        torch_version=torch.__version__,
        cuda_version=torch.version.cuda,
        driver_version=nvidia_driver_version(),
        python_version=platform.python_version(),
        device_name=device_name(device),
        host=socket.gethostname(),
        precision=dict(precision or {}),
        seed=seed,
        started_at=started_at or utc_now(),
        placement=where if where is not None else placement.current(),
    )

