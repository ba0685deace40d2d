"""Detector weights from local files only: located, hashed, verified against the published sha256.

Search order: the explicit path (``--weights``), the environment variable, then the usual
cache locations of the libraries. A file whose sha256 differs from the published one (a
randomly initialised stand-in used to test plumbing, say) is accepted only when the caller
allows unverified weights, and every number computed with it is marked unverified.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from diffbench.core.errors import MissingWeightsError
from diffbench.core.files import sha256_file


@dataclass(frozen=True)
class WeightsSpec:
    key: str
    filenames: tuple[str, ...]
    sha256: str | None  # None: no published hash known; always "unverified"
    url: str
    env: str

    def cache_dirs(self) -> list[Path]:
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        # only where a user or a library put weights: never a world-writable folder such as /tmp
        return [torch_home / "hub" / "checkpoints", Path.home() / ".cache" / "diffbench"]


@dataclass(frozen=True)
class ResolvedWeights:
    path: Path
    sha256: str
    verified: bool
    spec: WeightsSpec


PT_INCEPTION = WeightsSpec(
    "pt_inception", ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth"),
    "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2",
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
    "DIFFBENCH_INCEPTION_WEIGHTS")
# clean-fid's TorchScript export of the same network. NVIDIA publishes no checksum for it and
# diffbench knows none, so it is always "unverified": numbers computed with it say so.
TS_INCEPTION = WeightsSpec(
    "inception_torchscript", ("inception-2015-12-05.pt",), None,
    "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
    "DIFFBENCH_INCEPTION_TORCHSCRIPT")


def sha256_of(path: Path, mtime_ns: int = 0) -> str:
    return sha256_file(path)  # remembered per size and mtime


def locate(spec: WeightsSpec, explicit: str | Path | None = None, allow_unverified: bool = False) -> ResolvedWeights:
    candidates: list[Path] = []
    if explicit:
        candidates.append(Path(explicit))
    elif os.environ.get(spec.env):
        candidates.append(Path(os.environ[spec.env]))
    else:
        candidates += [d / n for d in spec.cache_dirs() for n in spec.filenames]
    path = next((p for p in candidates if p.is_file()), None)
    tried = [str(p) for p in candidates]
    expected = spec.sha256 or "(none published)"
    if path is None:
        raise MissingWeightsError(
            f"{spec.filenames[0]} not found (looked at {', '.join(tried[:4])}); download it from {spec.url} "
            f"(sha256 {expected}) and pass --weights PATH or set {spec.env}")
    digest = sha256_of(path, path.stat().st_mtime_ns)
    verified = spec.sha256 is not None and digest == spec.sha256
    if not verified and not allow_unverified:
        why = (f"has sha256 {digest}, not the published {spec.sha256}" if spec.sha256 else
               "cannot be verified: no published sha256 is known for it")
        raise MissingWeightsError(
            f"{path} {why} ({spec.filenames[0]} from {spec.url}); put the published file there, or pass "
            "--allow-unverified-weights to use this one with every result marked unverified")
    return ResolvedWeights(path, digest, verified, spec)
