"""The report: tables, fits, plots, provenance and failed cases from ``records.jsonl`` alone.

Deterministic: the same records give the same files byte for byte (no timestamps, no paths,
sorted rows, fixed plot metadata), so a copied run directory reproduces its report.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from diffbench.core.files import output_dir, write_text_atomic
from diffbench.metrics.specs import MetricKey, is_detector_quality
from diffbench.reports import plots, tables, verdict
from diffbench.reports.fits import PowerLaw, best_power_law, correlation, fit_family, fixed_effects_slope
from diffbench.reports.load import RunData, load_run, unavailable_reasons

FORMATS = ("md", "html", "csv", "tex")


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None
    index: bool = False
    images: list[Path] = field(default_factory=list)
    name: str = ""  # its table's file name (without the order prefix); from the title when empty
    bullets: list[str] = field(default_factory=list)  # a short list after the text (the summary's findings)

    @property
    def stem(self) -> str:
        return self.name or "".join(c if c.isalnum() else "_" for c in self.title.lower()).strip("_")


def _backbones(wide: pd.DataFrame) -> pd.DataFrame:
    """Backbone cases only (failed ones kept, for their status): pipelines are compared apart."""
    return wide[wide["pipeline"].isna()]


def _fit_section(wide: pd.DataFrame, quality: str, origin: str) -> tuple[Section, PowerLaw]:
    df = _backbones(wide)[["family", "gmacs", "params", quality]].dropna()
    best, fits = best_power_law(df["gmacs"], df[quality])
    # one exponent interval per table: here over the models (resampled), in 'Scaling by family' over each family's
    # points' measurement intervals; per-family rows here would give the same exponent a second interval
    rows = [{"models": "all", "law": "floored" if f.floor else "power", "formula": f.formula(), "exponent": f.b,
             "exponent 95% CI (resampling models)": f"[{f.b_ci[0]:.3f}, {f.b_ci[1]:.3f}]", "AIC": f.aic,
             "LOO RMSE (log)": f.loo_rmse, "chosen": "yes" if f is best else ""} for f in fits]
    text = f"{quality} ({origin}) against GMACs over {len(df)} models, all families pooled. "
    if len(df) >= 4:  # a correlation's interval needs n - 3 > 0
        cg = correlation(np.log10(df["gmacs"]), df[quality])
        cp = correlation(np.log10(df["params"]), df[quality])
        text += (f"Pearson r(log10 GMACs, {quality}) = {cg.pearson:.3f} [{cg.pearson_ci[0]:.3f}, "
                 f"{cg.pearson_ci[1]:.3f}], Spearman {cg.spearman:.3f} [{cg.spearman_ci[0]:.3f}, "
                 f"{cg.spearman_ci[1]:.3f}]; r(log10 params, {quality}) = {cp.pearson:.3f} "
                 f"[{cp.pearson_ci[0]:.3f}, {cp.pearson_ci[1]:.3f}]. ")
    else:
        text += "Too few models for a correlation with an interval (4 or more are needed). "
    text += ("Quality improves with compute in the fit (negative exponent)." if best.b < 0 and best.b_ci[1] < 0 else
             "The fit does NOT show quality improving with compute at 95% confidence.")
    text += (" Each family's own exponent, with its interval over its points' measurement noise, is in 'Scaling by "
             "family'.")
    return Section("Scaling fit", text, pd.DataFrame(rows)), best


def _curves(run: RunData, quality: str) -> list[tuple[str, str, float, list[tuple[float, float, Any, Any]]]]:
    """(family, label, params, points) for each backbone case whose quality record has a curve along training,
    else its final point at its training compute (a one-point curve)."""
    long, wide = run.long, _backbones(run.wide).set_index("case_id")
    rows = long[(long["metric_key"] == quality) & long["case_id"].isin(wide.index) & long["value"].notna()]
    flops: dict[str, float] = {str(c): float(v) for c, v in
                               long.loc[long["metric"] == "train_flops", ["case_id", "value"]].itertuples(index=False)
                               if pd.notna(v)}
    params: dict[str, float] = {str(c): float(v) for c, v in wide.get("params", pd.Series(dtype=float)).items()
                                if pd.notna(v)}
    out: list[tuple[str, str, float, list[tuple[float, float, Any, Any]]]] = []
    for case_id, family, label, value, lo, hi, curve in rows[["case_id", "family", "label", "value", "ci_lo", "ci_hi",
                                                               "curve"]].itertuples(index=False):
        pts: Any = curve
        if not pts and str(case_id) in flops:
            pts = [(flops[str(case_id)], float(value), lo, hi)]
        if pts:
            out.append((str(family), str(label), params.get(str(case_id), 0.0), list(pts)))
    return out


def _family_section(wide: pd.DataFrame, quality: str, ignored: dict[str, str]) -> tuple[Section | None, str]:
    """DiT's view within each family: does the quality metric improve with compute, beyond the noise of its own
    measurements? One exponent per family (its interval from the points' own uncertainty), monotonicity shown
    explicitly, and one exponent shared by all families with a fixed offset each."""
    better = verdict.direction(quality)
    se_col = f"{quality} se"
    cols = ["family", "label", "gmacs", quality] + [c for c in (se_col, "cond_gain") if c in wide]
    df = _backbones(wide)[cols].dropna(subset=["gmacs", quality])
    df = df[(df["gmacs"] > 0) & (df[quality] > 0)]
    rows, sentences, fams = [], [], []
    for fam, g in df.groupby("family", sort=True):
        if g["gmacs"].nunique() < 2:
            continue
        g = g.sort_values("gmacs")
        f = fit_family(str(fam), g["gmacs"], g[quality], g.get(se_col), better)
        fams.append(f)
        values = " -> ".join(f"{v:.4g}" for v in g[quality])
        rows.append({"family": fam, "sizes": len(g), f"{quality} (small -> large)": values, "exponent": f.b,
                     "exponent 95% CI (measurement noise)": f"[{f.b_ci[0]:+.3f}, {f.b_ci[1]:+.3f}]",
                     "improves at every step": "yes" if f.monotone else "no",
                     "supports scaling": "yes" if f.supports else "no"})
        if "cond_gain" in g and g["cond_gain"].notna().any():
            rows[-1]["condition gain (small -> large)"] = " -> ".join(
                "n/a" if pd.isna(v) else f"{100 * v:.1f}%" for v in g["cond_gain"])
        sentences.append(f.sentence(quality, better))
    if not fams:
        return None, ""
    text = (" ".join(sentences) + _unlearned_conditions(df, [f for f in fams if f.family not in ignored])
            + "".join(" " + s for s in ignored.values()))
    n_ok = sum(f.supports for f in fams)
    scaling = (f"{n_ok} of {len(fams)} families show {quality} improving with compute beyond their measurements' "
               f"noise{' (' + ', '.join(f.family for f in fams if f.supports) + ')' if 0 < n_ok < len(fams) else ''}.")
    text += " " + scaling
    if len(fams) > 1 and len(df) > len(fams) + 1:
        b, (lo, hi) = fixed_effects_slope(df["gmacs"], df[quality], df["family"],
                                          df.get(se_col))
        text += (f" Shared exponent with one offset per family (fixed effects): {b:+.3f} [{lo:+.3f}, {hi:+.3f}] (95%"
                 ", over the points' uncertainty).")
    if se_col not in df:
        text += " The records carry no intervals for this metric: each point is given a 5% uncertainty."
    text += _best_against_floor(wide, quality)
    return Section("Scaling by family", text, pd.DataFrame(rows)), scaling


UNLEARNED = 0.25  # a family whose condition gain stays under this fraction of the best family's at every size


def _unlearned_conditions(df: pd.DataFrame, fams: list[Any]) -> str:
    """A sentence for each family that does not show scaling and has barely learned to use its condition (its gain
    under a quarter of the best family's at every size): its sizes differ in how far training got, not in
    capacity, and a longer budget is what would show its scaling."""
    if "cond_gain" not in df or df["cond_gain"].notna().sum() == 0:
        return ""
    best = df.groupby("family")["cond_gain"].max()
    top_family, top = str(best.idxmax()), float(best.max())
    if not top > 0:
        return ""
    out = ""
    for f in fams:
        gain = float(best.get(f.family, np.nan))
        if f.supports or not np.isfinite(gain) or gain >= UNLEARNED * top:
            continue
        out += (f" {f.family} has barely learned to use its condition: it lowers the denoising loss by at most "
                f"{100 * gain:.1f}%, against {100 * top:.1f}% for {top_family}; its sizes differ in how far training "
                "got rather than in capacity, and a longer training budget is what would show its scaling.")
    return out


def _ignored_conditions(df: pd.DataFrame) -> dict[str, str]:
    """The families whose condition lowers the denoising loss beyond noise at none of their sizes (every condition
    gain's 95% interval reaches zero, or with no interval every gain is at most zero), and a sentence for each: a
    family that ignores its class or caption, or has not trained long enough to read it, is scored on samples that
    are in effect unconditional. Said in the summary too: it may be a fault of the family."""
    if "cond_gain" not in df:
        return {}
    lo = df["cond_gain ci_lo"] if "cond_gain ci_lo" in df else df["cond_gain"]
    rows = df.assign(_lo=lo).dropna(subset=["cond_gain"])
    out: dict[str, str] = {}
    for fam, g in rows.groupby("family", sort=True):
        if (g["_lo"].fillna(g["cond_gain"]) > 0).any():
            continue
        out[str(fam)] = (f"{fam} does not use its condition: at none of its {len(g)} size(s) does the condition "
                         f"lower its denoising loss beyond noise (gain at most {100 * float(g['cond_gain'].max()):.2f}"
                         "%). Either its network drops the label or caption (a fault of the family), or it has not "
                         "trained long enough to read it; its samples are in effect unconditional.")
    return out


def _best_against_floor(wide: pd.DataFrame, quality: str) -> str:
    """The best backbone's FID beside the floor at its own sample count (real images against the reference), the
    FID of the fitted metric's detector, whether the fit is on FID or on KID."""
    key = MetricKey.parse(quality)
    if not is_detector_quality(quality):
        return ""
    fid, floor = str(key.with_base("fid")), str(key.with_base("fid_real"))
    if fid not in wide or floor not in wide:
        return ""
    rows = _backbones(wide).dropna(subset=[fid, floor])
    if rows.empty:
        return ""
    best = rows.sort_values(fid, kind="stable").iloc[0]
    value, floor_value = float(best[fid]), float(best[floor])
    return (f" Best {fid}: {value:.4g} ({best['label']}); as many real images against the reference score "
            f"{floor_value:.4g} (the floor of FID's small-sample bias at that sample count), "
            f"{value / floor_value:.1f}x that floor.")


def _provenance(run: RunData) -> Section:
    p = run.provenance
    facts = ", ".join(f"{k}={v}" for k, v in sorted(run.device.items()))
    runs = ", ".join(sorted(run.long["run_id"].unique()))
    return Section("Provenance", f"suite {run.long['suite'].iloc[0]}; runs {runs}; "
                   f"git {p.get('git_commit')} (dirty: {p.get('git_dirty')}); "
                   f"diffbench {p.get('diffbench_version')}; "
                   f"torch {p.get('torch_version')} (CUDA {p.get('cuda_version')}, driver "
                   f"{p.get('driver_version')}); Python {p.get('python_version')}; device {p.get('device_name')}; "
                   f"host {p.get('host')}. Device facts: {facts or 'not recorded'}.")


PIPELINES_NOTE = ("Denoiser params count every stage, expert and prior (text encoders and autoencoders apart, in "
                  "'params, all'); GMACs/step is one step of every stage; GMACs/image the whole sample (denoisers x "
                  "steps x guidance passes, text encoders and decoder once). Time per image by component, guided "
                  "sampling. Pipelines are compared apart from backbones and left out of the scaling fit (their "
                  "GMACs are not one network's).")
TITLES = {"size and speed": "Size and speed", "quality": "Quality (95% intervals beside their values)",
          "training budget": "Training budget"}


def _comparison(wide: pd.DataFrame, reasons: dict[str, str], pipelines: bool) -> list[Section]:
    """The per-case tables, split by concern; the pipelines' own size-and-speed table replaces the backbones'."""
    rows = wide[wide["pipeline"].notna() if pipelines else wide["pipeline"].isna()]
    out = []
    for concern, table, dropped in tables.comparison(rows, reasons) if not rows.empty else []:
        if pipelines and concern == "size and speed":
            pipes = tables.pipelines(wide)
            if pipes is not None:
                out.append(Section("Pipelines: size and speed", PIPELINES_NOTE, pipes, name="pipelines"))
            continue
        note = "; ".join(f"{h}: {r}" for h, r in dropped.items())
        text = ("One row per finished case." + (" Training budget: what each case's quality was bought with; images "
                "seen = steps x train batch; FLOPs = 3 x forward FLOPs x images seen." if concern == "training budget"
                else "") + (f" Columns left out, with the reason: {note}." if note else ""))
        title = TITLES[concern]
        out.append(Section(f"Pipelines: {title[0].lower()}{title[1:]}" if pipelines else title, text, table,
                           name=("pipelines_" if pipelines else "") + concern.replace(" ", "_")))
    return out


def _grids(wide: pd.DataFrame) -> list[Section]:
    """DiT's grids (measured GMACs, and the paper's Gflops and FID) where there are any."""
    out = []
    for value, title in (("gmacs", "DiT grid: GMACs (measured)"), ("paper_gflops", "DiT grid: Gflops (paper)"),
                         ("paper_fid", "DiT grid: FID-50K (paper)")):
        grid = tables.dit_grid(wide, value)
        if grid is not None:
            out.append(Section(title, "", grid, index=True))
    return out


def _summary(wide: pd.DataFrame, quality: str | None, origin: str, scaling: str,
             ignored: dict[str, str]) -> list[Section]:
    """The answer first: the headline metric and why, who is best at matched size and per unit of compute, whether
    that is beyond noise (the head-to-head table), and whether quality improves with size."""
    if quality is None:
        why = f" ({origin})" if origin else ""
        return [Section("Summary", "No quality metric was measured on two or more backbones" + why + ": this run "
                        "compares size and speed only (tables below).")]
    h2h = verdict.head_to_head(wide, quality) if quality != "paper_fid" else None
    hint = "" if origin.startswith("fixed") else "; a suite fixes it with [report] metric, report --metric overrides"
    head = (f"Headline metric: {MetricKey.parse(quality).header()}, {verdict.direction(quality)} is better "
            f"({origin}{hint}). Intervals are 95%. " + (verdict.scale_note(quality) if quality != "paper_fid" else ""))
    found = verdict.at_matched_size(wide, quality, h2h) if quality != "paper_fid" else []
    found += [verdict.per_compute(wide, quality), scaling, *ignored.values()]
    out = [Section("Summary", head.strip(), bullets=[f for f in found if f])]
    if h2h is not None:
        out.append(Section("Head to head", "Each system against the best at its matched size. The difference's "
                           "interval takes the two values' bootstrap errors as independent; they share the reference "
                           "images, so it is wider than the truth: 'beyond noise' here is conservative.", h2h))
    return out


def sections(run: RunData, out: Path, metric: str = "") -> list[Section]:
    """The report's sections, in order, from the run's records alone (plots written under ``out/plots``); ``metric``
    fixes the headline quality metric over the suite's choice."""
    wide, reasons = run.wide, unavailable_reasons(run.long)
    quality, origin = verdict.headline(wide, metric or run.choices.get("metric", ""))
    if metric and quality:
        origin = "fixed by --metric"
    imgs_dir = out / "plots"
    imgs_dir.mkdir(parents=True, exist_ok=True)
    images: list[Path] = []
    backbones = _backbones(wide)  # per-network GMACs, latency and throughput: pipelines are not comparable
    ignored = _ignored_conditions(backbones)  # families whose condition never helps: said twice, found once
    analysis: list[Section] = []
    scaling = ""
    if quality and "gmacs" in wide and backbones[quality].notna().sum() >= 3:
        fit, best = _fit_section(wide, quality, origin)
        family, scaling = _family_section(wide, quality, ignored)
        analysis += [fit] + ([family] if family is not None else [])
        images += plots.quality_vs_gmacs(backbones, quality, imgs_dir, best)
        if "latency_ms" in wide:
            images += plots.pareto(backbones, quality, imgs_dir)
    else:
        analysis.append(Section("Scaling fit", "No quality metric with at least 3 models in this run: no fit."))
    secs = _summary(wide, quality, origin, scaling, ignored)
    if run.problems:
        secs.append(Section("Unreadable record lines (skipped)", "; ".join(run.problems)))
    secs += _comparison(wide, reasons, pipelines=False) + _comparison(wide, reasons, pipelines=True)
    secs += _grids(wide) + analysis
    fids = [c for c in backbones.columns if is_detector_quality(c)
            and MetricKey.parse(c).base == "fid" and backbones[c].notna().any()]
    if fids:  # DiT's Figure 9 (FID along training, or each model's final point at its training compute)
        images += plots.quality_vs_training_compute(_curves(run, fids[0]), fids[0], imgs_dir)
    if not backbones.empty:
        images += plots.speed_memory_vs_params(backbones, imgs_dir)
    secs.append(Section("Plots", "", images=[i for i in images if i.suffix == ".png"]))
    timing = tables.timing_noise(run.long)
    if timing is not None:
        secs.append(Section("Timing noise", "How far apart each case's latencies were, and the smallest change a rerun "
                            "of the same design could tell from that noise (one-sided Mann-Whitney at 5%, 80% power; "
                            "reports/noise.py). Samples of one process hide the noise between processes: run with "
                            "repetitions >= 4 to see it.", timing))
    placed = run.long.groupby("case_id", sort=False)[["label", "batch_size", "precision", "where"]].first()
    if set(placed["where"]) - {"local", f"local on {run.provenance.get('host')}"}:  # on workers, jobs or nodes
        secs.append(Section("Where cases ran", "Launcher, worker or job, and node of each case (from its records' "
                            "provenance).", placed.reset_index(drop=True)))
    fails = tables.failures(wide)
    secs.append(Section("Failed cases", "None." if fails.empty else "", None if fails.empty else fails))
    return secs + [_provenance(run)]


def _md(secs: list[Section], out: Path) -> str:
    parts = ["# diffbench report"]
    for s in secs:
        parts.append(f"\n## {s.title}\n")
        if s.text:
            parts.append(s.text + "\n")
        if s.bullets:
            parts.append("\n".join(f"- {b}" for b in s.bullets) + "\n")
        if s.table is not None:
            parts.append(tables.to_markdown(s.table, s.index) + "\n")
        for img in s.images:
            parts.append(f"![{img.stem}]({img.relative_to(out).as_posix()})\n")
    return "\n".join(parts)


def _html(secs: list[Section]) -> str:
    body = ["<h1>diffbench report</h1>"]
    for s in secs:
        body.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            body.append(f"<p>{html.escape(s.text)}</p>")
        if s.bullets:
            body.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in s.bullets) + "</ul>")
        if s.table is not None:
            body.append(s.table.to_html(index=s.index, float_format=tables.number, na_rep="-", border=0))
        for img in s.images:
            data = base64.b64encode(img.read_bytes()).decode()
            body.append(f'<figure><img alt="{img.stem}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{img.stem}</figcaption></figure>")
    # a table wider than the page scrolls inside it (display:block + overflow): the page itself never does
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;} table{border-collapse:collapse;"
             "font-size:13px;display:block;max-width:100%;overflow-x:auto} td,th{padding:3px 8px;"
             "border-bottom:1px solid #ddd;text-align:right}"
             " img{max-width:560px;margin:8px} figure{display:inline-block}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>diffbench report</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def build(run_dir: str | Path, out_dir: str | Path | None = None, formats: tuple[str, ...] = FORMATS,
          metric: str = "") -> list[Path]:
    run = load_run(run_dir)
    out = output_dir(Path(out_dir) if out_dir else Path(run_dir) / "report")
    secs = sections(run, out, metric)
    written = sorted((out / "plots").glob("*"))
    if "md" in formats:
        write_text_atomic(out / "report.md", _md(secs, out))
        written.append(out / "report.md")
    if "html" in formats:
        write_text_atomic(out / "report.html", _html(secs))
        written.append(out / "report.html")
    for i, s in enumerate(t for t in secs if t.table is not None):
        stem = f"{i:02d}_{s.stem}"
        if "csv" in formats:
            write_text_atomic(out / f"{stem}.csv", s.table.to_csv(index=s.index))  # type: ignore[union-attr]
            written.append(out / f"{stem}.csv")
        if "tex" in formats:
            write_text_atomic(out / f"{stem}.tex", s.table.to_latex(index=s.index, float_format="%.4g", na_rep="-"))  # type: ignore[union-attr]
            written.append(out / f"{stem}.tex")
    return written
