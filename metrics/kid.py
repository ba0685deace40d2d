"""KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic polynomial kernel, averaged over subsets.

Seeded: the same features and seed give the same value (torch-fidelity's defaults: 100
subsets of 1000, kernel (x.y / d + 1)^3).
"""

from __future__ import annotations

import numpy as np


def kernel_inception_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                              seed: int = 0) -> tuple[float, float]:
    """(mean, std) of MMD^2 over ``subsets`` random subsets of size min(subset_size, n1, n2)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError("KID needs at least 2 images on each side")
    d = f1.shape[1]
    rng = np.random.RandomState(seed)
    vals = []
    for _ in range(subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx, kyy, kxy = ((x @ x.T) / d + 1) ** 3, ((y @ y.T) / d + 1) ** 3, ((x @ y.T) / d + 1) ** 3
        mmd = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
        vals.append(mmd)
    return float(np.mean(vals)), float(np.std(vals))
