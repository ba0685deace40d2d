"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits."""

from __future__ import annotations

import numpy as np


def inception_score(logits: np.ndarray, splits: int = 10, shuffle: bool = False, seed: int = 2020
                    ) -> tuple[float, float]:
    """From unnormalised class logits (N, K). Split k holds images k*N//splits .. (k+1)*N//splits - 1, as
    torch-fidelity splits them (numpy's array_split would put the extra images in the first splits instead,
    a different score whenever N is not a multiple of ``splits``). In order by default; ``shuffle`` permutes
    the images first with ``RandomState(seed)``, which with seed 2020 is torch-fidelity's default."""
    x = np.asarray(logits, np.float64)
    n = len(x)
    if n < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} images, got {n}")
    if shuffle:
        x = x[np.random.RandomState(seed).permutation(n)]
    x = x - x.max(axis=1, keepdims=True)
    log_p = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    scores = []
    for k in range(splits):
        part = log_p[k * n // splits:(k + 1) * n // splits]
        p = np.exp(part)
        log_py = np.log(p.mean(axis=0))
        scores.append(np.exp((p * (part - log_py)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
