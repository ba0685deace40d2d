"""Plots (matplotlib, PNG and SVG): quality vs GMACs, throughput and memory vs params, Pareto front."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from diffbench.core.files import atomic_path  # noqa: E402

plt.rcParams["svg.hashsalt"] = "diffbench"  # deterministic SVG ids: reports regenerate byte for byte


def _save(fig: plt.Figure, out: Path, name: str) -> list[Path]:
    paths = []
    for ext, meta in (("png", {"Software": None}), ("svg", {"Date": None, "Creator": None})):
        p = out / f"{name}.{ext}"
        with atomic_path(p) as tmp:  # a full disk leaves the previous plot, not half of one
            fig.savefig(tmp, dpi=110, bbox_inches="tight", metadata=meta, format=ext)
        paths.append(p)
    plt.close(fig)
    return paths


def _by_family(ax: plt.Axes, df: pd.DataFrame, x: str, y: str, interval: tuple[str, str] | None = None) -> None:
    """One marker series per family; with ``interval`` (the lo and hi columns) each point's 95% interval."""
    from matplotlib.ticker import NullFormatter

    for fam, g in df.groupby("family", sort=True):
        g = g.sort_values(x)
        if interval is not None and g[list(interval)].notna().all().all():
            err = np.vstack([(g[y] - g[interval[0]]).clip(lower=0), (g[interval[1]] - g[y]).clip(lower=0)])
            ax.errorbar(g[x], g[y], yerr=err, marker="o", linestyle="-", lw=0.8, capsize=3, label=str(fam))
        else:
            ax.plot(g[x], g[y], marker="o", linestyle="none", label=str(fam))
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def quality_vs_gmacs(wide: pd.DataFrame, quality: str, out: Path, fit: object | None = None) -> list[Path]:
    bounds = (f"{quality} ci_lo", f"{quality} ci_hi")
    interval = bounds if all(b in wide for b in bounds) else None
    df = wide[["family", "gmacs", quality, *(interval or ())]].dropna(subset=["gmacs", quality])
    fig, ax = plt.subplots(figsize=(5.5, 4))
    _by_family(ax, df, "gmacs", quality, interval)
    if fit is not None and len(df) > 1:
        xs = np.logspace(np.log10(df["gmacs"].min()), np.log10(df["gmacs"].max()), 50)
        ax.plot(xs, fit(xs), "k--", lw=1, label=f"fit: {fit.formula()}")  # type: ignore[operator, attr-defined]
        ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set_xlabel("GMACs per network evaluation")
    ax.set_ylabel(quality)
    ax.set_title(f"{quality} vs compute" + (" (95% intervals)" if interval else ""))
    return _save(fig, out, "quality_vs_gmacs")


def speed_memory_vs_params(wide: pd.DataFrame, out: Path) -> list[Path]:
    paths: list[Path] = []
    mem = next((c for c in ("peak_mem_allocated_bytes", "cpu_peak_rss_bytes") if c in wide and wide[c].notna().any()),
               None)
    for col, label, name in (("throughput_img_s", "images/s", "throughput_vs_params"),
                             (mem, "process peak RSS (MiB)" if mem == "cpu_peak_rss_bytes" else
                              "CUDA allocator peak (MiB)", "memory_vs_params")):
        if col is None or col not in wide or wide[col].isna().all() or "params" not in wide:
            continue
        df = wide[["family", "params", col]].dropna().copy()
        if col == mem:
            df[col] = df[col] / 2**20
        fig, ax = plt.subplots(figsize=(5.5, 4))
        _by_family(ax, df, "params", col)
        ax.set_xlabel("parameters")
        ax.set_ylabel(label)
        ax.set_title(f"{label} vs parameters")
        paths += _save(fig, out, name)
    return paths


def pareto(wide: pd.DataFrame, quality: str, out: Path) -> list[Path]:
    """Quality vs latency, with the Pareto front (lower is better on both axes)."""
    if "latency_per_image_ms" not in wide:  # records older than the per-image latency: median batch latency / batch
        wide = wide.assign(latency_per_image_ms=wide["latency_ms"] / pd.to_numeric(wide["batch_size"]))
    df = wide[["label", "family", "latency_per_image_ms", quality]].dropna().sort_values("latency_per_image_ms")
    if df.empty:
        return []
    front: list[tuple[float, float]] = []
    best = np.inf
    for lat, q in zip(df["latency_per_image_ms"], df[quality], strict=True):
        if q < best:
            best = q
            front.append((lat, q))
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for fam, g in df.groupby("family", sort=True):
        ax.scatter(g["latency_per_image_ms"], g[quality], label=str(fam))
    ax.plot([f[0] for f in front], [f[1] for f in front], "k-", lw=1, label="Pareto front")
    ax.set_xscale("log")
    ax.set_xlabel("latency per image, one network evaluation (ms; median batch latency / batch)")
    ax.set_ylabel(quality)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    return _save(fig, out, "pareto_quality_latency")


def quality_vs_training_compute(curves: list[tuple[str, str, float, list[tuple[float, float, float | None,
                                                                               float | None]]]],
                                quality: str, out: Path) -> list[Path]:
    """DiT's Figure 9: quality against training compute, one curve per model (family, label, size), every size on
    one plot: at equal compute, is the bigger model better? Each point with its 95% interval where recorded."""
    if not curves:
        return []
    fig, ax = plt.subplots(figsize=(6, 4.2))
    families = sorted({f for f, _, _, _ in curves})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    sizes = sorted({s for _, _, s, _ in curves})
    styles = ["-", "--", ":", "-."]
    for fam, label, size, pts in sorted(curves, key=lambda c: (c[0], c[2])):
        x = np.array([p[0] for p in pts])
        y = np.array([p[1] for p in pts])
        lo = np.array([p[2] if p[2] is not None else p[1] for p in pts])
        hi = np.array([p[3] if p[3] is not None else p[1] for p in pts])
        ax.errorbar(x, y, yerr=np.vstack([(y - lo).clip(0), (hi - y).clip(0)]), color=colours[fam],
                    linestyle=styles[sizes.index(size) % len(styles)] if len(sizes) <= 4 else "-",
                    marker="o", ms=3, lw=1, capsize=2, label=label)
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap when the range is under a decade
    ax.set_xlabel("training compute (FLOPs: 3 x forward x images seen)")
    ax.set_ylabel(quality)
    one_point = all(len(pts) == 1 for _, _, _, pts in curves)
    ax.set_title(f"{quality} vs training compute (" + ("each model at its final step)" if one_point else
                                                        "one line per model, scored along training)"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, out, "quality_vs_training_compute")
