"""Tables like the DiT paper's: a matched-size comparison and the model-size x patch-size grid."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from diffbench.metrics import specs
from diffbench.reports import noise

IDENTITY_COLUMNS = [("label", "model", None), ("family", "family", None), ("batch_size", "batch", None),
                    ("precision", "precision", None)]
# what the papers report, shown after the measured metric it is compared with
REFERENCES = {"params": ("paper_params", "paper params (M)", 1e-6), "gmacs": ("paper_gflops", "paper Gflops", 1.0)}
# the comparison, split by concern so that no table is wider than a page: these metrics' columns go to the quality
# and training tables, every other registry column to size and speed
QUALITY = ("cond_gain",)
TRAINING = ("train_steps", "train_flops", "train_loss_last", "train_seconds")
Column = tuple[str, str, "float | None"]


def _by_detector(column: object) -> bool:
    """One column per detector for the metrics qualified by their detector (``fid[digits]``)."""
    key = specs.MetricKey.read(column) if isinstance(column, str) else None
    return key is not None and bool(key.qualifier) and key.base in specs.qualified(qualifier="detector")


def _size_and_speed_columns() -> list[Column]:
    out: list[Column] = list(IDENTITY_COLUMNS)
    for metric, header, scale in specs.columns():
        if metric not in QUALITY + TRAINING and specs.METRICS.get(metric).kind != "quality":
            out.append((metric, header, scale))
            if metric in REFERENCES:
                out.append(REFERENCES[metric])
    return out


def _quality_columns(wide: pd.DataFrame) -> list[Column]:
    """The model, then each quality value with its 95% interval beside it: per detector (FIDs from different
    detectors never share a column), the paper's FID, the condition gain."""
    out: list[Column] = [("label", "model", None)]
    for c in sorted(c for c in wide.columns if _by_detector(c)):
        out.append((c, specs.MetricKey.parse(c).header(), 1.0))
        out.append((f"{c} 95% CI", f"{specs.MetricKey.parse(c).header()} 95% CI", None))
    out.append(("paper_fid", "paper FID", 1.0))
    for metric, header, scale in specs.columns():  # unqualified quality columns (older records) and the gain
        if metric in QUALITY or specs.METRICS.get(metric).kind == "quality":
            out += [(metric, header, scale), (f"{metric} 95% CI", f"{header} 95% CI", scale)]
    return out


def _training_columns() -> list[Column]:
    cols = dict((m, (m, h, s)) for m, h, s in specs.columns() if m in TRAINING)
    out: list[Column] = [("label", "model", None)]
    out += [cols[m] for m in ("train_steps",) if m in cols]
    out += [("train_batch", "train batch", None), ("train_images", "images seen", None)]
    return out + [cols[m] for m in TRAINING[1:] if m in cols]


def _intervals(wide: pd.DataFrame, scales: dict[str, float]) -> pd.DataFrame:
    """``<metric> 95% CI`` columns, "[lo, hi]" (scaled like their value), from the wide frame's ci_lo/ci_hi."""
    out = {}
    for c in wide.columns:
        if isinstance(c, str) and c.endswith(" ci_lo") and f"{c[:-6]} ci_hi" in wide:
            m, k = c[:-6], scales.get(c[:-6], 1.0)
            out[f"{m} 95% CI"] = [f"[{lo * k:.4g}, {hi * k:.4g}]" if pd.notna(lo) and pd.notna(hi) else None
                                  for lo, hi in zip(wide[c], wide[f"{m} ci_hi"], strict=True)]
    return pd.DataFrame(out, index=wide.index)


def _table(wide: pd.DataFrame, cols: list[Column], reasons: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The columns of ``cols`` present in the run; those with no value anywhere are dropped, their reason returned
    (a metric some case recorded as unavailable, or never measured). Identity columns are kept."""
    measured = set(reasons) | set(wide.columns)
    cols = [(c, h, s) for c, h, s in cols if c in measured]
    wide = wide.assign(**{c: np.nan for c, _, _ in cols if c not in wide.columns})
    out = pd.DataFrame({h: wide[c] * s if s not in (None, 1.0) and not c.endswith(" 95% CI") else wide[c]
                        for c, h, s in cols}).reset_index(drop=True)
    dropped = {}
    for c, h, _ in cols:
        if c in ("label", "family", "batch_size", "precision") or c.endswith(" 95% CI"):
            continue
        if out[h].isna().all():
            default = "no preset with reported numbers in this run" if c.startswith("paper_") else "not measured"
            dropped[h] = reasons.get(c, default)
            out = out.drop(columns=h)
    return out.dropna(axis=1, how="all"), dropped


def comparison(wide: pd.DataFrame, reasons: dict[str, str]) -> list[tuple[str, pd.DataFrame, dict[str, str]]]:
    """The per-case comparison of the finished cases in ``wide``, split by concern: (title, table, columns left out
    with their reasons) for size and speed, quality (each value beside its interval) and training budget (steps,
    images seen, FLOPs: what each case's quality was bought with)."""
    ok = wide[wide["status"] == "ok"]
    if "train_steps" in ok and "train_batch" in ok:
        ok = ok.assign(train_images=ok["train_steps"] * pd.to_numeric(ok["train_batch"], errors="coerce"))
    scales = {m: s for m, _, s in specs.columns()}
    ok = pd.concat([ok, _intervals(ok, scales)], axis=1)
    out = []
    for title, cols in (("size and speed", _size_and_speed_columns()), ("quality", _quality_columns(ok)),
                        ("training budget", _training_columns())):
        if title == "training budget" and ok.get("train_steps", pd.Series(dtype=float)).isna().all():
            continue  # nothing trained: the training batch alone is a setting, not a budget
        table, dropped = _table(ok, cols, reasons)
        if len(table.columns) > 1 or title == "size and speed":
            out.append((title, table, dropped))
    return out


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


def timing_noise(long: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame | None:
    """Per case, how noisy its latency was and the smallest change a rerun of the same design could show
    (reports/noise.py): over its processes where it ran with repetitions, else over one process's samples."""
    rows = []
    lat = long[(long["metric"] == "latency_ms") & (long["status"] == "ok")]
    for label, batch, reps, samples in lat[["label", "batch_size", "repetitions", "samples"]].itertuples(index=False):
        per_process = isinstance(reps, list) and len(reps) >= 2
        vals = [float(x) for x in (reps if per_process else samples if isinstance(samples, list) else [])]
        n = noise.noise(vals, per_process)
        if n is None:
            continue
        seen = noise.detectable(vals, vals, alpha)
        rows.append({"model": label, "batch": batch, "timed over": f"{n.n} {'processes' if per_process else 'samples'}",
                     "spread (max / min)": n.spread,
                     "smallest change a rerun could show": "none" if math.isinf(seen) else f"+-{seen:.1%}"})
    return pd.DataFrame(rows) if rows else None


def failures(wide: pd.DataFrame) -> pd.DataFrame:
    f = wide[wide["status"] != "ok"]
    return f[["label", "batch_size", "precision", "status", "error"]].reset_index(drop=True)


def number(v: float) -> str:
    """A table's number: 4 significant digits; a whole number under ten million in full (steps, images seen);
    anything larger in exponent form (FLOPs), never a 15-digit run of digits."""
    if np.isnan(v):
        return "-"
    if float(v).is_integer() and abs(v) < 1e7:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def to_markdown(df: pd.DataFrame, index: bool = False) -> str:
    d = df.reset_index() if index else df

    def cell(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return number(float(v))
        return str(v).replace("|", "\\|")

    head = "| " + " | ".join(map(str, d.columns)) + " |"
    sep = "|" + "|".join("---" for _ in d.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in d.itertuples(index=False)]
    return "\n".join([head, sep, *body])
