"""Sizing: a search over each family's shape rules (``Family.sizing``, built from ``models.shapes``) for
the config closest to a target params or GMACs. Within one *structure*
(everything except width and depth) params and MACs are exact polynomials: quadratic in
the width, and for transformers affine in the depth. So a few meta-device probe builds fix
the polynomial exactly, every candidate is then scored in microseconds, and the chosen
config is counted for real (``models.count``) before it is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import torch

from diffbench.core.errors import ConfigError, FamilyError
from diffbench.metrics.counting import count_params
from diffbench.models.api import config_dict, count
from diffbench.models.families import FAMILIES, family_of
from diffbench.models.quantities import format_quantity
from diffbench.models.shapes import Conditioning, InputShape, Structure

__all__ = ["Conditioning", "MatchResult", "fit_counts", "match", "match_many", "probe"]


# --- exact count polynomials ------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def probe(config: Any, with_flops: bool, small: bool = False) -> tuple[int, int]:
    """(params, flops) of a config, counted on meta; flops 0 when not asked for. ``small``: a probe at the
    sizing rules' probe widths, whose params are counted on an uninitialised CPU build (faster)."""
    if with_flops:
        c = count(config)
        return c.params, c.flops

    field = family_of(config).params_affine_in
    depth = getattr(config, field) if field else None
    if small and field and isinstance(depth, int) and depth > 2:
        # Params affine in this depth (a U-Net's num_res_blocks: each extra block adds the same resnet, and
        # attention where the level attends, to every level's down and up path): two builds give the rest.
        # tests/test_sizing.py checks this against real builds.
        one, two = (probe(dataclasses.replace(config, **{field: n}), False, True)[0] for n in (1, 2))
        return one + (depth - 1) * (two - one), 0
    with _no_init() if small else torch.device("meta"):
        model = config.build()
    return count_params(model).total, 0


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Build on the CPU with every ``torch.nn.init`` function a no-op: a probe's widths are small, so its
    (uninitialised) tensors cost little, and this is ~10x faster than building under ``torch.device("meta")``,
    whose mode intercepts every call of a diffusers U-Net's construction. Parameter counts are the same."""
    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def _quadratic(points: Sequence[tuple[int, int]]) -> tuple[Fraction, Fraction, Fraction]:
    """Exact coefficients (c0, c1, c2) of the quadratic through three (x, y) points (Lagrange)."""
    (x0, y0), (x1, y1), (x2, y2) = points
    d0 = Fraction(y0, (x0 - x1) * (x0 - x2))
    d1 = Fraction(y1, (x1 - x0) * (x1 - x2))
    d2 = Fraction(y2, (x2 - x0) * (x2 - x1))
    c2 = d0 + d1 + d2
    c1 = -(d0 * (x1 + x2) + d1 * (x0 + x2) + d2 * (x0 + x1))
    c0 = d0 * x1 * x2 + d1 * x0 * x2 + d2 * x0 * x1
    return c0, c1, c2


@dataclass(frozen=True)
class CountModel:
    """params or flops = q_a(w) + (d - d_a) * (q_b(w) - q_a(w)) / (d_b - d_a), exact for one structure."""

    depth_a: int
    depth_b: int | None
    q_a: tuple[Fraction, Fraction, Fraction]
    q_b: tuple[Fraction, Fraction, Fraction] | None

    def __call__(self, w: int, d: int) -> float:
        def q(c: tuple[Fraction, Fraction, Fraction]) -> float:
            return float(c[0] + c[1] * w + c[2] * w * w)

        a = q(self.q_a)
        if self.q_b is None or self.depth_b is None:
            return a
        return a + (d - self.depth_a) * (q(self.q_b) - a) / (self.depth_b - self.depth_a)


def fit_counts(s: Structure, by: str) -> CountModel:
    if not s.verify:
        return _fit(s, by)
    try:  # a user's family: its build's faults are its own, and its counts are checked against the fit
        model = _fit(s, by)
        w, d = s.widths[2], s.probe_depths[1] + (2 if s.probe_depths[1] % 2 else 1)
        counted = probe(s.make(w, d), by != "params")[0 if by == "params" else 1]
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - the family's own code
        raise FamilyError(f"family {s.verify}: building its config for sizing raised {type(e).__name__}: "
                          f"{' '.join(str(e).split())[:200]}") from None
    if abs(model(w, d) - counted) > 0.5 + 1e-9 * counted:
        what = "params" if by == "params" else "FLOPs"
        raise FamilyError(f"family {s.verify}: its {what} are not quadratic in width and affine in depth as sizing "
                          f"assumes (width {w}, depth {d}: counted {counted}, the fit says {model(w, d):.0f}); give "
                          "the family sizing rules of its own (Family.sizing, see models/shapes.py)")
    return model


def _fit(s: Structure, by: str) -> CountModel:
    idx = 0 if by == "params" else 1
    qs = []
    for d in s.probe_depths:
        if by != "params" and s.flops_through_origin:  # U-Net FLOPs: every term scales with the width
            pts = [(0, 0)] + [(w, probe(s.make(w, d), True)[idx]) for w in s.probe_widths[:2]]
        else:
            pts = [(w, probe(s.make(w, d), by != "params", small=True)[idx]) for w in s.probe_widths]
        qs.append(_quadratic(pts))
    if len(qs) == 1:
        return CountModel(s.probe_depths[0], None, qs[0], None)
    return CountModel(s.probe_depths[0], s.probe_depths[1], qs[0], qs[1])


# --- search ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MatchResult:
    family: str
    by: str  # "params" or "gmacs"
    target: float
    input_shape: InputShape
    config: Any
    params: int
    params_trainable: int
    gmacs: float
    rel_error: float  # (achieved - target) / target in the ``by`` quantity

    def as_dict(self) -> dict[str, Any]:
        target = int(self.target) if self.by == "params" and self.target.is_integer() else self.target
        return {"family": self.family, "by": self.by, "target": target,
                "input": "x".join(map(str, self.input_shape)), "params": self.params,
                "params_trainable": self.params_trainable, "gmacs": self.gmacs, "rel_error": self.rel_error,
                "config": config_dict(self.config)}


PREFERENCE_SLACK = 0.008
# how a family's targets are sized: each on its own, or as one series that grows in width alone


def _checked(family: str, params: float | None, gmacs: float | None, input_shape: Sequence[int],
             patch: int | None, tolerance: float) -> tuple[str, float, InputShape, Any]:
    """(by, target, shape, the family's shape rules) after every argument check ``match`` makes."""
    FAMILIES.get(family)  # did-you-mean for unknown families
    if (params is None) == (gmacs is None):
        raise ConfigError("give exactly one target: params or gmacs")
    by, target = ("params", float(params)) if params is not None else ("gmacs", float(gmacs))  # type: ignore[arg-type]
    if not (math.isfinite(target) and target > 0):
        raise ConfigError(f"the target {by} must be a positive finite number, got {target:g}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 < tolerance < 1:
        raise ConfigError(f"tolerance must be a number between 0 and 1 (a relative error), got {tolerance!r}")
    if patch is not None and (isinstance(patch, bool) or not isinstance(patch, int) or patch < 1):
        raise ConfigError(f"patch must be a positive integer, got {patch!r}")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input shape must be CxHxW with positive sizes, got {input_shape}")
    rules = FAMILIES.get(family).sizing
    if rules is None:
        ruled = ", ".join(n for n, f in FAMILIES.items() if f.sizing is not None)
        raise ConfigError(f"the {family} family has no sizing rules of its own; size the pipelines that use it "
                          f"with 'diffbench count PIPELINE --params N' (families with rules: {ruled})")
    return by, target, shape, rules  # type: ignore[return-value]


def _result(family: str, by: str, target: float, shape: InputShape, config: Any, tolerance: float,
            lo: float, hi: float, what: str = "config") -> MatchResult:
    """The exact count of ``config``; a ``ConfigError`` naming the closest when it misses ``tolerance``."""
    exact = count(config)
    achieved = exact.params if by == "params" else exact.gmacs
    rel = achieved / target - 1
    if abs(rel) > tolerance:
        unit = "params" if by == "params" else "GMACs"
        raise ConfigError(
            f"no {family} {what} within {tolerance:.0%} of {format_quantity(target)} {unit} for input "
            f"{'x'.join(map(str, shape))}: the closest has {format_quantity(achieved)} ({rel:+.1%}); "
            f"the family's shape rules reach {format_quantity(lo)} to {format_quantity(hi)} {unit}")
    return MatchResult(family, by, target, shape, config, exact.params, exact.params_trainable, exact.gmacs, rel)


def match(family: str, params: float | None = None, gmacs: float | None = None,
          input_shape: Sequence[int] = (4, 32, 32), cond: Conditioning | None = None,
          patch: int | None = None, tolerance: float = 0.02) -> MatchResult:
    """The config of ``family`` closest to a target parameter count or GMACs for ``input_shape``.

    Raises ``ConfigError`` when no config of the family's rules lands within ``tolerance``.
    """
    family = FAMILIES.get(family).name  # a family from outside may be given by its module path
    by, target, shape, rules = _checked(family, params, gmacs, input_shape, patch, tolerance)
    s, w, d, lo, hi = _search(rules(shape, cond or Conditioning(), patch), by, target)
    return _result(family, by, target, shape, s.make(w, d), tolerance, lo, hi)


def match_series(family: str, targets: Sequence[float], by: str = "params", input_shape: Sequence[int] = (4, 32, 32),
                 cond: Conditioning | None = None, patch: int | None = None,
                 tolerance: float = 0.02) -> list[MatchResult]:
    """One config of ``family`` per target that differ in width alone: one structure (U-Net channel multipliers,
    res blocks, attention levels; patch size) and one depth for the whole series, as a scaling study that grows a
    model wider at fixed depth. Sized independently (``match``), neighbouring targets can land on very different
    shapes (on 3x8x8, ViT at depth 4, 12 and 4 for 0.7M, 1.4M and 2.8M), and the curve then mixes depth and width.

    The series is the (structure, depth) whose widths miss their targets by the least (the largest relative
    error over the series); near-ties (within 0.8%) go to the shape closest to the paper's own proportions on
    average over the series. Distinct targets get distinct widths. Raises ``ConfigError`` when a target misses
    ``tolerance``."""
    if not targets:
        raise ConfigError("a series needs at least one target")
    if by not in ("params", "gmacs"):
        raise ConfigError(f"by must be params or gmacs, got {by!r}")
    family = FAMILIES.get(family).name
    checked = [_checked(family, t if by == "params" else None, t if by != "params" else None, input_shape, patch,
                        tolerance) for t in targets]
    _, _, shape, rules = checked[0]
    values = [c[1] for c in checked]
    s, d, ws, lo, hi = _search_series(rules(shape, cond or Conditioning(), patch), by, values)
    return [_result(family, by, t, shape, s.make(w, d), tolerance, lo, hi, "series")
            for t, w in zip(values, ws, strict=True)]


def _search(structures: list[Structure], by: str, target: float) -> tuple[Structure, int, int, float, float]:
    """The (structure, width, depth) whose exact count polynomial is closest to ``target``, and the range the
    structures reach. Near-ties (within 0.8%) go to the shape closest to the paper's own proportions.

    Tiers: a later tier's structures are all more atypical than an earlier tier's, so when an earlier tier
    already has a candidate within the preference slack, the full search would pick from it too; probing the
    later tiers (the costly part) is skipped."""
    scale = 1.0 if by == "params" else 2e9  # gmacs target -> flops
    scored: list[tuple[float, float, Structure, int, int]] = []  # (error, atypicality, structure, w, d)
    lo, hi = math.inf, 0.0
    for tier in sorted({s.tier for s in structures}):
        for s in (s for s in structures if s.tier == tier):
            model = fit_counts(s, by)
            for w in s.widths:
                for d in s.depths(w):
                    est = model(w, d) / scale
                    lo, hi = min(lo, est), max(hi, est)
                    scored.append((abs(est / target - 1), s.atypicality(w, d), s, w, d))
        if min(c[0] for c in scored) <= PREFERENCE_SLACK:
            break
    best_err = min(c[0] for c in scored)
    pool = [c for c in scored if c[0] <= max(best_err, PREFERENCE_SLACK)]
    _, _, s, w, d = min(pool, key=lambda c: (c[1], c[0]))
    return s, w, d, lo, hi


def _search_series(structures: list[Structure], by: str, targets: list[float]
                   ) -> tuple[Structure, int, list[int], float, float]:
    """(structure, depth, a width per target) for ``match_series``, and the range the structures reach. Every tier
    is searched: a series' error is its worst target's, which no single tier bounds."""
    scale = 1.0 if by == "params" else 2e9
    scored: list[tuple[float, float, Structure, int, list[int]]] = []  # (worst error, atypicality, s, d, widths)
    lo, hi = math.inf, 0.0
    distinct = len(set(targets))
    for s in structures:
        model = fit_counts(s, by)
        by_depth: dict[int, list[int]] = {}
        for w in s.widths:
            for d in s.depths(w):
                by_depth.setdefault(d, []).append(w)
                est = model(w, d) / scale
                lo, hi = min(lo, est), max(hi, est)
        for d, ws in by_depth.items():
            picks = [min(ws, key=lambda w: abs(model(w, d) / scale / t - 1)) for t in targets]
            if len(set(picks)) < distinct:  # two targets on one width: not a series
                continue
            worst = max(abs(model(w, d) / scale / t - 1) for w, t in zip(picks, targets, strict=True))
            typical = sum(s.atypicality(w, d) for w in picks) / len(picks)
            scored.append((worst, typical, s, d, picks))
    if not scored:
        raise ConfigError("the family's shape rules have no structure with a distinct width for every target; "
                          "give targets further apart")
    best = min(c[0] for c in scored)
    pool = [c for c in scored if c[0] <= max(best, PREFERENCE_SLACK)]
    _, _, s, d, ws = min(pool, key=lambda c: (c[1], c[0]))
    return s, d, ws, lo, hi


def match_many(requests: Sequence[tuple[str, dict[str, Any]]], series: bool = False,
               keep_errors: bool = False) -> list[Any]:
    """``[match(family, **kwargs) for family, kwargs in requests]``, with the families searched in parallel;
    ``series``: each family's targets that share input, conditioning, patch and tolerance are sized as one
    width-only series (``match_series``).

    Each family's probes are cached within one worker, so a family stays in one process; workers are
    forked after the imports (a spawned one would spend seconds importing torch and diffusers again),
    U-Nets first since their probes cost the most. Serial where fork is not available, with one family,
    or with ``DIFFBENCH_SIZING_WORKERS=1``. The first failing request's error is raised, as in a loop; with
    ``keep_errors`` each failing request's error is returned in its place.
    """
    families = list(dict.fromkeys(f for f, _ in requests))
    for f in families:  # imported here, before the workers fork, where a family comes from outside
        with contextlib.suppress(FamilyError):  # then each of its requests fails with it, in its place
            FAMILIES.get(f)
    groups = [(f, [(i, kw) for i, (g, kw) in enumerate(requests) if g == f], series)
              for f in sorted(families, key=lambda f: not f.startswith("unet"))]
    workers = _workers(len(families))
    out: dict[int, MatchResult | BaseException] = {}
    if workers <= 1:
        for g in groups:
            out.update(_match_group(g))
    else:
        with mp.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
            for done in pool.imap_unordered(_match_group, groups):
                out.update(done)
    for i in range(len(requests)):
        if isinstance(out[i], BaseException) and not keep_errors:
            raise out[i]  # type: ignore[misc]
    return [out[i] for i in range(len(requests))]


def _workers(n_families: int) -> int:
    env = os.environ.get("DIFFBENCH_SIZING_WORKERS", "")
    if env.strip().isdigit():
        return min(int(env), n_families)
    if not sys.platform.startswith("linux") or "fork" not in mp.get_all_start_methods():
        return 1
    return min(n_families, os.cpu_count() or 1, 4)


def _worker_init() -> None:
    torch.set_num_threads(1)  # probes build modules; no worker needs the parent's thread pool


def _match_group(group: tuple[str, list[tuple[int, dict[str, Any]]], bool]
                 ) -> dict[int, MatchResult | BaseException]:
    family, items, series = group
    out: dict[int, MatchResult | BaseException] = {}
    if not series:
        for i, kw in items:
            try:
                out[i] = match(family, **kw)
            except Exception as e:  # noqa: BLE001 - returned to the parent, which raises it in request order
                out[i] = e
        return out
    # one series per quantity (params or gmacs), input, conditioning, patch and tolerance
    runs: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for i, kw in items:
        by = "params" if kw.get("params") is not None else "gmacs"
        key = sorted((k, v) for k, v in kw.items() if k not in ("params", "gmacs"))
        runs.setdefault(repr((by, key)), []).append((i, kw))
    for run in runs.values():
        kw = run[0][1]
        by = "params" if kw.get("params") is not None else "gmacs"
        rest = {k: v for k, v in kw.items() if k not in ("params", "gmacs")}
        try:
            found: list[MatchResult | BaseException] = list(match_series(family, [k[by] for _, k in run], by, **rest))
        except Exception as e:  # noqa: BLE001 - as above
            found = [e] * len(run)
        out.update({i: r for (i, _), r in zip(run, found, strict=True)})
    return out
