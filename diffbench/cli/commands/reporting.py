"""``diffbench report RUN_DIR``: every table and plot from records.jsonl, without running a model."""

from __future__ import annotations

import argparse
from pathlib import Path

import diffbench
from diffbench.cli.app import arg, command
from diffbench.core.errors import ConfigError
from diffbench.core.log import logger


@command(
    "report",
    help="regenerate tables, fits, plots and the markdown/HTML report of a run from its records alone; given a "
         "directory of runs of one suite, their history (each metric over the runs, with change points)",
    examples=["diffbench report runs/smoke", "diffbench report runs/dit --out paper/ --format md,tex",
              "diffbench report runs/partial-run --format html",
              "diffbench report runs/nightly/   (a directory of runs of one suite: their history)"],
    args=[arg("run_dir", metavar="RUN_DIR", help="a directory written by 'diffbench run' (partial runs work)"),
          arg("--out", help="output directory (default: RUN_DIR/report)"),
          arg("--format", default="md,html,csv,tex", help="comma-separated: md, html, csv, tex (default: all)"),
          arg("--metric", default="", help="the headline quality metric: fid or kid (of the run's detector), or a "
                                           "qualified name such as fid[digits] (default: the suite's [report] metric,"
                                           " else the first of fid, kid measured on 3 or more models)")],
)
def run_report(args: argparse.Namespace) -> int:
    from diffbench.reports.history import build
    from diffbench.reports.report import FORMATS

    d = Path(args.run_dir)
    if d.is_dir() and not (d / "records.jsonl").exists() and any(p.is_dir() and (p / "records.jsonl").is_file()
                                                                 for p in d.iterdir()):
        files = build(d, args.out or d / "history")
        print(f"history of the runs in {d}: {len(files)} file(s) written to {files[0].parent}")
        return 0

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"--format {args.format!r}: expected a comma-separated subset of {', '.join(FORMATS)}")
    run = diffbench.load_run(args.run_dir)  # validates and reports unreadable lines before any work
    if run.problems:  # one warning line; the report lists every problem
        more = f" (and {len(run.problems) - 1} more, listed in the report)" if len(run.problems) > 1 else ""
        logger.warning(f"set aside: {' '.join(run.problems[0].split())[:300]}{more}")
    out = args.out or f"{args.run_dir.rstrip('/')}/report"
    written = diffbench.report(run, out, formats, metric=args.metric)
    print(f"{len(written)} file(s) written to {out}")
    return 0
