"""Feature statistics as float64 running sums: mergeable across batches, processes and machines.

Memory is O(D^2) whatever the number of images. Saved as ``.npz`` with ``mu`` and ``sigma``
(the keys of the ADM reference batches and of clean-fid's statistics files) plus the raw sums
(``count``, ``sum``, ``sum_outer``) that make a saved file mergeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from diffbench.core.errors import BadInputError


@dataclass
class FeatureStats:
    dim: int
    count: int = 0
    sum: np.ndarray | None = None  # (D,) float64
    sum_outer: np.ndarray | None = None  # (D, D) float64
    _mu: np.ndarray | None = None  # set when loaded from a mu/sigma-only file
    _sigma: np.ndarray | None = None
    meta: dict[str, str] | None = None  # provenance saved with the file (detector, weights hash, ...)

    def __post_init__(self) -> None:
        if self.sum is None and self._mu is None:
            self.sum = np.zeros(self.dim, np.float64)
            self.sum_outer = np.zeros((self.dim, self.dim), np.float64)

    def update(self, features: np.ndarray) -> FeatureStats:
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"features have {x.shape[1]} dims, these statistics {self.dim}")
        if self.sum is None or self.sum_outer is None:
            raise ValueError("statistics loaded as mu/sigma only cannot be updated")
        self.count += len(x)
        self.sum += x.sum(axis=0)
        self.sum_outer += x.T @ x
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        if other.dim != self.dim or self.sum is None or other.sum is None:
            raise ValueError("only running-sum statistics of the same dimension merge")
        out = FeatureStats(self.dim)
        out.count = self.count + other.count
        out.sum = self.sum + other.sum
        out.sum_outer = self.sum_outer + other.sum_outer  # type: ignore[operator]
        return out

    @property
    def mu(self) -> np.ndarray:
        if self._mu is not None:
            return self._mu
        self._require(1)
        assert self.sum is not None
        return np.asarray(self.sum / self.count)

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased covariance (ddof=1), as numpy.cov and the reference implementations."""
        if self._sigma is not None:
            return self._sigma
        self._require(2)
        mu = self.mu
        return (self.sum_outer - self.count * np.outer(mu, mu)) / (self.count - 1)  # type: ignore[operator]

    def _require(self, n: int) -> None:
        if self.count < n:
            raise BadInputError(f"statistics need at least {n} image(s), got {self.count}")

    def save(self, path: str | Path, **meta: str) -> None:
        arrays: dict[str, Any] = {"mu": self.mu, "sigma": self.sigma}
        if self.sum is not None:
            arrays.update(count=np.array(self.count), sum=self.sum, sum_outer=self.sum_outer)
        arrays.update({f"meta_{k}": np.array(v) for k, v in meta.items()})
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = set(f.files)
                if {"count", "sum", "sum_outer"} <= keys:
                    s = cls(int(f["sum"].shape[0]), int(f["count"]), f["sum"].astype(np.float64),
                            f["sum_outer"].astype(np.float64))
                elif {"mu", "sigma"} <= keys:
                    mu = f["mu"].astype(np.float64)
                    s = cls(int(mu.shape[0]), 0, None, None, mu, f["sigma"].astype(np.float64))
                else:
                    raise BadInputError(f"{path}: a statistics file needs mu and sigma (found {sorted(keys)})")
                s.meta = {k[5:]: str(f[k]) for k in keys if k.startswith("meta_")}
                return s
        except (OSError, ValueError, EOFError) as e:
            raise BadInputError(f"{path}: not a readable .npz file ({str(e)[:80]})") from None


def is_stats_file(path: Path) -> bool:
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as f:
            return "mu" in f.files and "sigma" in f.files
    except Exception:
        return False
