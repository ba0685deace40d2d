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
from diffbench.core.files import atomic_path


@dataclass
class FeatureStats:
    dim: int
    count: int = 0
    sum: np.ndarray | None = None  # (D,) float64
    sum_outer: np.ndarray | None = None  # (D, D) float64
    _mu: np.ndarray | None = None  # set when loaded from a mu/sigma-only file
    _sigma: np.ndarray | None = None
    meta: dict[str, str] | None = None  # provenance saved with the file (detector, weights hash, ...)
    sum_lo: np.ndarray | None = None  # the rounding errors of ``sum`` (compensated summation, see add)
    sum_outer_lo: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.sum is None and self._mu is None:
            self.sum = np.zeros(self.dim, np.float64)
            self.sum_outer = np.zeros((self.dim, self.dim), np.float64)
        if self.sum is not None and self.sum_lo is None:
            self.sum_lo = np.zeros_like(self.sum, dtype=np.float64)
            self.sum_outer_lo = np.zeros_like(self.sum_outer, dtype=np.float64)

    @property
    def total(self) -> np.ndarray:
        """Sum of the features: the compensated running sum, rounded once."""
        assert self.sum is not None and self.sum_lo is not None
        return np.asarray(self.sum + self.sum_lo)

    @property
    def total_outer(self) -> np.ndarray:
        assert self.sum_outer is not None and self.sum_outer_lo is not None
        return np.asarray(self.sum_outer + self.sum_outer_lo)

    def update(self, features: np.ndarray) -> FeatureStats:
        x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
        if x.shape[1] != self.dim:
            raise ValueError(f"features have {x.shape[1]} dims, these statistics {self.dim}")
        if self.sum is None or self.sum_outer is None:
            raise ValueError("statistics loaded as mu/sigma only cannot be updated")
        self.count += len(x)
        self.sum, self.sum_lo = add(self.sum, self.sum_lo, x.sum(axis=0))
        self.sum_outer, self.sum_outer_lo = add(self.sum_outer, self.sum_outer_lo, x.T @ x)
        return self

    def merge(self, other: FeatureStats) -> FeatureStats:
        if other.dim != self.dim or self.sum is None or other.sum is None:
            raise ValueError("only running-sum statistics of the same dimension merge")
        out = FeatureStats(self.dim)
        out.count = self.count + other.count
        out.sum, out.sum_lo = add(self.sum, self.sum_lo, other.sum, other.sum_lo)
        out.sum_outer, out.sum_outer_lo = add(self.sum_outer, self.sum_outer_lo, other.sum_outer,  # type: ignore[arg-type]
                                              other.sum_outer_lo)
        return out

    @property
    def mu(self) -> np.ndarray:
        if self._mu is not None:
            return self._mu
        self._require(1)
        return np.asarray(self.total / self.count)

    @property
    def sigma(self) -> np.ndarray:
        """Unbiased covariance (ddof=1), as numpy.cov and the reference implementations."""
        if self._sigma is not None:
            return self._sigma
        self._require(2)
        mu = self.mu
        return (self.total_outer - self.count * np.outer(mu, mu)) / (self.count - 1)

    def _require(self, n: int) -> None:
        if self.count < n:
            raise BadInputError(f"statistics need at least {n} image(s), got {self.count}")

    def save(self, path: str | Path, **meta: str) -> None:
        arrays: dict[str, Any] = {"mu": self.mu, "sigma": self.sigma}
        if self.sum is not None:
            arrays.update(count=np.array(self.count), sum=self.total, sum_outer=self.total_outer)
        arrays.update({f"meta_{k}": np.array(v) for k, v in meta.items()})

        with atomic_path(path) as tmp:  # a full disk or a kill leaves no half-written statistics
            np.savez(tmp, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> FeatureStats:
        try:
            with np.load(path, allow_pickle=False) as f:
                keys = set(f.files)
                if {"count", "sum", "sum_outer"} <= keys:
                    total, outer = _real(path, "sum", f["sum"], 1), _real(path, "sum_outer", f["sum_outer"], 2)
                    count = f["count"]
                    if count.shape != () or count.dtype.kind not in "iu" or int(count) < 0:
                        raise BadInputError(f"{path}: count must be a non-negative integer scalar, got {count!r}")
                    _square(path, "sum_outer", outer, total.shape[0])
                    s = cls(int(total.shape[0]), int(count), total, outer)
                elif {"mu", "sigma"} <= keys:
                    mu, sigma = _real(path, "mu", f["mu"], 1), _real(path, "sigma", f["sigma"], 2)
                    _square(path, "sigma", sigma, mu.shape[0])
                    _covariance(path, sigma)
                    s = cls(int(mu.shape[0]), 0, None, None, mu, sigma)
                else:
                    raise BadInputError(f"{path}: a statistics file needs mu and sigma (found {sorted(keys)})")
                s.meta = {k[5:]: str(f[k]) for k in keys if k.startswith("meta_")}
                return s
        except (OSError, ValueError, EOFError, KeyError) as e:
            raise BadInputError(f"{path}: not a readable .npz file ({str(e)[:80]})") from None


def add(hi: Any, lo: Any, value: Any, value_lo: Any = None) -> tuple[Any, Any]:
    """(hi, lo) + value as a compensated sum (Knuth's TwoSum: ``hi + lo`` carries the rounding error of every
    addition). The rounded total ``hi + lo`` is then the same, to the last bit, whatever order the batches
    were added in: by one process, or by torchrun's ranks and then across them. A plain float64 sum differs
    in the last bits between orders, and FID's matrix square root amplifies that to 1e-9 relative when a
    covariance is near-singular (fewer images than feature dimensions). Works on numpy arrays and tensors."""
    s = hi + value
    b = s - hi
    err = (hi - (s - b)) + (value - b)
    lo = lo + err
    return s, (lo + value_lo if value_lo is not None else lo)


def _real(path: str | Path, key: str, a: np.ndarray, ndim: int) -> np.ndarray:
    """A finite, real, non-empty float64 array of ``ndim`` dimensions, or a one-line error naming the key."""
    if a.dtype.kind == "c":
        raise BadInputError(f"{path}: {key} holds complex values; statistics are real (refusing to drop the "
                            "imaginary part)")
    if a.dtype.kind not in "fiu":
        raise BadInputError(f"{path}: {key} must hold numbers, got dtype {a.dtype}")
    if a.ndim != ndim or a.size == 0:
        raise BadInputError(f"{path}: {key} must be a non-empty {ndim}-d array, got shape {a.shape}")
    out = a.astype(np.float64)
    if not np.isfinite(out).all():
        raise BadInputError(f"{path}: {key} has {int((~np.isfinite(out)).sum())} value(s) that are not finite "
                            "(NaN or inf); recompute the statistics")
    return out


def _square(path: str | Path, key: str, a: np.ndarray, dim: int) -> None:
    if a.shape != (dim, dim):
        raise BadInputError(f"{path}: {key} has shape {a.shape}; with {dim}-d features it must be ({dim}, {dim})")


def _covariance(path: str | Path, sigma: np.ndarray) -> None:
    """A covariance is symmetric and positive semi-definite (up to round-off of float32 storage)."""
    scale = float(np.abs(sigma).max()) or 1.0
    if np.abs(sigma - sigma.T).max() > 1e-4 * scale:
        raise BadInputError(f"{path}: sigma is not symmetric, so it is not a covariance matrix")
    if (np.diag(sigma) < -1e-6 * scale).any() or np.linalg.eigvalsh(sigma).min() < -1e-3 * scale:
        raise BadInputError(f"{path}: sigma has negative eigenvalues, so it is not a covariance matrix "
                            "(positive semi-definite)")


def is_stats_file(path: Path) -> bool:
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as f:
            return "mu" in f.files and "sigma" in f.files
    except Exception:
        return False
