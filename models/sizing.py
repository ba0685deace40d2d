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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from diffbench.core.errors import ConfigError
from diffbench.models.shapes import Conditioning, InputShape, Structure

__all__ = ["Conditioning", "MatchResult", "fit_counts", "format_quantity", "match", "match_many", "parse_input_shape",
           "parse_quantity", "parse_target", "probe"]


# --- exact count polynomials ------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def probe(config: Any, with_flops: bool, small: bool = False) -> tuple[int, int]:
    """(params, flops) of a config, counted on meta; flops 0 when not asked for. ``small``: a probe at the
    sizing rules' probe widths, whose params are counted on an uninitialised CPU build (faster)."""
    import torch

    from diffbench.metrics.counting import count_params

    if with_flops:
        from diffbench.models.api import count

        c = count(config)
        return c.params, c.flops
    from diffbench.models.families import family_of

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
    import torch

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
        from diffbench.models.api import config_dict

        target = int(self.target) if self.by == "params" and self.target.is_integer() else self.target
        return {"family": self.family, "by": self.by, "target": target,
                "input": "x".join(map(str, self.input_shape)), "params": self.params,
                "params_trainable": self.params_trainable, "gmacs": self.gmacs, "rel_error": self.rel_error,
                "config": config_dict(self.config)}


PREFERENCE_SLACK = 0.008


def match(family: str, params: float | None = None, gmacs: float | None = None,
          input_shape: Sequence[int] = (4, 32, 32), cond: Conditioning | None = None,
          patch: int | None = None, tolerance: float = 0.02) -> MatchResult:
    """The config of ``family`` closest to a target parameter count or GMACs for ``input_shape``.

    Raises ``ConfigError`` when no config of the family's rules lands within ``tolerance``.
    """
    from diffbench.models.api import count
    from diffbench.models.families import FAMILIES

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
    s, w, d, lo, hi = _search(rules(shape, cond or Conditioning(), patch), by, target)
    config = s.make(w, d)
    exact = count(config)
    achieved = exact.params if by == "params" else exact.gmacs
    rel = achieved / target - 1
    if abs(rel) > tolerance:
        unit = "params" if by == "params" else "GMACs"
        raise ConfigError(
            f"no {family} config within {tolerance:.0%} of {format_quantity(target)} {unit} for input "
            f"{'x'.join(map(str, shape))}: the closest has {format_quantity(achieved)} ({rel:+.1%}); "
            f"the family's shape rules reach {format_quantity(lo)} to {format_quantity(hi)} {unit}")
    return MatchResult(family, by, target, shape, config, exact.params, exact.params_trainable, exact.gmacs, rel)


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


def match_many(requests: Sequence[tuple[str, dict[str, Any]]]) -> list[MatchResult]:
    """``[match(family, **kwargs) for family, kwargs in requests]``, with the families searched in parallel.

    Each family's probes are cached within one worker, so a family stays in one process; workers are
    forked after the imports (a spawned one would spend seconds importing torch and diffusers again),
    U-Nets first since their probes cost the most. Serial where fork is not available, with one family,
    or with ``DIFFBENCH_SIZING_WORKERS=1``. The first failing request's error is raised, as in a loop.
    """
    families = list(dict.fromkeys(f for f, _ in requests))
    workers = _workers(len(families))
    if workers <= 1:
        return [match(f, **kw) for f, kw in requests]
    import multiprocessing as mp

    groups = [(f, [(i, kw) for i, (g, kw) in enumerate(requests) if g == f])
              for f in sorted(families, key=lambda f: not f.startswith("unet"))]
    out: dict[int, MatchResult | BaseException] = {}
    with mp.get_context("fork").Pool(workers, initializer=_worker_init) as pool:
        for done in pool.imap_unordered(_match_group, groups):
            out.update(done)
    for i in range(len(requests)):
        if isinstance(out[i], BaseException):
            raise out[i]  # type: ignore[misc]
    return [out[i] for i in range(len(requests))]  # type: ignore[misc]


def _workers(n_families: int) -> int:
    import multiprocessing as mp
    import os
    import sys

    env = os.environ.get("DIFFBENCH_SIZING_WORKERS", "")
    if env.strip().isdigit():
        return min(int(env), n_families)
    if not sys.platform.startswith("linux") or "fork" not in mp.get_all_start_methods():
        return 1
    return min(n_families, os.cpu_count() or 1, 4)


def _worker_init() -> None:
    import torch

    torch.set_num_threads(1)  # probes build modules; no worker needs the parent's thread pool


def _match_group(group: tuple[str, list[tuple[int, dict[str, Any]]]]) -> dict[int, MatchResult | BaseException]:
    family, items = group
    out: dict[int, MatchResult | BaseException] = {}
    for i, kw in items:
        try:
            out[i] = match(family, **kw)
        except Exception as e:  # noqa: BLE001 - returned to the parent, which raises it in request order
            out[i] = e
    return out


_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}


def parse_quantity(text: str, what: str = "value") -> float:
    """'33M' -> 33e6, '1.5B' -> 1.5e9, '6G' -> 6e9, '675000000' -> 6.75e8."""
    s = text.strip().upper()
    num, suffix = (s[:-1], s[-1]) if s and s[-1] in _SUFFIX and s[-1] != "" else (s, "")
    try:
        value = float(num) * _SUFFIX[suffix]
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a number with an optional K, M, G, B or T suffix "
                          "(e.g. 33M, 1.5B)") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} {text!r} must be a positive number")
    return value


def parse_target(text: str, by: str, what: str = "target") -> float:
    """A params target ('33M' -> 33e6) or a GMACs target ('6G' and a bare '6' both mean 6 GMACs)."""
    value = parse_quantity(text, what)
    return value / 1e9 if by == "gmacs" and value >= 1e6 else value


def format_quantity(v: float) -> str:
    for suffix, f in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.4g}{suffix}"
    return f"{v:.4g}"


def parse_input_shape(text: str) -> InputShape:
    """'4x32x32' -> (4, 32, 32)."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input shape {text!r} is not CxHxW with positive integers (e.g. 4x32x32)")
    return shape  # type: ignore[return-value]
