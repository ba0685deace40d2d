"""History: several runs of one suite (a directory of run directories) as series over commits.

``diffbench report DIR`` on a directory whose sub-directories are runs orders them by when they ran
(the first record's ``started_at``; in CI that is commit order), draws each metric over the runs with
its spread (p10-p90 of the raw samples where they exist), and marks the runs where a change-point test
says the metric moved: binary segmentation, each split tested with a one-sided Mann-Whitney U over the
raw samples of the runs before and after (Bonferroni over the candidate splits), kept only where the
medians also differ by more than the practical threshold (5%, as ``compare``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from diffbench.core.errors import BadInputError
from diffbench.core.files import atomic_path, write_text_atomic
from diffbench.metrics.specs import METRICS, MetricKey, base_name
from diffbench.reports.baseline import Side, load_side
from diffbench.reports.tables import to_markdown

THRESHOLD, ALPHA = 0.05, 0.05


@dataclass
class Point:
    run: str
    commit: str
    value: float
    samples: list[float] = field(default_factory=list)


@dataclass
class Series:
    case: str
    metric: str
    points: list[Point]
    changes: list[int] = field(default_factory=list)  # index of the first run after each change


def runs_in(directory: str | Path) -> list[tuple[str, Side]]:
    """The run directories under ``directory`` that hold records, oldest first."""
    d = Path(directory)
    found = sorted(p for p in d.iterdir() if (p / "records.jsonl").is_file()) if d.is_dir() else []
    if len(found) < 2:
        raise BadInputError(f"{d}: a history needs at least two run directories (each with records.jsonl) inside")
    sides = [(p.name, load_side(p)) for p in found]

    def started(side: Side) -> str:
        return min(str(c.provenance.get("started_at") or "") for c in side.cases.values())

    return sorted(sides, key=lambda s: started(s[1]))


def series(sides: list[tuple[str, Side]]) -> list[Series]:
    by_key: dict[tuple[str, str], list[Point]] = {}
    for name, side in sides:
        for c in side.cases.values():
            commit = str(c.provenance.get("git_commit") or c.provenance.get("diffbench_version") or "?")[:10]
            for m, r in c.metrics.items():
                if r.value is None or base_name(m) not in METRICS or METRICS.get(base_name(m)).derived_from:
                    continue
                if METRICS.get(base_name(m)).kind in ("status",):
                    continue
                by_key.setdefault((c.label, m), []).append(Point(name, commit, r.value, list(r.samples or [])))
    out = [Series(case, metric, pts) for (case, metric), pts in sorted(by_key.items()) if len(pts) >= 2]
    for s in out:
        s.changes = change_points(s.points)
    return out


def _split_p(before: list[Point], after: list[Point]) -> tuple[float, float]:
    """(p-value of a shift, relative shift of the medians) between two groups of runs."""
    from scipy.stats import mannwhitneyu

    a = [x for p in before for x in (p.samples or [p.value])]
    b = [x for p in after for x in (p.samples or [p.value])]
    ma, mb = statistics.median(a), statistics.median(b)
    shift = mb / ma - 1 if ma else 0.0
    if len(a) < 2 or len(b) < 2 or len(set(a + b)) == 1:
        return (0.0 if ma != mb else 1.0), shift
    return float(mannwhitneyu(b, a, alternative="two-sided").pvalue), shift


def change_points(points: list[Point], offset: int = 0, depth: int = 3) -> list[int]:
    """Binary segmentation: the most significant split of the series, then of each side, ``depth`` levels."""
    if len(points) < 2 or depth == 0:
        return []
    best: tuple[float, int] | None = None
    for k in range(1, len(points)):
        p, shift = _split_p(points[:k], points[k:])
        if abs(shift) > THRESHOLD and p < ALPHA / (len(points) - 1) and (best is None or p < best[0]):
            best = (p, k)
    if best is None:
        return []
    k = best[1]
    return sorted(change_points(points[:k], offset, depth - 1) + [offset + k]
                  + change_points(points[k:], offset + k, depth - 1))


def _moved(s: Series, i: int) -> str:
    before = statistics.median(p.value for p in s.points[:i])
    after = statistics.median(p.value for p in s.points[i:])
    return f"{s.points[i].run} ({s.points[i].commit}): {after / before - 1:+.1%}" if before else s.points[i].run


def table(all_series: list[Series]) -> list[dict[str, Any]]:
    rows = []
    for s in all_series:
        first, last = s.points[0].value, s.points[-1].value
        moves = "; ".join(_moved(s, i) for i in s.changes)
        rows.append({"case": s.case, "metric": s.metric, "runs": len(s.points), "first": first, "last": last,
                     "change points": moves or "-"})
    return rows


def plot(all_series: list[Series], out: Path) -> list[Path]:
    """One figure per metric: each case over the runs, its sample spread shaded, change points marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    files = []
    for metric in sorted({s.metric for s in all_series}):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for s in (s for s in all_series if s.metric == metric):
            xs = list(range(len(s.points)))
            ax.plot(xs, [p.value for p in s.points], marker="o", label=s.case)
            if all(len(p.samples) >= 3 for p in s.points):
                lo = [statistics.quantiles(p.samples, n=10)[0] for p in s.points]
                hi = [statistics.quantiles(p.samples, n=10)[-1] for p in s.points]
                ax.fill_between(xs, lo, hi, alpha=0.2)
            for i in s.changes:
                ax.axvline(i - 0.5, color="red", linestyle="--", linewidth=1)
        runs = next(s for s in all_series if s.metric == metric).points
        ax.set_xticks(range(len(runs)), [p.commit for p in runs], rotation=45, ha="right", fontsize=7)
        spec = METRICS.get(base_name(metric))
        ax.set_title(f"{metric} ({spec.unit}; {spec.better or 'no direction'} is better)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        path = out / f"history_{MetricKey.parse(metric).slug()}.png"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=100, format=path.suffix[1:])
        plt.close(fig)
        files.append(path)
    return files


def build(directory: str | Path, out: str | Path) -> list[Path]:
    """``history.md`` (a row per case and metric, with the runs where it moved) and a plot per metric."""
    all_series = series(runs_in(directory))
    out = Path(out)
    files = plot(all_series, out / "plots")
    text = "# History\n\n" + to_markdown(pd.DataFrame(table(all_series)))
    md = write_text_atomic(out / "history.md",
                           text + "\n\n" + "\n".join(f"![{f.stem}](plots/{f.name})" for f in files) + "\n")
    return [md, *files]
