"""``diffbench run``: expand a suite into cases and run each in its own process."""

from __future__ import annotations

import argparse
import datetime as dt
from collections import Counter
from pathlib import Path

from bench.cli import arg, command
from bench.errors import ConfigError
from bench.formatting import render


@command(
    "run",
    help="run a benchmark suite (a built-in name or a TOML file); records go to RUN_DIR/records.jsonl",
    examples=[
        "diffbench run smoke --out runs/smoke",
        "diffbench run dit-table --device cuda --out runs/dit",
        "diffbench run my_suite.toml --out runs/x --only 'dit*' --dry-run",
        "diffbench run smoke --out runs/smoke --resume",
    ],
    args=[
        arg("suite", metavar="SUITE_OR_PATH", help="built-in suite (see 'diffbench list suites') or a .toml file"),
        arg("--out", help="run directory (default: runs/SUITE-TIMESTAMP)"),
        arg("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)"),
        arg("--resume", action="store_true", help="continue the run in --out: skip complete cases, redo the rest"),
        arg("--dry-run", action="store_true", help="list the cases without running them"),
        arg("--only", metavar="GLOB", help="run only cases whose name matches (comma-separated globs)"),
        arg("--timeout", type=float, metavar="SECONDS", help="per-case timeout (default: the suite's timeout_s)"),
        arg("--no-progress", action="store_true", help="no progress bar"),
    ],
)
def run_suite(args: argparse.Namespace) -> int:
    from bench import suites
    from bench.runner import Runner, select
    from metrics.device import resolve_device

    if args.timeout is not None and args.timeout <= 0:
        raise ConfigError(f"--timeout must be a positive number of seconds, got {args.timeout:g}")
    suite = suites.load(args.suite)
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out, the run directory to continue")
    device = resolve_device(args.device)
    cases = select(suites.expand(suite, device), args.only)
    if args.dry_run:
        rows = [{"name": c.name, "case_id": c.case_id, "family": c.config["model"]["family"],
                 "batch": c.config["batch_size"], "precision": c.config["precision"]} for c in cases]
        print(render(rows, ("name", "case_id", "family", "batch", "precision")))
        print(f"{len(cases)} case(s) on {device}; nothing was run (--dry-run)")
        return 0
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = Path(args.out or f"runs/{suite.name}-{stamp}")
    runner = Runner(suite, cases, run_dir, timeout_s=args.timeout, progress=not args.no_progress)
    try:
        summary = runner.run(resume=args.resume)
    except KeyboardInterrupt:
        print(f"diffbench: interrupted; continue with: diffbench run {args.suite} --out {run_dir} --resume")
        return 130
    counts = Counter(summary.statuses)
    parts = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing to run"
    print(f"{summary.total} case(s), {summary.skipped} already complete; {parts}; "
          f"records: {run_dir / 'records.jsonl'}")
    return 0
