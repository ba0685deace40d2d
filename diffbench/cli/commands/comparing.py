"""``diffbench compare BASE NEW`` and ``diffbench baseline RUN -o FILE``: the CI regression gate."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import diffbench
from diffbench.bench.formatting import render
from diffbench.cli.app import arg, command, number
from diffbench.core.errors import ConfigError
from diffbench.core.files import write_text_atomic


def show(result: Any, fmt: str, everything: bool, extra: dict[str, Any] | None = None) -> None:
    """A comparison on stdout: a table and its summary, markdown, or JSON (with ``extra`` facts)."""
    from diffbench.reports import compare as cmp

    if fmt == "json":
        print(json.dumps({**(extra or {}), "summary": cmp.summary(result), "failed": result.failed,
                          "warnings": result.warnings,
                          "environment": {"base": cmp.environment(result.base), "new": cmp.environment(result.new)},
                          "verdicts": [v.as_dict() for v in result.verdicts]}, indent=1, default=str))
    elif fmt == "md":
        print(cmp.markdown(result, everything))
    else:
        table = cmp.rows(result, everything)
        if table:
            print(render(table, cmp.COLUMNS))
        print(cmp.summary(result))
        for w in result.warnings:
            print(f"warning: {w}")


def fails(result: Any, on_inconclusive: bool) -> int:
    """The gate's exit status: 1 on a regression or a change not allowed (and an inconclusive timing if asked)."""
    inconclusive = on_inconclusive and any(v.verdict == "inconclusive" for v in result.verdicts)
    return 1 if result.failed or inconclusive else 0


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
    allowed = tuple(m.strip() for m in args.allow_change.split(",") if m.strip())
    result = diffbench.compare(args.base, args.new, args.policy, allowed, args.allow_env_change)
    show(result, args.format, args.all)
    if args.github_benchmark:
        from diffbench.reports import compare as cmp

        out = Path(args.github_benchmark)
        gab = cmp.github_benchmark(result.new)
        write_text_atomic(out / "smaller.json", json.dumps(gab["customSmallerIsBetter"], indent=1))
        write_text_atomic(out / "bigger.json", json.dumps(gab["customBiggerIsBetter"], indent=1))
    return fails(result, args.fail_on_inconclusive)


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


@command(
    "ab",
    help="run a suite at a base commit and at the head in this one job, each side in its own git worktree and "
         "environment, their repetitions interleaved (base, head, head, base, ...), then compare: exit 0 = no "
         "regression, 1 = regression or a change not allowed, 2 = bad input",
    examples=["diffbench ab origin/main", "diffbench ab main HEAD --suite ci-gpu --device cuda --format md",
              "diffbench ab HEAD~1 --suite my-suite.toml --rounds 6 --out runs/ab"],
    args=[arg("base", metavar="BASE_REF", help="the base: a branch, tag or commit of this checkout's repository"),
          arg("head", metavar="HEAD_REF", nargs="?",
              help="the head (default: this checkout as it stands, uncommitted changes included)"),
          arg("--suite", default="ci-cpu", metavar="SUITE_OR_PATH",
              help="built-in suite or .toml file (a file inside the checkout: each side's own copy); default ci-cpu"),
          arg("--out", help="where both sides' rounds, ab.json and compare.md go (default: runs/ab-SUITE-TIMESTAMP)"),
          arg("--device", default="auto", help="auto, cpu or cuda[:N], the same for both sides (default: auto)"),
          arg("--rounds", type=number(int, minimum=1, below=101), metavar="N",
              help="measure every case N times a side, each in a fresh process (default: the suite's largest "
                   "repetitions)"),
          arg("--only", metavar="GLOB", help="only cases whose name matches (comma-separated globs)"),
          arg("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
              help="override a suite setting on both sides, as in 'diffbench run' (repeatable)"),
          arg("--policy", metavar="TOML", help="thresholds per kind, metric and case glob (default: built-in)"),
          arg("--allow-change", default="", metavar="METRICS", help="exact quantities allowed to change, e.g. params"),
          arg("--format", choices=("table", "md", "json"), default="table"),
          arg("--all", action="store_true", help="list unchanged metrics too"),
          arg("--fail-on-inconclusive", action="store_true", help="exit 1 on inconclusive timings too"),
          arg("--keep", action="store_true", help="keep the worktrees and environments made for the A/B")],
)
def run_ab(args: argparse.Namespace) -> int:
    from diffbench.api_ab import ab
    from diffbench.bench.overrides import parse_assignments

    allowed = tuple(m.strip() for m in args.allow_change.split(",") if m.strip())
    result = ab(args.base, args.head, args.suite, args.out, args.device, args.rounds, args.only,
                parse_assignments(args.overrides), args.policy, allowed, args.keep)
    show(result.comparison, args.format, args.all, {"out": str(result.out), "sides": result.sides,
                                                    "rounds": result.rounds})
    if args.format == "table":
        for w in result.warnings:
            print(f"warning: {w}")
        print(f"both sides' rounds, ab.json and compare.md: {result.out}")
    return fails(result.comparison, args.fail_on_inconclusive)
