"""``diffbench compare``: what moved between two runs of a suite, judged by what each metric is.

Cases are matched by identity (the case id); the metric registry says each metric's kind and
direction, and the kind picks the rule:

- timing with raw samples: a one-sided Mann-Whitney U test on the samples (robust to the outliers
  a busy runner produces, no normality assumed: google/benchmark's choice) *and* the median moving
  more than the threshold; both are needed. Fewer than ``min_samples`` on a side and a shift beyond
  the threshold is "inconclusive: too few samples", never a pass. Timing values without samples
  (throughput, first call) are derived or single: a shift beyond the threshold is inconclusive.
- exact (params, GMACs, FLOPs): any change is a change, and fails unless allowed;
- memory: worse by more than the threshold and by more than ``memory_min_mib``;
- quality and training: a tolerance (exact on CPU against CPU, where runs are deterministic);
- energy and efficiency: a threshold on the value;
- a case that was ok and now failed is a regression; one that failed and now works, a fix.
"""

from __future__ import annotations

import fnmatch
import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from diffbench.core import records
from diffbench.core.errors import BadInputError
from diffbench.metrics.specs import METRICS, MetricSpec, base_name
from diffbench.reports import noise
from diffbench.reports.baseline import Case, Side
from diffbench.reports.policy import Policy, Rules

FAILING = {"regression", "changed", "broken", "missing"}
ENV_KEYS = ("device_name", "driver_version", "torch_version", "cuda_version")


@dataclass
class Verdict:
    case: str
    metric: str
    verdict: str  # regression, improvement, same, inconclusive, changed, broken, fixed, added, missing
    base: float | None = None
    new: float | None = None
    unit: str = ""
    change: float | None = None  # new / base - 1 (or the difference for exact quantities)
    p_value: float | None = None
    note: str = ""
    allowed: bool = False  # a change that --allow-change allows
    spread: float | None = None  # timings: the larger max/min of the two sides' per-process values (or samples)
    detectable: float | None = None  # timings: the smallest relative change this comparison could find (inf: none)

    @property
    def fails(self) -> bool:
        return self.verdict in FAILING and not self.allowed

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("case", "metric", "verdict", "base", "new", "unit", "change",
                                             "p_value", "note", "allowed", "spread", "detectable")} | {
            "fails": self.fails}


@dataclass
class Comparison:
    base: Side
    new: Side
    verdicts: list[Verdict] = field(default_factory=list)
    env: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # what differs: key -> (base, new)
    warnings: list[str] = field(default_factory=list)  # noise the verdicts should be read with

    @property
    def failed(self) -> bool:
        return any(v.fails for v in self.verdicts)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.verdicts:
            out[v.verdict] = out.get(v.verdict, 0) + 1
        return out


def environment(side: Side) -> dict[str, Any]:
    prov = next(iter(side.cases.values())).provenance if side.cases else {}
    env = {k: prov.get(k) for k in ENV_KEYS}
    env["dirty tree"] = any(c.provenance.get("git_dirty") for c in side.cases.values())
    env["commit"] = prov.get("git_commit") or f"diffbench {prov.get('diffbench_version')}"
    return env


def env_differences(base: Side, new: Side) -> dict[str, tuple[Any, Any]]:
    a, b = environment(base), environment(new)
    diffs = {k: (a[k], b[k]) for k in ENV_KEYS if a[k] != b[k]}
    if a["dirty tree"] or b["dirty tree"]:
        diffs["dirty tree"] = (a["dirty tree"], b["dirty tree"])
    return diffs


def _worse(spec: MetricSpec, base: float, new: float) -> float:
    """How much worse new is than base, as a ratio - 1 (negative: better; 0 for metrics with no direction)."""
    if not spec.better:
        return 0.0
    if base == 0:
        return 0.0 if new == 0 else math.inf * (1 if (new > 0) == (spec.better == "lower") else -1)
    ratio = new / base
    if spec.better == "lower":
        return ratio - 1
    return 1 / ratio - 1 if ratio > 0 else math.inf


def _timing(spec: MetricSpec, a: records.Record, b: records.Record, rules: Rules, thr: float) -> Verdict:
    v = _timing_verdict(spec, a, b, rules, thr)
    (va, pa), (vb, pb) = noise.values(a), noise.values(b)
    na, nb = noise.noise(va, pa), noise.noise(vb, pb)
    if na is not None and nb is not None:
        v.spread, v.detectable = max(na.spread, nb.spread), noise.detectable(va, vb, rules.alpha)
        v.note = "; ".join(x for x in (v.note, noise.describe(na, nb, v.detectable)) if x)
    return v


def _timing_verdict(spec: MetricSpec, a: records.Record, b: records.Record, rules: Rules, thr: float) -> Verdict:
    assert a.value is not None and b.value is not None
    v = Verdict("", "", "same", a.value, b.value, a.unit, b.value / a.value - 1 if a.value else None)
    ra, rb = a.extra.get("repetitions"), b.extra.get("repetitions")
    if isinstance(ra, list) and isinstance(rb, list) and min(len(ra), len(rb)) >= rules.min_repetitions:
        # one observation per process (bench/repetitions.py): the between-process noise is in the test
        v = _rank_test(spec, ra, rb, rules, thr, v)
        v.note = (v.note + "; " if v.note else "") + f"{len(ra)} vs {len(rb)} repetitions (one per process)"
        return v
    sa, sb = a.samples or [], b.samples or []
    if min(len(sa), len(sb)) < rules.min_samples:
        worse = _worse(spec, a.value, b.value)
        if abs(worse) > thr:
            v.verdict = "inconclusive"
            v.note = f"too few samples ({len(sa)} vs {len(sb)}; at least {rules.min_samples} on each side)" \
                if sa or sb else "no raw samples (a derived or single value)"
        return v
    v = _rank_test(spec, sa, sb, rules, thr, v)
    if v.verdict != "same":
        v.note = (v.note + "; " if v.note else "") + "samples of one process per side: run the suite with " \
                                                     "repetitions >= 3 to test across processes"
    return v


def _rank_test(spec: MetricSpec, sa: list[float], sb: list[float], rules: Rules, thr: float, v: Verdict) -> Verdict:
    """Mann-Whitney U, one-sided each way, and the medians' shift beyond the threshold: both make a verdict."""
    from scipy.stats import mannwhitneyu

    worse = _worse(spec, statistics.median(sa), statistics.median(sb))
    v.change = statistics.median(sb) / statistics.median(sa) - 1
    slower = spec.better != "higher"  # latency: a regression is new > base
    p_worse = float(mannwhitneyu(sb, sa, alternative="greater" if slower else "less").pvalue)
    p_better = float(mannwhitneyu(sb, sa, alternative="less" if slower else "greater").pvalue)
    if worse > thr and p_worse < rules.alpha:
        v.verdict, v.p_value = "regression", p_worse
    elif -worse > thr / (1 + thr) and p_better < rules.alpha:
        v.verdict, v.p_value = "improvement", p_better
    else:
        v.p_value = min(p_worse, p_better)
        if abs(worse) > thr:
            v.verdict, v.note = "inconclusive", f"median moved {worse:+.1%} but p = {v.p_value:.3g} >= {rules.alpha}"
    return v


def _judge(spec: MetricSpec, a: records.Record, b: records.Record, rules: Rules, overrides: dict[str, float],
           cpu: bool) -> Verdict:
    assert a.value is not None and b.value is not None
    if spec.kind == "exact":
        same = a.value == b.value
        return Verdict("", "", "same" if same else "changed", a.value, b.value, a.unit, b.value - a.value,
                       note="" if same else "an exact count changed: the benchmarked model is not the same")
    if spec.kind == "timing":
        return _timing(spec, a, b, rules, overrides.get("threshold", rules.threshold))
    v = Verdict("", "", "same", a.value, b.value, a.unit, b.value / a.value - 1 if a.value else None)
    worse = _worse(spec, a.value, b.value)
    if spec.kind == "memory":
        limit = max(overrides.get("threshold", rules.memory_threshold) * a.value, rules.memory_min_mib * 2**20)
        delta = b.value - a.value
        v.verdict = "regression" if delta > limit else "improvement" if -delta > limit else "same"
    elif spec.kind in ("quality", "training"):
        rel = overrides.get("rel", rules.quality_rel if rules.quality_rel is not None else (1e-9 if cpu else 0.05))
        tolerance = overrides.get("abs", rules.quality_abs) + rel * abs(a.value)
        if abs(b.value - a.value) > tolerance and spec.better:
            v.verdict = "regression" if worse > 0 else "improvement"
            v.note = f"beyond the tolerance {tolerance:.3g}"
    elif spec.kind in ("energy", "efficiency"):
        thr = overrides.get("threshold", rules.energy_threshold)
        v.verdict = "regression" if worse > thr else "improvement" if -worse > thr / (1 + thr) else "same"
    return v


def _compare_case(ca: Case, cb: Case, policy: Policy, cpu: bool) -> list[Verdict]:
    label = cb.label
    if ca.status == "ok" and cb.status != "ok" and cb.status != "unsupported":
        err = cb.metrics["case"].error if "case" in cb.metrics else ""
        return [Verdict(label, "case", "broken", note=f"was ok, now {cb.status}: {err}"[:200])]
    if ca.status != "ok" and cb.status == "ok":
        return [Verdict(label, "case", "fixed", note=f"was {ca.status}, now ok")]
    rules, out = policy.for_case(label), []
    for metric in sorted(set(ca.metrics) | set(cb.metrics)):
        if metric == "case" or policy.ignored(metric):
            continue
        a, b = ca.metrics.get(metric), cb.metrics.get(metric)
        if a is None or b is None:
            out.append(Verdict(label, metric, "added") if a is None else _missing(label, metric, policy))
            continue
        if a.value is None or b.value is None:
            if (a.value is None) != (b.value is None):
                out.append(Verdict(label, metric, "changed", a.value, b.value, a.unit,
                                   note=f"measured on one side only: {a.error or b.error}"))
            continue
        spec = METRICS.get(base_name(metric))
        if spec.derived_from and spec.derived_from in ca.metrics and spec.derived_from in cb.metrics:
            continue  # judged through the samples it comes from
        v = _judge(spec, a, b, rules, policy.metrics.get(base_name(metric), {}), cpu)
        v.case, v.metric = label, metric
        v.allowed = v.verdict == "changed" and any(fnmatch.fnmatchcase(metric, g) or base_name(metric) == g
                                                   for g in policy.allow_change)
        out.append(v)
    return out


def _missing(label: str, metric: str, policy: Policy) -> Verdict:
    allowed = any(fnmatch.fnmatchcase(label, g) or fnmatch.fnmatchcase(metric, g) or base_name(metric) == g
                  for g in policy.allow_missing)
    what = "the case" if metric == "case" else "this metric"
    return Verdict(label, metric, "missing", allowed=allowed,
                   note=f"{what} is in the base and not in the new run" + (" (allowed by the policy)" if allowed else
                                                                           "; allow_missing in a policy allows it"))


def shared_cases(base: Side, new: Side) -> list[str]:
    """The case ids both sides hold; none is a bad input (two unrelated suites, or another device)."""
    shared = [cid for cid in new.cases if cid in base.cases]
    if not shared:
        raise BadInputError(f"{base.source} and {new.source} share no case (suites {base.suite!r} and "
                            f"{new.suite!r}); compare two runs of one suite on one device and precision")
    return shared


def compare(base: Side, new: Side, policy: Policy) -> Comparison:
    """Every case's verdicts. A case or metric of the base that the new run lacks is ``missing``, a failure unless
    the policy's ``allow_missing`` names it (a run killed early, an unreadable line, a metric no longer written
    must not pass as "no regression"); one only the new run has is ``added``."""
    shared = shared_cases(base, new)
    cpu = all(str(c.config.get("device", "")).startswith("cpu") for s in (base, new) for c in s.cases.values())
    result = Comparison(base, new, env=env_differences(base, new))
    for cid in shared:
        result.verdicts += _compare_case(base.cases[cid], new.cases[cid], policy, cpu)
    result.verdicts += [Verdict(c.label, "case", "added") for cid, c in new.cases.items() if cid not in base.cases]
    result.verdicts += [_missing(c.label, "case", policy) for cid, c in base.cases.items() if cid not in new.cases]
    result.warnings = _warnings(result, policy.rules)
    return result


def _warnings(result: Comparison, rules: Rules) -> list[str]:
    """The noise to read the verdicts with: the widest spread between processes, timings whose comparison could
    not detect the threshold's change, and machines whose calibrations differ."""
    out = []
    timed = [v for v in result.verdicts if v.spread is not None]
    if timed:
        worst = max(timed, key=lambda v: v.spread or 0.0)
        if (worst.spread or 0.0) > rules.spread_warning:
            out.append(f"noisy: {worst.case} {worst.metric} spread {worst.spread:.3g}x between its slowest and fastest "
                       f"values (warning above {rules.spread_warning:g}x): a quiet machine or more repetitions")
        blind = [v for v in timed if (v.detectable or 0.0) > rules.threshold]
        if blind:
            finite = [v.detectable for v in blind if v.detectable is not None and math.isfinite(v.detectable)]
            most = f"up to +-{max(finite):.0%}" if finite else "none at all"
            out.append(f"{len(blind)} of {len(timed)} timing comparison(s) could not detect a {rules.threshold:.0%} "
                       f"change (smallest detectable: {most}); 'same' there means 'not seen', not 'unchanged'")
    for side, name in ((result.base, "base"), (result.new, "new run")):
        if side.problems:
            more = f" (and {len(side.problems) - 1} more)" if len(side.problems) > 1 else ""
            out.append(f"the {name} has {len(side.problems)} unreadable line(s), set aside: {side.problems[0][:200]}"
                       f"{more}; what they held counts as missing")
    drift = noise.calibration_drift(result.base.device, result.new.device)
    if drift is not None and abs(drift) > rules.calibration_tolerance:
        out.append(f"the machines differ: the new run's matmul calibration is {drift:+.0%} from the base's "
                   f"(warning beyond +-{rules.calibration_tolerance:.0%}); timings moved by the machine, not the code")
    elif drift is None and (result.base.device or result.new.device):
        out.append("one side records no machine calibration (device.json): machine drift cannot be told apart")
    return out


ORDER = ("broken", "missing", "regression", "changed", "inconclusive", "added", "fixed", "improvement", "same")
COLUMNS = ("case", "metric", "verdict", "base", "new", "change", "p_value", "note")


def rows(result: Comparison, everything: bool = False) -> list[dict[str, Any]]:
    """One row per verdict, failures first; unchanged metrics only with ``everything``."""
    vs = [v for v in result.verdicts if everything or v.verdict != "same"]
    vs.sort(key=lambda v: (ORDER.index(v.verdict), v.case, v.metric))
    out = []
    for v in vs:
        d = v.as_dict()
        if v.change is not None and METRICS.get(base_name(v.metric)).kind != "exact":
            d["change"] = f"{v.change:+.1%}"
        d["verdict"] = v.verdict + (" (allowed)" if v.allowed and v.verdict in FAILING else "")
        out.append(d)
    return out


def summary(result: Comparison) -> str:
    counts = result.counts()
    parts = ", ".join(f"{counts[k]} {k}" for k in ORDER if counts.get(k))
    cases = len({v.case for v in result.verdicts})
    verdict = "REGRESSION" if result.failed else "no regression"
    return f"{verdict}: {cases} case(s) compared; {parts or 'nothing to compare'}"


def markdown(result: Comparison, everything: bool = False) -> str:
    """For ``$GITHUB_STEP_SUMMARY`` and pull-request comments."""
    ea, eb = environment(result.base), environment(result.new)
    lines = [f"### diffbench compare: {summary(result)}", "",
             f"base: `{result.base.source}` ({ea['commit']}, {ea['device_name']}, torch {ea['torch_version']})  ",
             f"new: `{result.new.source}` ({eb['commit']}, {eb['device_name']}, torch {eb['torch_version']})", ""]
    lines += [f"- **warning**: {w}" for w in result.warnings] + ([""] if result.warnings else [])
    table = rows(result, everything)
    if table:
        lines += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        for r in table:
            cells = ["" if r.get(c) is None else f"{r[c]:.4g}" if isinstance(r.get(c), float) else str(r[c])
                     for c in COLUMNS]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def github_benchmark(side: Side) -> dict[str, list[dict[str, Any]]]:
    """github-action-benchmark's ``customSmallerIsBetter`` / ``customBiggerIsBetter`` entries of one side."""
    out: dict[str, list[dict[str, Any]]] = {"customSmallerIsBetter": [], "customBiggerIsBetter": []}
    for c in side.cases.values():
        for m, r in c.metrics.items():
            spec = METRICS.get(base_name(m)) if base_name(m) in METRICS else None
            if spec is None or r.value is None or not spec.better:
                continue
            key = "customSmallerIsBetter" if spec.better == "lower" else "customBiggerIsBetter"
            out[key].append({"name": f"{c.label} {m}", "unit": r.unit, "value": r.value})
    return out
