"""``diffbench run``: expand a suite into cases and run each in its own process."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import diffbench
from diffbench.bench.formatting import render
from diffbench.bench.overrides import parse_assignments
from diffbench.bench.settings import MAX_TIMEOUT_S
from diffbench.cli.app import arg, command, non_negative_int, number, positive_float, positive_int
from diffbench.core.errors import ConfigError


@command(
    "run",
    help="run a benchmark suite (a built-in name or a TOML file); records go to RUN_DIR/records.jsonl",
    examples=[
        "diffbench run smoke --out runs/smoke",
        "diffbench run dit-table --device cuda --out runs/dit",
        "diffbench run my_suite.toml --out runs/x --only 'dit*' --dry-run",
        "diffbench run smoke --out runs/smoke --resume",
        "diffbench run quick --set sweeps.dit.train_steps=100 --set samples=256 --out runs/q",
        "diffbench run matched --devices 0,1,2,3 --out runs/m",
        "diffbench run matched --launcher submitit --partition gpu --gpus-per-case 1 --max-parallel 16 --out runs/m",
        "diffbench run smoke --launcher ray --ray-address auto --out runs/smoke",
    ],
    args=[
        arg("suite", metavar="SUITE_OR_PATH", help="built-in suite (see 'diffbench list suites') or a .toml file"),
        arg("--out", help="run directory (default: runs/SUITE-TIMESTAMP)"),
        arg("--device", default="auto", help="auto, cpu or cuda[:N] (default: auto)"),
        arg("--resume", action="store_true", help="continue the run in --out: skip complete cases, redo the rest"),
        arg("--dry-run", action="store_true", help="list the cases without running them"),
        arg("--only", metavar="GLOB", help="run only cases whose name matches (comma-separated globs)"),
        arg("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
            help="override a suite setting (repeatable): train_steps=100 ([defaults]), sweeps.dit.train_steps=100 "
                 "(a sweep by name or by a family it holds; sweeps.*.KEY: all), report.metric=kid"),
        arg("--timeout", type=number(float, above=0, below=MAX_TIMEOUT_S + 1), metavar="SECONDS",
            help="per-case timeout (default: the suite's timeout_s)"),
        arg("--keep-failed", action="store_true",
            help="with --resume: keep cases that failed (timeout, error, crash, oom) instead of retrying them"),
        arg("--no-progress", action="store_true", help="no progress bar (also with --quiet)"),
        arg("--format", choices=("text", "json"), default="text",
            help="json: the summary as one JSON object on stdout (cases, statuses, records, exit status)"),
        arg("--strict", action="store_true", help="exit 1 when any case of the run did not finish ok (by default "
                                                  "only when none did)"),
        arg("--devices", metavar="LIST",
            help="run one case per device concurrently: CUDA indices (0,1,2,3) or cpu,cpu (two CPU workers)"),
        arg("--launcher", choices=("local", "submitit", "ray"), default="local",
            help="where cases run: this machine (default), a Slurm job array through submitit (its local "
                 "executor where there is no Slurm), or a Ray cluster"),
        arg("--partition", help="submitit: the Slurm partition"),
        arg("--gpus-per-case", type=non_negative_int, metavar="G", help="submitit/ray: GPUs each case's job gets"),
        arg("--cpus-per-case", type=positive_int, metavar="C", help="submitit/ray: CPUs each case's job gets"),
        arg("--max-parallel", type=positive_int, metavar="K", help="submitit/ray: at most K cases at once"),
        arg("--time-limit", type=positive_float, metavar="MINUTES",
            help="submitit: each job's time limit in minutes (default: the case's timeout plus 10)"),
        arg("--ray-address", metavar="ADDRESS", help="ray: the cluster to join (ray.init(address=...)); "
                                                     "default: a local Ray started for the run"),
    ],
)
def run_suite(args: argparse.Namespace) -> int:
    if args.keep_failed and not args.resume:
        raise ConfigError("--keep-failed applies to --resume: it keeps the failed cases of the run being continued")
    if args.resume and not args.out:
        raise ConfigError("--resume needs --out, the run directory to continue")
    if args.dry_run:
        return _dry_run(args)

    out = args.out or str(diffbench.default_run_dir(args.suite))
    given = [(flag, key, value) for flag, key, value in (
        ("--partition", "partition", args.partition), ("--gpus-per-case", "gpus_per_case", args.gpus_per_case),
        ("--cpus-per-case", "cpus_per_case", args.cpus_per_case), ("--max-parallel", "max_parallel", args.max_parallel),
        ("--time-limit", "time_limit_min", args.time_limit), ("--ray-address", "address", args.ray_address))
        if value is not None]
    if given and args.launcher == "local":
        raise ConfigError(f"{given[0][0]} applies to --launcher submitit or ray")
    options = {key: value for _, key, value in given}
    try:
        run = diffbench.run(args.suite, out, args.device, args.resume, args.only, args.timeout,
                            progress=not args.no_progress and getattr(args, "verbosity", 0) >= 0,
                            keep_failed=args.keep_failed, devices=args.devices,
                            launcher=args.launcher, launcher_options=options,
                            overrides=parse_assignments(args.overrides))
    except KeyboardInterrupt:
        print(f"diffbench: interrupted; continue with: diffbench run {args.suite} --out {out} --resume")
        return 130
    call = run.this_call or {}
    statuses = run.statuses if not run.cases.empty else {}
    code = _exit_status(statuses, args.strict, out)
    if args.format == "json":
        print(json.dumps({"run_dir": str(out), "suite": str(args.suite), "cases": call.get("total", 0),
                          "already_complete": call.get("skipped", 0), "this_call": dict(call.get("statuses", {})),
                          "run": dict(statuses), "records": str(Path(out) / "records.jsonl"), "exit_status": code},
                         indent=1))
        return code
    parts = ", ".join(f"{k} {v}" for k, v in sorted(Counter(call.get("statuses", {})).items())) or "nothing to run"
    print(f"{call.get('total', 0)} case(s), {call.get('skipped', 0)} already complete; {parts}; "
          f"records: {Path(out) / 'records.jsonl'}")
    return code


def _dry_run(args: argparse.Namespace) -> int:
    """The cases, nothing run; for cases that train, their modelled GPU-hours (bench/estimate.py)."""
    cases = diffbench.plan(args.suite, args.device, args.only, parse_assignments(args.overrides))
    rows = [{"name": c.name, "case_id": c.case_id, "family": c.config["model"]["family"],
             "batch": c.config["batch_size"], "precision": c.config["precision"]} for c in cases]
    columns = ["name", "case_id", "family", "batch", "precision"]
    hours, assumed = diffbench.estimate(cases)
    if any(h is not None for h in hours):
        columns.append("GPU-h (model)")
        for row, h in zip(rows, hours, strict=True):
            row["GPU-h (model)"] = f"{h:,.1f}" if h is not None else "-"
    print(render(rows, tuple(columns)))
    if any(h is not None for h in hours):
        print(f"GPU-h: {assumed}; {sum(h or 0 for h in hours):,.0f} GPU-hours in all")
    print(f"{len(cases)} case(s) on {cases[0].config['device'] if cases else args.device}; "
          "nothing was run (--dry-run)")
    return 0


def _exit_status(statuses: dict[str, int], strict: bool, out: str) -> int:
    """1 when no case of the run finished ok (a broken build must not pass a CI step), or with ``strict`` when any
    did not; 0 otherwise. What was measured is kept either way."""
    failed = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()) if k != "ok")
    if statuses and not statuses.get("ok"):
        print(f"diffbench: no case of the run finished ok ({failed}); see 'diffbench report {out}'", file=sys.stderr)
        return 1
    if strict and failed:
        print(f"diffbench: --strict: not every case finished ok ({failed}); see 'diffbench report {out}'",
              file=sys.stderr)
        return 1
    return 0
