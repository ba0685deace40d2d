"""``diffbench cache list|clear``: the reference-feature cache (metrics/refcache.py)."""

from __future__ import annotations

import argparse
import json

import diffbench
from diffbench.bench.formatting import render
from diffbench.cli.app import arg, command


@command(
    "cache",
    help="show or empty the cache of reference features ($DIFFBENCH_CACHE/reference-stats; DIFFBENCH_CACHE=off "
         "turns it off)",
    examples=["diffbench cache list", "diffbench cache clear", "diffbench stats ref_images/ -o ref.npz  # fills it"],
    args=[arg("action", choices=("list", "clear"), help="list the entries or remove them all"),
          arg("--format", choices=("table", "json"), default="table")],
)
def run_cache(args: argparse.Namespace) -> int:
    if args.action == "clear":
        where, n = diffbench.clear_cache()
        if where is not None:
            print(f"removed {n} entr{'y' if n == 1 else 'ies'} from {where}")
    else:
        where, rows = diffbench.cache_entries()
        if where is not None and args.format == "json":
            print(json.dumps(rows, indent=1))
        elif where is not None:
            if rows:
                print(render(rows, ("key", "source", "detector", "mode", "images", "features", "status", "MiB",
                                    "written")))
            print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'} in {where}")
    if where is None:
        print("the reference cache is off (DIFFBENCH_CACHE=off)")
    return 0
