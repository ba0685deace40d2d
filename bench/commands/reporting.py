"""``diffbench report RUN_DIR``: every table and plot from records.jsonl, without running a model."""

from __future__ import annotations

import argparse

from bench.cli import arg, command
from bench.errors import ConfigError


@command(
    "report",
    help="regenerate tables, fits, plots and the markdown/HTML report of a run from its records alone",
    examples=["diffbench report runs/smoke", "diffbench report runs/dit --out paper/ --format md,tex",
              "diffbench report runs/partial-run --format html"],
    args=[arg("run_dir", metavar="RUN_DIR", help="a directory written by 'diffbench run' (partial runs work)"),
          arg("--out", help="output directory (default: RUN_DIR/report)"),
          arg("--format", default="md,html,csv,tex", help="comma-separated: md, html, csv, tex (default: all)")],
)
def run_report(args: argparse.Namespace) -> int:
    import sys

    from reports.load import load_run
    from reports.report import FORMATS, build

    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"--format {args.format!r}: expected a comma-separated subset of {', '.join(FORMATS)}")
    run = load_run(args.run_dir)  # validates and reports unreadable lines before any work
    for p in run.problems:
        print(f"diffbench: warning: {p}", file=sys.stderr)
    out = args.out or f"{args.run_dir.rstrip('/')}/report"
    written = build(args.run_dir, out, formats)
    print(f"{len(written)} file(s) written to {out}")
    return 0
