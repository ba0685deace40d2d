"""Inception Score (Salimans et al. 2016): exp(E_x KL(p(y|x) || p(y))), mean and std over splits."""

from __future__ import annotations

import numpy as np


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """From unnormalised class logits (N, K); images are split in order, as torch-fidelity does."""
    x = np.asarray(logits, np.float64)
    if len(x) < splits:
        raise ValueError(f"Inception Score with {splits} splits needs at least {splits} images, got {len(x)}")
    x = x - x.max(axis=1, keepdims=True)
    log_p = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    scores = []
    for part in np.array_split(log_p, splits):
        p = np.exp(part)
        log_py = np.log(p.mean(axis=0))
        scores.append(np.exp((p * (part - log_py)).sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
