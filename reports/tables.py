"""Tables like the DiT paper's: a matched-size comparison and the model-size x patch-size grid."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

from diffbench.metrics import specs

IDENTITY_COLUMNS = [("label", "model", None), ("family", "family", None), ("batch_size", "batch", None),
                    ("precision", "precision", None)]
# what the papers report, shown after the measured metric it is compared with
REFERENCES = {"params": ("paper_params", "paper params (M)", 1e-6), "gmacs": ("paper_gflops", "paper Gflops", 1.0)}
FINAL = [("paper_fid", "paper FID", 1.0)]


def _comparison_columns() -> list[tuple[str, str, float | None]]:
    """(column of the wide frame, header, scale): identity, then every metric with a report column in the
    metric registry (in its order), each paper reference beside its metric."""
    out: list[tuple[str, str, float | None]] = list(IDENTITY_COLUMNS)
    for metric, header, scale in specs.columns():
        out.append((metric, header, scale))
        if metric in REFERENCES:
            out.append(REFERENCES[metric])
    return out + FINAL


def _by_detector(column: object) -> bool:
    """One column per detector for the metrics qualified by their detector (``fid[digits]``)."""
    if not isinstance(column, str):
        return False
    key = specs.MetricKey.parse(column)
    return bool(key.qualifier) and key.base in specs.qualified(qualifier="detector")


def comparison(wide: pd.DataFrame, reasons: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The per-case table; columns with no value anywhere are dropped and their reason returned."""
    measured = set(reasons) | set(wide.columns)
    cols = [(c, h, s) for c, h, s in _comparison_columns() if c in measured]
    wide = wide.assign(**{c: np.nan for c, _, _ in cols if c not in wide.columns})
    # one column per detector: FIDs from different detectors never share a column
    qualified = [c for c in sorted(wide.columns) if _by_detector(c)]
    cols += [(c, specs.MetricKey.parse(c).header(), 1.0) for c in qualified]
    out = pd.DataFrame({h: wide[c] * s if s not in (None, 1.0) else wide[c] for c, h, s in cols})
    for c in qualified + ["clip_score"]:  # a quality number's 95% interval, where its record has one
        if f"{c} ci_lo" in wide:
            head = specs.MetricKey.parse(c).header() if c != "clip_score" else "CLIP score"
            out[f"{head} 95% CI"] = [f"[{lo:.4g}, {hi:.4g}]" if pd.notna(lo) else None
                                     for lo, hi in zip(wide[f"{c} ci_lo"], wide[f"{c} ci_hi"], strict=True)]
    out = out[wide["status"] == "ok"].reset_index(drop=True)
    dropped = {}
    for c, h, _ in cols:
        if h in out and out[h].isna().all():
            default = "no preset with reported numbers in this run" if c.startswith("paper_") else "not measured"
            dropped[h] = reasons.get(c, default)
            out = out.drop(columns=h)
    return out, dropped


DIT_NAME = re.compile(r"^DiT-(S|B|L|XL)/(\d+)$")


def dit_grid(wide: pd.DataFrame, value: str) -> pd.DataFrame | None:
    """Table 4's layout: rows S/B/L/XL, columns patch 8/4/2, cells ``value`` (e.g. gmacs, paper_fid)."""
    if value not in wide.columns:
        return None
    rows: dict[str, dict[str, float]] = {}
    for label, v in zip(wide["label"], wide[value], strict=True):
        m = DIT_NAME.match(str(label))
        if m and pd.notna(v):
            rows.setdefault(m.group(1), {})[f"/{m.group(2)}"] = v
    if not rows:
        return None
    sizes = [s for s in ("S", "B", "L", "XL") if s in rows]
    patches = sorted({p for r in rows.values() for p in r}, key=lambda p: -int(p[1:]))
    return pd.DataFrame([[rows[s].get(p, np.nan) for p in patches] for s in sizes],
                        index=pd.Index([f"DiT-{s}" for s in sizes], name="model"), columns=patches)


def pipelines(wide: pd.DataFrame) -> pd.DataFrame | None:
    """One row per pipeline case: its counts, time per image with and without guidance, and by component."""
    rows = wide[wide["pipeline"].notna() & (wide["status"] == "ok")]
    if rows.empty:
        return None
    cols = [(c, h, s) for c, h, s in [("label", "pipeline", None), *specs.columns("pipeline_column")]
            if c in rows.columns]
    components = [specs.MetricKey.parse(c) for c in rows.columns if isinstance(c, str)]
    cols += [(str(k), "ms/image " + k.qualifier, 1.0) for k in components
             if k.base == "component_ms_per_image" and k.qualifier]
    out = pd.DataFrame({h: rows[c] * s if s not in (None, 1.0) else rows[c] for c, h, s in cols})
    return out.dropna(axis=1, how="all").reset_index(drop=True)


def failures(wide: pd.DataFrame) -> pd.DataFrame:
    f = wide[wide["status"] != "ok"]
    return f[["label", "batch_size", "precision", "status", "error"]].reset_index(drop=True)


def to_markdown(df: pd.DataFrame, index: bool = False) -> str:
    d = df.reset_index() if index else df

    def cell(v: object) -> str:
        if isinstance(v, float):
            if np.isnan(v):
                return "-"
            return f"{v:.4g}" if abs(v) < 1e5 else f"{v:,.0f}"
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, d.columns)) + " |"
    sep = "|" + "|".join("---" for _ in d.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in d.itertuples(index=False)]
    return "\n".join([head, sep, *body])
