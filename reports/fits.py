"""Scaling-law fits: power laws in log-log space, with a floor, bootstrap intervals, AIC, LOO, correlations.

On the DiT paper's Table 4 (docs/reference.md) these give Pearson r(log10 Gflops, FID) = -0.930
and FID ~= 138 * Gflops^-0.365, as the paper's plot shows (tests/test_reports.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import optimize, stats


@dataclass(frozen=True)
class PowerLaw:
    """y = a * x^b (+ c for the floored law)."""

    a: float
    b: float
    c: float = 0.0
    floor: bool = False
    b_ci: tuple[float, float] = (float("nan"), float("nan"))  # 95% bootstrap interval of the exponent
    aic: float = float("nan")
    loo_rmse: float = float("nan")  # leave-one-out RMSE of log y
    n: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.a * np.asarray(x, np.float64) ** self.b + self.c

    def formula(self) -> str:
        s = f"{self.a:.4g} * x^{self.b:.3f}"
        return s + (f" + {self.c:.4g}" if self.floor else "")


def _fit_loglog(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    b, log_a = np.polyfit(np.log(x), np.log(y), 1)
    return float(np.exp(log_a)), float(b)


def _fit_floor(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    a0, b0 = _fit_loglog(x, y)

    def resid(p: np.ndarray) -> np.ndarray:
        a, b, c = p
        return np.log(np.clip(a * x**b + c, 1e-12, None)) - np.log(y)

    def jac(p: np.ndarray) -> np.ndarray:
        # analytic: scipy's finite differences cost three residual calls a step (the floored bootstrap's 2000
        # fits are a third faster with this, equal to 1e-6)
        a, b, c = p
        xb = x**b
        f = a * xb + c
        live = (f > 1e-12) / np.maximum(f, 1e-12)  # the clip is flat below 1e-12
        return np.stack([xb * live, a * xb * np.log(x) * live, live], axis=1)

    lo = [0.0, -10.0, 0.0]
    hi = [np.inf, 10.0, max(float(y.min()), 1e-9) * 0.999]
    r = optimize.least_squares(resid, x0=[a0, b0, min(float(y.min()) * 0.1, hi[2] / 2)], jac=jac,
                               bounds=(lo, hi))
    return float(r.x[0]), float(r.x[1]), float(r.x[2])


def _aic(rss: float, n: int, k: int) -> float:
    return n * np.log(max(rss, 1e-300) / n) + 2 * k


def fit_power_law(x: Any, y: Any, floor: bool = False, n_boot: int = 2000, seed: int = 0) -> PowerLaw:
    """Least squares on log y; bootstrap (resampling points) for the exponent's interval."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    x, y = x[ok], y[ok]
    k = 3 if floor else 2
    if len(x) < k + 1:
        raise ValueError(f"a {'floored ' if floor else ''}power law needs at least {k + 1} points, got {len(x)}")

    def fit(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float]:
        return _fit_floor(xs, ys) if floor else (*_fit_loglog(xs, ys), 0.0)

    a, b, c = fit(x, y)
    pred = a * x**b + c
    rss = float(((np.log(pred) - np.log(y)) ** 2).sum())
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) < k:
            continue
        boots.append(fit(x[idx], y[idx])[1])
    loo = []
    for i in range(len(x)):
        m = np.arange(len(x)) != i
        ai, bi, ci = fit(x[m], y[m])
        loo.append(np.log(ai * x[i] ** bi + ci) - np.log(y[i]))
    b_ci = (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))) if boots else (np.nan, np.nan)
    return PowerLaw(a, b, c, floor, b_ci, _aic(rss, len(x), k), float(np.sqrt(np.mean(np.square(loo)))), len(x))


def best_power_law(x: Any, y: Any, seed: int = 0) -> tuple[PowerLaw, list[PowerLaw]]:
    """Both laws (the floored one when there are enough points); the lower AIC wins."""
    fits = [fit_power_law(x, y, seed=seed)]
    if np.isfinite(np.asarray(x, float)).sum() >= 5:
        fits.append(fit_power_law(x, y, floor=True, seed=seed))
    return min(fits, key=lambda f: f.aic), fits


@dataclass(frozen=True)
class Correlation:
    pearson: float
    pearson_ci: tuple[float, float]  # Fisher z interval
    spearman: float
    spearman_ci: tuple[float, float]  # bootstrap interval
    n: int


def correlation(x: Any, y: Any, n_boot: int = 2000, seed: int = 0) -> Correlation:
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    n = len(x)
    if n < 4:
        raise ValueError(f"a correlation with an interval needs at least 4 points, got {n}")
    r = float(stats.pearsonr(x, y).statistic)
    z, se = np.arctanh(np.clip(r, -0.999999, 0.999999)), 1 / np.sqrt(n - 3)
    rho = float(stats.spearmanr(x, y).statistic)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, n)
        if np.ptp(x[idx]) > 0 and np.ptp(y[idx]) > 0:
            boots.append(stats.spearmanr(x[idx], y[idx]).statistic)
    return Correlation(r, (float(np.tanh(z - 1.96 * se)), float(np.tanh(z + 1.96 * se))), rho,
                       (float(np.nanpercentile(boots, 2.5)), float(np.nanpercentile(boots, 97.5))), n)


@dataclass(frozen=True)
class FamilyFit:
    """y = a * x^b within one family, fitted on log y weighted by each point's own uncertainty."""

    family: str
    b: float
    b_ci: tuple[float, float]  # 95%, parametric bootstrap over the points' intervals
    n: int
    monotone: bool  # y moves the better way at every step up in x
    supports: bool  # the interval excludes 0 on the better side
    widened: float = 1.0  # the points' uncertainty scaled by the scatter they do not explain (Birge ratio, >= 1)

    def sentence(self, metric: str, better: str) -> str:
        trend = "improves with compute" if self.supports else "does not improve with compute at 95% confidence"
        steps = "it improves at every step up in size" if self.monotone else "not at every step up in size"
        over = "the points' own uncertainty" if self.widened <= 1 else \
            f"the points' uncertainty widened {self.widened:.1f}x by the scatter about the line it does not explain"
        return (f"{self.family}: {metric} {trend} (exponent {self.b:+.3f}, 95% interval "
                f"[{self.b_ci[0]:+.3f}, {self.b_ci[1]:+.3f}] over {over}; {self.n} sizes); {steps}.")


def _log_se(y: np.ndarray, se: np.ndarray | None) -> np.ndarray:
    """The standard error of log y (delta method), with a floor so that no point weighs infinitely."""
    if se is None:
        return np.full(len(y), 0.05)
    s = np.where(np.isfinite(se) & (se > 0), se, 0.0) / y
    return np.maximum(s, 1e-3)


def _wls(lx: np.ndarray, ly: np.ndarray, w: np.ndarray, groups: np.ndarray | None = None
         ) -> tuple[float, np.ndarray]:
    """Weighted least squares of ly on lx, with one intercept per group (fixed effects) when given: the slope and
    the residuals."""
    if groups is None:
        groups = np.zeros(len(lx), int)
    cols = [lx] + [(groups == g).astype(float) for g in np.unique(groups)]
    design = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(design * np.sqrt(w)[:, None], ly * np.sqrt(w), rcond=None)
    return float(coef[0]), ly - design @ coef


def _wls_slope(lx: np.ndarray, ly: np.ndarray, w: np.ndarray, groups: np.ndarray | None = None) -> float:
    return _wls(lx, ly, w, groups)[0]


def _birge(lx: np.ndarray, ly: np.ndarray, s: np.ndarray, groups: np.ndarray | None = None) -> float:
    """sqrt(chi^2 / dof) of the weighted fit, at least 1: how far the points scatter about the line beyond their
    own uncertainty. Scaling the uncertainty by it (the Birge ratio) keeps a curve that is not a power law, e.g.
    a middle size better than both ends, from passing for a precise exponent. 1 where no degree of freedom is
    left (two points)."""
    n_params = 1 + (1 if groups is None else len(np.unique(groups)))
    dof = len(lx) - n_params
    if dof < 1:
        return 1.0
    _, r = _wls(lx, ly, 1 / s**2, groups)
    return max(1.0, float(np.sqrt(np.sum((r / s) ** 2) / dof)))


def fit_family(family: str, x: Any, y: Any, se: Any = None, better: str = "lower", n_boot: int = 2000,
               seed: int = 0) -> FamilyFit:
    """The exponent of one family's sizes, with an interval from redrawing each point within its own
    uncertainty (normal, ``se``): with three sizes a residual-based interval has one degree of freedom and
    says nothing; this one says whether the measured differences are beyond the measurements' noise.
    Scatter about the line beyond that noise (a curve that is not a power law) widens it by the Birge ratio,
    sqrt(chi^2 / dof): on the quick suite, U-ViT's KID of 175, 139 and 162 at 0.7/1.4/2.8M gave an interval that
    excluded 0 from the points' noise alone."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    se_arr = None if se is None else np.asarray(se, np.float64)
    order = np.argsort(x)
    x, y = x[order], y[order]
    se_arr = None if se_arr is None else se_arr[order]
    if len(x) < 2 or not (np.all(x > 0) and np.all(y > 0)):
        raise ValueError(f"{family}: a fit needs at least 2 sizes with positive values")
    lx, ly, s = np.log(x), np.log(y), _log_se(y, se_arr)
    w = 1 / s**2
    b = _wls_slope(lx, ly, w)
    k = _birge(lx, ly, s)
    rng = np.random.default_rng(seed)
    boots = [_wls_slope(lx, ly + rng.normal(0, k * s), w) for _ in range(n_boot)]
    lo, hi = (float(v) for v in np.percentile(boots, [2.5, 97.5]))
    steps = np.diff(y)
    monotone = bool(np.all(steps < 0) if better == "lower" else np.all(steps > 0))
    supports = hi < 0 if better == "lower" else lo > 0
    return FamilyFit(family, b, (lo, hi), len(x), monotone, bool(supports), k)


def fixed_effects_slope(x: Any, y: Any, groups: Any, se: Any = None, n_boot: int = 2000,
                        seed: int = 0) -> tuple[float, tuple[float, float]]:
    """One exponent shared by every family, each family with its own offset (a fixed effect), weighted by the
    points' uncertainty; the interval redraws each point within it. Pooling across families without the
    offsets mixes their different levels into the slope."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    g = np.unique(np.asarray(groups), return_inverse=True)[1]
    s = _log_se(y, None if se is None else np.asarray(se, np.float64))
    lx, ly, w = np.log(x), np.log(y), 1 / s**2
    b = _wls_slope(lx, ly, w, g)
    k = _birge(lx, ly, s, g)  # widened as the per-family intervals are
    rng = np.random.default_rng(seed)
    boots = [_wls_slope(lx, ly + rng.normal(0, k * s), w, g) for _ in range(n_boot)]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return b, (float(lo), float(hi))
