"""Intervals for quality numbers, over the generated samples: a bootstrap for FID, half-samples for KID.

A case scores N generated images against a fixed reference set (the whole embedded dataset), so
the uncertainty of its FID or KID is that of the N samples: resampling them with replacement and
recomputing the metric gives its spread (the percentile 95% interval and the standard error). The
reference side is not resampled: it is the same for every case, and a comparison between cases is
what the interval serves. At the embedded detectors' 64 dimensions 200 resamples take well under a
second; the estimator's small-sample bias (FID of real against real is far from 0 at N = 256) is
not removed by a bootstrap, which is why KID (unbiased) is reported beside it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from diffbench.metrics.frechet import frechet_distance
from diffbench.metrics.kid import kernel_inception_distance

BOOTSTRAP = 200


@dataclass(frozen=True)
class Interval:
    value: float
    lo: float
    hi: float
    se: float
    resamples: int
    method: str = "bootstrap"  # or "half-samples"

    def extra(self) -> dict[str, object]:
        return {"ci95": [self.lo, self.hi], "se": self.se, "interval": f"{self.method} x {self.resamples} of the "
                "generated samples (the reference set is fixed)"}


def bootstrap(statistic: Callable[[np.ndarray], float], generated: np.ndarray, resamples: int = BOOTSTRAP,
              seed: int = 0, floor: float | None = None) -> Interval:
    """``statistic`` of the generated features, with the normal 95% interval of its bootstrap standard error.

    Not the percentile interval: a resample repeats images, which moves a biased statistic (FID's small-sample
    bias grows as the distinct images fall to ~63%) so that its percentiles need not even hold the value. The
    spread of the resamples is still the statistic's standard error; the interval is centred on the value
    (and clipped at ``floor``, 0 for a distance)."""
    rng = np.random.default_rng(seed)
    n = len(generated)
    values = np.array([statistic(generated[rng.integers(0, n, n)]) for _ in range(resamples)])
    value, se = statistic(generated), float(values.std(ddof=1))
    lo = value - 1.96 * se
    return Interval(value, lo if floor is None else max(lo, floor), value + 1.96 * se, se, resamples)


def fid_interval(generated: np.ndarray, ref_mu: np.ndarray, ref_sigma: np.ndarray, resamples: int = BOOTSTRAP,
                 seed: int = 0) -> Interval:
    def fid(x: np.ndarray) -> float:
        return frechet_distance(x.mean(0), np.cov(x, rowvar=False), ref_mu, ref_sigma)

    return bootstrap(fid, np.asarray(generated, np.float64), resamples, seed, floor=0.0)


def kid_interval(generated: np.ndarray, reference: np.ndarray, halves: int = 50, seed: int = 0) -> Interval:
    """KID (100 subsets) with a normal 95% interval from half-samples of the generated images.

    A bootstrap with replacement would put duplicate images into KID's within-set kernel sum and bias every
    resample upwards; half-samples drawn without replacement have no duplicates, and the variance of a
    half-sample's estimate around the full one is sigma^2 (2/n - 1/n) = sigma^2/n: the full estimate's own
    (the half-sampling method of variance estimation)."""
    gen, ref = np.asarray(generated, np.float64), np.asarray(reference, np.float64)
    n = len(gen)
    value = kernel_inception_distance(gen, ref, subsets=100, subset_size=max(n, len(ref)), seed=seed)[0]
    rng = np.random.default_rng(seed)
    half = [kernel_inception_distance(gen[rng.permutation(n)[: n // 2]], ref, subsets=10,
                                      subset_size=max(n, len(ref)), seed=seed)[0] for _ in range(halves)]
    se = float(np.std(half, ddof=1))
    return Interval(value, value - 1.96 * se, value + 1.96 * se, se, halves, "half-samples")
