"""Sizing a pipeline to a denoiser parameter budget: a common width factor, then per-stage refinement."""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import torch

from diffbench.core.errors import ConfigError
from diffbench.models.families import FAMILIES
from diffbench.models.pipelines.presets import PIPELINES
from diffbench.models.pipelines.spec import PipelineSpec, StageSpec
from diffbench.models.sizing import probe


def _reshaped(s: StageSpec, factor: float, depth_delta: int = 0) -> StageSpec | None:
    """The stage with every backbone's width scaled by ``factor`` (rounded to the family's step) and its
    depth (transformer blocks, or U-Net blocks per level) moved by ``depth_delta``; None if invalid."""
    fam = FAMILIES.get(s.family)
    wf, df = fam.width_field, fam.depth_field
    configs = []
    for cfg in s.backbones:
        step = fam.step(cfg)
        changes: dict[str, Any] = {wf: max(step, round(getattr(cfg, wf) * factor / step) * step)}
        depth = getattr(cfg, df)
        if depth_delta:
            moved: Any = tuple(d + depth_delta for d in depth) if isinstance(depth, tuple) else depth + depth_delta
            if min(moved if isinstance(moved, tuple) else (moved,)) < 1 or (fam.odd_depth and moved % 2 == 0):
                return None
            changes[df] = moved
        try:
            configs.append(dataclasses.replace(cfg, **changes))
        except ConfigError:
            return None
    return dataclasses.replace(s, backbones=tuple(configs))


def _stage_params(s: StageSpec) -> int:
    return sum(probe(c, False)[0] for c in s.backbones)


def size_pipeline(spec: PipelineSpec, params: float, tolerance: float = 0.03) -> tuple[PipelineSpec, int, float]:
    """Reshape the stages' backbones so that the denoisers (all stages and experts, plus the unCLIP
    prior, which keeps its size) total ``params``; text encoders and the autoencoder are counted
    apart and keep their size. Returns (spec, achieved, relative error).

    A common width factor keeps the stages' proportions (found by bisection); then each stage may
    move its width a step and its depth by one, and the combination closest to the budget wins
    (near-ties, within 0.5%, go to the least reshaped).
    """
    if not params > 0:
        raise ConfigError(f"the parameter budget must be positive, got {params:g}")
    fixed = _prior_params(spec)
    f = _common_factor(spec, params, fixed)
    options = [_stage_options(s, f) for s in spec.stages]
    combos: list[tuple[float, float, tuple[StageSpec, ...], int]] = []
    for pick in itertools.product(*options):
        n = fixed + sum(p[1] for p in pick)
        combos.append((abs(n / params - 1), sum(p[2] for p in pick), tuple(p[0] for p in pick), n))
    best_err = min(c[0] for c in combos)
    err, _, stages, n = min((c for c in combos if c[0] <= max(best_err, 0.005)), key=lambda c: (c[1], c[0]))
    if err > tolerance:
        raise ConfigError(f"the {spec.name} pipeline's denoisers cannot reach {params:,.0f} params within "
                          f"{tolerance:.0%} by reshaping their backbones (closest {n:,}, {n / params - 1:+.1%}); "
                          "choose a budget nearer its natural size")
    return dataclasses.replace(spec, stages=stages), n, n / params - 1


def _prior_params(spec: PipelineSpec) -> int:
    """unCLIP's prior keeps its size but counts toward the budget."""
    if spec.prior is None:
        return 0
    from diffusers.models import PriorTransformer

    with torch.device("meta"):
        return sum(p.numel() for p in PriorTransformer(**spec.prior.config).parameters())


def _common_factor(spec: PipelineSpec, params: float, fixed: int) -> float:
    """The width factor, common to every stage, whose reshaped denoisers come closest to ``params``."""
    def total(f: float) -> int:
        return fixed + sum(_stage_params(st) for st in (_reshaped(s, f) for s in spec.stages) if st is not None)

    lo, hi = 1 / 64, 64.0
    for _ in range(40):  # bisection on the log of the width factor; params grow with width
        mid = math.sqrt(lo * hi)
        if total(mid) < params:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.002:
            break
    return math.sqrt(lo * hi)


def _stage_options(s: StageSpec, f: float) -> list[tuple[StageSpec, int, float]]:
    """The stage near the common factor: width a step either way, depth moved by up to two; (stage, params,
    how far it was reshaped)."""
    opts: dict[str, tuple[StageSpec, int, float]] = {}
    for k in (0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3, 1.45, 1.6):
        for dd in (-2, -1, 0, 1, 2):
            st = _reshaped(s, f * k, dd)
            key = repr(st)
            if st is not None and key not in opts:
                opts[key] = (st, _stage_params(st), abs(math.log(k)) + abs(dd) * 0.2)
    return list(opts.values())


def pipeline_spec(name: str, scale: str = "tiny", budget: float | None = None, tolerance: float = 0.03
                  ) -> PipelineSpec:
    """A pipeline preset at a scale, its denoisers reshaped to ``budget`` params when one is given."""
    spec = PIPELINES.get(name).spec(scale)
    if budget:
        spec, _, _ = size_pipeline(spec, float(budget), tolerance)
    return spec
