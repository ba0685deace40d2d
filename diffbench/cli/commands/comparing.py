"""``diffbench compare BASE NEW`` and ``diffbench baseline RUN -o FILE``: the CI regression gate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import diffbench
from diffbench.bench.formatting import render
from diffbench.cli.app import arg, command
from diffbench.core.errors import ConfigError
from diffbench.core.files import write_text_atomic


@command(
    "compare",
    help="compare two runs of a suite (run directories, records.jsonl or baselines): exit 0 = no regression, "
         "1 = regression or a change not allowed, 2 = bad input",
    examples=["diffbench compare baselines/ci-cpu.json runs/pr", "diffbench compare runs/main runs/pr --format md",
              "diffbench compare runs/a runs/b --policy compare-policy.toml --allow-change params,gmacs",
              "diffbench compare runs/a runs/b --format json --all"],
    args=[arg("base", metavar="BASE"), arg("new", metavar="NEW"),
          arg("--policy", metavar="TOML", help="thresholds per kind, metric and case glob (default: built-in)"),
          arg("--allow-change", default="", metavar="METRICS", help="exact quantities allowed to change, e.g. params"),
          arg("--allow-env-change", action="store_true",
              help="compare runs from different devices, drivers, torch/CUDA versions or dirty trees"),
          arg("--format", choices=("table", "md", "json"), default="table"),
          arg("--all", action="store_true", help="list unchanged metrics too"),
          arg("--fail-on-inconclusive", action="store_true", help="exit 1 on inconclusive timings too"),
          arg("--github-benchmark", metavar="DIR",
              help="also write NEW as github-action-benchmark JSON (smaller.json, bigger.json) into DIR")],
)
def run_compare(args: argparse.Namespace) -> int:
    from diffbench.reports import compare as cmp

    allowed = tuple(m.strip() for m in args.allow_change.split(",") if m.strip())
    result = diffbench.compare(args.base, args.new, args.policy, allowed, args.allow_env_change)
    if args.format == "json":
        print(json.dumps({"summary": cmp.summary(result), "failed": result.failed, "warnings": result.warnings,
                          "environment": {"base": cmp.environment(result.base), "new": cmp.environment(result.new)},
                          "verdicts": [v.as_dict() for v in result.verdicts]}, indent=1, default=str))
    elif args.format == "md":
        print(cmp.markdown(result, args.all))
    else:
        table = cmp.rows(result, args.all)
        if table:
            print(render(table, cmp.COLUMNS))
        print(cmp.summary(result))
        for w in result.warnings:
            print(f"warning: {w}")
    if args.github_benchmark:
        out = Path(args.github_benchmark)
        gab = cmp.github_benchmark(result.new)
        write_text_atomic(out / "smaller.json", json.dumps(gab["customSmallerIsBetter"], indent=1))
        write_text_atomic(out / "bigger.json", json.dumps(gab["customBiggerIsBetter"], indent=1))
    inconclusive = args.fail_on_inconclusive and any(v.verdict == "inconclusive" for v in result.verdicts)
    return 1 if result.failed or inconclusive else 0


@command(
    "baseline",
    help="write a run's records as a compact baseline file (identities, configs, provenance, raw samples) to "
         "commit or keep as a CI artifact; 'diffbench compare' takes it on either side",
    examples=["diffbench baseline runs/main -o baselines/ci-cpu.json"],
    args=[arg("run", metavar="RUN", help="a run directory or its records.jsonl"),
          arg("-o", "--out", required=True, help="the baseline file (.json)"),
          arg("--allow-failed", action="store_true", help="keep a run whose cases did not all finish ok (refused "
                                                          "by default: a broken run must not become the reference)")],
)
def run_baseline(args: argparse.Namespace) -> int:
    if not args.out.endswith(".json"):
        raise ConfigError(f"-o {args.out}: a baseline is a .json file; give a name ending in .json")
    path = diffbench.baseline(args.run, args.out, allow_failed=args.allow_failed)
    print(f"baseline of {args.run} -> {path} ({path.stat().st_size:,} bytes)")
    return 0
