"""Improved precision and recall (Kynkaanniemi et al. 2019): k-NN manifolds in feature space, k = 3."""

from __future__ import annotations

import numpy as np
import torch


def _radii(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # k-th neighbour, the point itself excluded


def _coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> float:
    inside = []
    for i in range(0, len(points), chunk):
        d = torch.cdist(points[i:i + chunk], centres)
        inside.append((d <= radii[None]).any(dim=1))
    return float(torch.cat(inside).double().mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Precision: share of fake samples inside the real manifold; recall: real inside the fake one."""
    r = torch.as_tensor(np.asarray(real, np.float64))
    f = torch.as_tensor(np.asarray(fake, np.float64))
    if min(len(r), len(f)) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} images on each side")
    return _coverage(f, r, _radii(r, k)), _coverage(r, f, _radii(f, k))
