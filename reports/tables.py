"""Tables like the DiT paper's: a matched-size comparison and the model-size x patch-size grid."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

# (column in the wide frame, header, scale) - headers carry their units
COMPARISON = [
    ("label", "model", None), ("family", "family", None), ("batch_size", "batch", None),
    ("precision", "precision", None), ("params", "params (M)", 1e-6), ("paper_params", "paper params (M)", 1e-6),
    ("gmacs", "GMACs", 1.0), ("paper_gflops", "paper Gflops", 1.0), ("throughput_img_s", "images/s", 1.0),
    ("latency_ms", "latency p50 (ms)", 1.0), ("latency_p90_ms", "latency p90 (ms)", 1.0),
    ("peak_mem_allocated_bytes", "peak alloc (MiB)", 1 / 2**20), ("nvml_peak_used_bytes", "NVML peak (MiB)", 1 / 2**20),
    ("cpu_peak_rss_bytes", "peak RSS (MiB)", 1 / 2**20), ("energy_j_per_image", "J/image", 1.0),
    ("mfu", "MFU (%)", 100.0), ("clip_score", "CLIP score", 1.0),
    ("clip_score_shuffled", "CLIP score, shuffled captions", 1.0),
    ("train_loss_last", "final train loss", 1.0), ("paper_fid", "paper FID", 1.0),
]
QUALITY_PREFIXES = ("fid[", "kid[", "sfid[")


def comparison(wide: pd.DataFrame, reasons: dict[str, str]) -> tuple[pd.DataFrame, dict[str, str]]:
    """The per-case table; columns with no value anywhere are dropped and their reason returned."""
    measured = set(reasons) | set(wide.columns)
    cols = [(c, h, s) for c, h, s in COMPARISON if c in measured]
    wide = wide.assign(**{c: np.nan for c, _, _ in cols if c not in wide.columns})
    # one column per detector: FIDs from different detectors never share a column
    cols += [(c, c.replace("[", " (").replace("]", ")"), 1.0) for c in sorted(wide.columns)
             if isinstance(c, str) and c.startswith(QUALITY_PREFIXES)]
    out = pd.DataFrame({h: wide[c] * s if s not in (None, 1.0) else wide[c] for c, h, s in cols})
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


PIPELINE_COLUMNS = [
    ("label", "pipeline", None), ("params", "denoiser params (M)", 1e-6), ("params_all", "params, all (M)", 1e-6),
    ("gmacs", "GMACs/step", 1.0), ("gmacs_per_image", "GMACs/image", 1.0),
    ("latency_per_image_ms", "ms/image (guided)", 1.0), ("latency_per_image_ms_unguided", "ms/image (unguided)", 1.0),
]
COMPONENT_PREFIX = "component_ms_per_image["


def pipelines(wide: pd.DataFrame) -> pd.DataFrame | None:
    """One row per pipeline case: its counts, time per image with and without guidance, and by component."""
    rows = wide[wide["pipeline"].notna() & (wide["status"] == "ok")]
    if rows.empty:
        return None
    cols = [(c, h, s) for c, h, s in PIPELINE_COLUMNS if c in rows.columns]
    cols += [(c, "ms/image " + c[len(COMPONENT_PREFIX):-1], 1.0) for c in rows.columns
             if isinstance(c, str) and c.startswith(COMPONENT_PREFIX)]
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
