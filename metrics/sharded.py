"""Detector features of images spread over torchrun's ranks, reduced once.

The mergeable statistics sit in torchmetrics ``Metric`` states, so the all-reduce is torchmetrics'
(``dist_reduce_fx="sum"`` on float64 sums of features and of their outer products, as
:class:`diffbench.metrics.stats.FeatureStats` keeps them); raw features that KID, IS and
precision/recall need are gathered with their global indices (``dist_reduce_fx="cat"``) and put back
in one process's order, so subsets drawn by index are the same whatever the world size.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from diffbench.core.distributed import World
from diffbench.metrics.stats import FeatureStats, add


def compensated_sum(stacked: torch.Tensor) -> torch.Tensor:
    """Reduce every rank's (hi, lo) compensated sums, stacked on dim 0 in rank order, into one (hi, lo)."""
    hi, lo = stacked[0, 0].clone(), stacked[0, 1].clone()
    for part in stacked[1:]:
        hi, lo = add(hi, lo, part[0], part[1])
    return torch.stack([hi, lo])


class FeatureMoments(Metric):
    """Count, sum and sum of outer products of feature vectors in float64, as compensated sums (hi, lo) that
    torchmetrics gathers from every rank and reduces with :func:`compensated_sum` (a plain ``"sum"`` would
    make the last bits depend on the world size; see :func:`diffbench.metrics.stats.add`)."""

    full_state_update = False
    count: torch.Tensor
    total: torch.Tensor
    outer: torch.Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.add_state("count", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros(2, dim, dtype=torch.float64), dist_reduce_fx=compensated_sum)
        self.add_state("outer", torch.zeros(2, dim, dim, dtype=torch.float64), dist_reduce_fx=compensated_sum)

    def update(self, features: np.ndarray) -> None:  # type: ignore[override]
        # (rows, dim) by the known width: reshape(0, -1) fails, and a rank with no batch adds zero rows
        x = np.asarray(features, dtype=np.float64).reshape(len(features), self.dim)
        self.count += len(x)
        # the batch's sums exactly as FeatureStats.update makes them (numpy), then added compensated
        for name, value in (("total", x.sum(axis=0)), ("outer", x.T @ x)):
            state = getattr(self, name)
            hi, lo = add(state[0], state[1], torch.from_numpy(value))
            setattr(self, name, torch.stack([hi, lo]))

    def compute(self) -> FeatureStats:
        stats = FeatureStats(self.dim)
        stats.count = int(self.count.item())
        stats.sum, stats.sum_lo = self.total[0].numpy().copy(), self.total[1].numpy().copy()
        stats.sum_outer, stats.sum_outer_lo = self.outer[0].numpy().copy(), self.outer[1].numpy().copy()
        return stats


class IndexedFeatures(Metric):
    """Feature rows with their global image index, gathered from every rank and sorted by index."""

    full_state_update = False
    index: list[torch.Tensor]
    rows: list[torch.Tensor]

    def __init__(self) -> None:
        super().__init__()
        self.add_state("index", [], dist_reduce_fx="cat")
        self.add_state("rows", [], dist_reduce_fx="cat")

    def update(self, index: np.ndarray, rows: np.ndarray) -> None:  # type: ignore[override]
        self.index.append(torch.as_tensor(np.asarray(index, dtype=np.int64)))
        self.rows.append(torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float64)))

    def compute(self) -> np.ndarray:
        index = self.index if isinstance(self.index, torch.Tensor) else torch.cat(self.index)
        rows = self.rows if isinstance(self.rows, torch.Tensor) else torch.cat(self.rows)
        return rows[torch.argsort(index)].numpy()


def extract_sharded(batches: Any, detector: Any, world: World, keep_features: bool,
                    sample_shape: tuple[int, ...] | None) -> dict[str, Any]:
    """This rank's batches (``batches`` yields (global batch index, uint8 batch) of its own) through the
    detector, reduced over all ranks. Returns ``stats``, ``spatial``, ``pool`` and ``logits`` as one process
    would have them."""
    moments: FeatureMoments | None = None
    spatial: FeatureMoments | None = None
    pool, logits = IndexedFeatures(), IndexedFeatures()
    has_logits = False
    for j, batch in batches:
        f = detector.features(batch)
        if moments is None:
            moments = FeatureMoments(f["pool"].shape[1])
            spatial = FeatureMoments(f["spatial"].shape[1]) if "spatial" in f else None
        idx = j * 2 ** 32 + np.arange(len(batch))  # sorts as one process reads: batch j, then its rows
        moments.update(f["pool"])
        if spatial is not None:
            spatial.update(f["spatial"])
        if keep_features:
            pool.update(idx, f["pool"])
        if "logits" in f:
            has_logits = True
            logits.update(idx, f["logits"])
    if moments is None:  # a rank with no batch (more ranks than batches) still joins every reduction
        shape = sample_shape or (3, 64, 64)
        probe = detector.features(torch.zeros((2, *shape), dtype=torch.uint8))
        moments = FeatureMoments(probe["pool"].shape[1])
        spatial = FeatureMoments(probe["spatial"].shape[1]) if "spatial" in probe else None
        has_logits = "logits" in probe
        none = np.zeros(0, np.int64)
        moments.update(probe["pool"][:0])  # zero rows: the states exist, shaped as on every other rank
        if spatial is not None:
            spatial.update(probe["spatial"][:0])
        if keep_features:
            pool.update(none, probe["pool"][:0])
        if has_logits:
            logits.update(none, probe["logits"][:0])
    out: dict[str, Any] = {"stats": moments.compute(), "spatial": spatial.compute() if spatial is not None else None}
    out["pool"] = _rows(pool.compute(), moments.dim) if keep_features else None
    out["logits"] = _rows(logits.compute(), None) if has_logits else None
    return out


def _rows(a: np.ndarray, dim: int | None) -> np.ndarray:
    return a.reshape(len(a), -1) if a.size else np.zeros((0, dim or 0))
