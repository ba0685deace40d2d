"""``diffbench cache list|clear``: the reference-feature cache (metrics/refcache.py)."""

from __future__ import annotations

import argparse

from diffbench.bench.cli import arg, command
from diffbench.bench.formatting import render


@command(
    "cache",
    help="show or empty the cache of reference features ($DIFFBENCH_CACHE/reference-stats; DIFFBENCH_CACHE=off "
         "turns it off)",
    examples=["diffbench cache list", "diffbench cache clear", "diffbench stats ref_images/ -o ref.npz  # fills it"],
    args=[arg("action", choices=("list", "clear"), help="list the entries or remove them all"),
          arg("--format", choices=("table", "json"), default="table")],
)
def run_cache(args: argparse.Namespace) -> int:
    import json

    from diffbench.metrics.refcache import cache_dir, clear, entries

    where = cache_dir()
    if where is None:
        print("the reference cache is off (DIFFBENCH_CACHE=off)")
        return 0
    if args.action == "clear":
        n = clear()
        print(f"removed {n} entr{'y' if n == 1 else 'ies'} from {where}")
        return 0
    rows = entries()
    if args.format == "json":
        print(json.dumps(rows, indent=1))
        return 0
    if rows:
        print(render(rows, ("key", "source", "detector", "mode", "images", "features", "MiB", "written")))
    print(f"{len(rows)} entr{'y' if len(rows) == 1 else 'ies'} in {where}")
    return 0
