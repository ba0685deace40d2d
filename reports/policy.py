"""How ``diffbench compare`` judges a change: thresholds by metric kind, per metric and per case glob.

A policy is a TOML file (``--policy``, or ``compare-policy.toml`` beside the suite); without one the
defaults below apply. Every key is optional::

    alpha = 0.05              # one-sided Mann-Whitney U on raw timing samples
    min_samples = 5           # fewer on either side: a timing shift beyond the threshold is inconclusive
    min_repetitions = 4       # runs with this many repetitions (processes) a side are tested on those
    threshold = 0.05          # timings: the median must move more than 5% (and be significant)
    memory_threshold = 0.02   # memory: +2% ...
    memory_min_mib = 16       # ... and at least 16 MiB
    energy_threshold = 0.05   # energy and MFU (no samples): the value must move more than 5%
    quality_rel = 0.05        # quality and training losses, across devices; on CPU against CPU: exact
    quality_abs = 0.0
    ignore = ["case_wall_s"]  # metric globs left out
    allow_change = []         # exact quantities allowed to change (as --allow-change)

    [metrics.fid]             # per metric: threshold, rel, abs
    abs = 2.0

    [[cases]]                 # per case glob (over "label/bBATCH/precision"), any of the keys above
    glob = "dit*"
    threshold = 0.10
"""

from __future__ import annotations

import fnmatch
import math
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from diffbench.core.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Rules:
    alpha: float = 0.05
    min_samples: int = 5
    # 4 against 4 repetitions: the smallest one-sided Mann-Whitney p is 1/70 (3 against 3: 1/20, never < 0.05)
    min_repetitions: int = 4
    threshold: float = 0.05
    memory_threshold: float = 0.02
    memory_min_mib: float = 16.0
    energy_threshold: float = 0.05
    quality_rel: float | None = None  # None: exact when both sides ran on the CPU, else 0.05
    quality_abs: float = 0.0
    # noise warnings (reports/noise.py): per-process medians spread more than this factor; the two machines'
    # calibrations (device.json) differ by more than this fraction
    spread_warning: float = 2.0
    calibration_tolerance: float = 0.2


@dataclass(frozen=True)
class Policy:
    rules: Rules = field(default_factory=Rules)
    ignore: tuple[str, ...] = ("case_wall_s", "phase_seconds*")
    allow_change: tuple[str, ...] = ()
    allow_missing: tuple[str, ...] = ()  # globs over case labels or metrics that may be missing from the new run
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    cases: tuple[tuple[str, dict[str, Any]], ...] = ()

    def for_case(self, label: str) -> Rules:
        rules = self.rules
        for glob, overrides in self.cases:
            if fnmatch.fnmatchcase(label, glob):
                rules = replace(rules, **overrides)
        return rules

    def ignored(self, metric: str) -> bool:
        return any(fnmatch.fnmatchcase(metric, g) for g in self.ignore)


RULE_KEYS = {f.name for f in fields(Rules)}
METRIC_KEYS = {"threshold", "rel", "abs"}


def _number(where: str, key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise ConfigError(f"{where}: {key} must be a finite number >= 0, got {v!r}")
    return float(v)


def _rules(where: str, table: dict[str, Any]) -> dict[str, Any]:
    bad = sorted(set(table) - RULE_KEYS)
    if bad:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(bad)}; known: {', '.join(sorted(RULE_KEYS))}")
    out: dict[str, Any] = {k: _number(where, k, v) for k, v in table.items()}
    if "alpha" in out and not 0 < out["alpha"] < 1:
        raise ConfigError(f"{where}: alpha must be between 0 and 1, got {out['alpha']}")
    for key in ("min_samples", "min_repetitions"):  # counts of values a rank test needs: whole, at least 2
        if key in out:
            if isinstance(table[key], float) and not table[key].is_integer() or out[key] < 2:
                raise ConfigError(f"{where}: {key} must be a whole number of at least 2, got {table[key]!r}")
            out[key] = int(out[key])
    if "spread_warning" in out and out["spread_warning"] < 1:
        raise ConfigError(f"{where}: spread_warning is a ratio of slowest to fastest, at least 1; got "
                          f"{out['spread_warning']}")
    return out


def _strings(where: str, key: str, v: Any) -> tuple[str, ...]:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ConfigError(f"{where}: {key} must be a list of strings")
    return tuple(v)


def load(path: str | Path | None) -> Policy:
    if path is None:
        return Policy()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as e:
        raise ConfigError(f"{p}: not a readable policy TOML ({str(e)[:100]})") from None
    top = {k: v for k, v in raw.items() if k not in ("ignore", "allow_change", "allow_missing", "metrics", "cases")}
    policy = Policy(Rules(**_rules(str(p), top)))
    if "ignore" in raw:
        policy = replace(policy, ignore=_strings(str(p), "ignore", raw["ignore"]))
    if "allow_change" in raw:
        policy = replace(policy, allow_change=_strings(str(p), "allow_change", raw["allow_change"]))
    if "allow_missing" in raw:
        policy = replace(policy, allow_missing=_strings(str(p), "allow_missing", raw["allow_missing"]))
    metrics = raw.get("metrics", {})
    if not isinstance(metrics, dict) or not all(isinstance(t, dict) for t in metrics.values()):
        raise ConfigError(f"{p}: [metrics.NAME] tables expected")
    for name, t in metrics.items():
        bad = sorted(set(t) - METRIC_KEYS)
        if bad:
            raise ConfigError(f"{p}: metrics.{name}: unknown key(s) {', '.join(bad)}; known: threshold, rel, abs")
    per_metric = {n: {k: _number(f"{p}: metrics.{n}", k, v) for k, v in t.items()} for n, t in metrics.items()}
    cases = raw.get("cases", [])
    if not isinstance(cases, list) or not all(isinstance(c, dict) and isinstance(c.get("glob"), str) for c in cases):
        raise ConfigError(f"{p}: [[cases]] tables need a glob = \"...\"")
    per_case = tuple((c["glob"], _rules(f"{p}: cases[{i}]", {k: v for k, v in c.items() if k != "glob"}))
                     for i, c in enumerate(cases))
    return replace(policy, metrics=per_metric, cases=per_case)
