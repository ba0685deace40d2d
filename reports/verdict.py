"""The report's answer, first: which metric heads it, who is best at matched size and per unit of compute, and
whether the differences are beyond the measurements' noise (a head-to-head table of differences with intervals).

Every number here is derived from the records (values and their bootstrap standard errors) by the rules written
below, so a reader can redo it from the comparison tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from diffbench.metrics.specs import MetricKey, is_detector_quality, spec_of

Z95 = 1.959963984540054  # two-sided 95% normal quantile
# with no choice made, the headline is the first of these measured on at least MIN_MODELS backbones: a fixed
# order (not the run's noise), so the headline cannot flip between two runs of one suite
PREFERENCE = ("fid", "kid")
MIN_MODELS = 3
EMBEDDED = ("digits", "shapes")  # detectors trained by scripts/train_detectors.py: their own scale, not Inception's


def backbones(wide: pd.DataFrame) -> pd.DataFrame:
    """Backbone cases that finished: a pipeline's GMACs (one step of every stage) and its denoisers' params are not
    one network's, so pipelines are compared apart."""
    return wide[wide["pipeline"].isna() & (wide["status"] == "ok")]


def headline(wide: pd.DataFrame, fixed: str = "") -> tuple[str | None, str]:
    """(column, how it was chosen): ``fixed`` (the suite's ``[report] metric`` or the caller's) when given — a base
    name takes the run's detector — else the first of PREFERENCE measured on MIN_MODELS backbones or more."""
    df = backbones(wide)
    measured = [c for c in df.columns if isinstance(c, str) and is_detector_quality(c) and df[c].notna().any()]
    if fixed:
        key = MetricKey.parse(fixed)
        hits = [c for c in measured if c == fixed or (not key.qualifier and MetricKey.parse(c).base == key.base)]
        if hits:
            return max(hits, key=lambda c: (df[c].notna().sum(), c)), "fixed by the suite"
        return None, f"the suite fixes {fixed}, which no backbone in this run measured"
    for base in PREFERENCE:
        for c in sorted(measured):
            if MetricKey.parse(c).base == base and df[c].notna().sum() >= MIN_MODELS:
                return c, f"the first of {', '.join(PREFERENCE)} measured on {MIN_MODELS} or more models"
    if "paper_fid" in df and df["paper_fid"].notna().sum() >= MIN_MODELS:
        return "paper_fid", "reported by the paper, beside measured GMACs"
    two = sorted(c for c in measured if df[c].notna().sum() >= 2)
    return (two[0], "measured on two models: too few for a scaling fit") if two else (None, "")


def scale_note(column: str) -> str:
    det = MetricKey.parse(column).qualifier
    if det.split(":")[-1] in EMBEDDED:
        return (f"{MetricKey.parse(column).header()} uses diffbench's embedded '{det}' detector: its FID and KID are "
                "on that detector's own scale, comparable within this report and with runs on the same detector, "
                "never with published (Inception) numbers.")
    return ""


@dataclass(frozen=True)
class Estimate:
    value: float
    se: float | None  # the bootstrap standard error its record carries, or one read from its 95% interval

    def interval(self) -> tuple[float, float] | None:
        return None if self.se is None else (self.value - Z95 * self.se, self.value + Z95 * self.se)


def _estimate(row: pd.Series, column: str) -> Estimate:
    se = row.get(f"{column} se")
    if se is None or pd.isna(se):
        lo, hi = row.get(f"{column} ci_lo"), row.get(f"{column} ci_hi")
        se = (hi - lo) / (2 * Z95) if lo is not None and hi is not None and pd.notna(lo) and pd.notna(hi) else None
    return Estimate(float(row[column]), None if se is None else float(se))


def _size(by: str, budget: float) -> str:
    return f"{budget / 1e6:.4g}M params" if by == "params" else f"{budget:.4g} {by}"


def matched_groups(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Systems compared head to head: those sized to one target (params or GMACs; two or more of them), or, where
    no target groups two, every backbone of the run (a two-model run compares its two)."""
    sized = df.dropna(subset=["matched_by", "budget"]) if "matched_by" in df else df.iloc[:0]
    out = [(_size(str(g["matched_by"].iloc[0]), float(g["budget"].iloc[0])), g)
           for _, g in sized.groupby(["matched_by", "budget"], sort=True) if len(g) >= 2]
    if not out and len(df) >= 2:
        out = [("all models", df)]
    return out


def head_to_head(wide: pd.DataFrame, column: str) -> pd.DataFrame | None:
    """Each system against the best at its matched size: the difference in ``column`` (other minus best) and its
    95% interval, normal from the two values' bootstrap standard errors taken as independent. They share the
    reference set, so the true interval is narrower: a difference called beyond noise here is beyond it."""
    better = direction(column)
    df = backbones(wide).dropna(subset=[column])
    rows = []
    for size, g in matched_groups(df):
        g = g.sort_values(column, ascending=better == "lower", kind="stable")
        best = g.iloc[0]
        b = _estimate(best, column)
        for _, other in g.iloc[1:].iterrows():
            o = _estimate(other, column)
            d = o.value - b.value
            se = math.hypot(b.se, o.se) if b.se is not None and o.se is not None else None
            ci = f"[{d - Z95 * se:+.4g}, {d + Z95 * se:+.4g}]" if se is not None else "n/a (no interval recorded)"
            beyond = "n/a" if se is None else ("yes" if abs(d) > Z95 * se else "no")
            rows.append({"matched size": size, "best": best["label"], "other system": other["label"],
                         f"best's {MetricKey.parse(column).header()}": b.value, "other's": o.value,
                         "difference (other - best)": d, "difference 95% CI": ci, "beyond noise": beyond})
    return pd.DataFrame(rows) if rows else None


def direction(column: str) -> str:
    """Which way is better for a quality column: the registry's word (a paper's FID, not a recorded metric, is
    lower-better; the former name-based rule called it higher-better)."""
    return "lower" if column == "paper_fid" else (spec_of(column).better or "lower")


def _value(e: Estimate) -> str:
    iv = e.interval()
    return f"{e.value:.4g}" + (f" [{iv[0]:.4g}, {iv[1]:.4g}]" if iv else "")


def at_matched_size(wide: pd.DataFrame, column: str, h2h: pd.DataFrame | None) -> list[str]:
    """One sentence per matched size: its best system with its interval, and whether the runner-up is beyond
    noise."""
    df = backbones(wide).dropna(subset=[column])
    out = []
    for size, g in matched_groups(df):
        g = g.sort_values(column, ascending=direction(column) == "lower", kind="stable")
        best, second = g.iloc[0], g.iloc[1]
        row = None if h2h is None else h2h[(h2h["matched size"] == size) & (h2h["other system"] == second["label"])]
        said = {"yes": "beyond noise", "no": "within noise", "n/a": "no interval to tell"}
        verdict = "" if row is None or row.empty else said[row.iloc[0]["beyond noise"]]
        ahead = f"ahead of {second['label']} ({_value(_estimate(second, column))}; {verdict})"
        out.append(f"At {size}, {best['label']} is best: {_value(_estimate(best, column))}, {ahead}.")
    return out


def per_compute(wide: pd.DataFrame, column: str) -> str:
    """The systems on the Pareto front of ``column`` against GMACs per network evaluation (no cheaper system is
    better): the answer per unit of compute, read off the measured points without a fitted law."""
    df = backbones(wide).dropna(subset=[column, "gmacs"]).sort_values(["gmacs", column], kind="stable")
    if len(df) < 2:
        return ""
    lower = direction(column) == "lower"
    front, best = [], np.inf
    for _, r in df.iterrows():
        v = r[column] if lower else -r[column]
        if v < best:
            best = v
            front.append(f"{r['label']} ({r['gmacs']:.3g} GMACs, {r[column]:.4g})")
    return ("Per unit of compute (GMACs per network evaluation), the systems no cheaper one beats: "
            + ", ".join(front) + ".")
