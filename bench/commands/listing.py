"""``diffbench list [KIND]``."""

from __future__ import annotations

import argparse

from diffbench.bench.cli import arg, command
from diffbench.bench.formatting import FORMATS, render


@command(
    "list",
    help="list what diffbench knows: families, presets, metrics, commands (all kinds when KIND is omitted)",
    examples=["diffbench list", "diffbench list presets", "diffbench list families --format json"],
    args=[arg("kind", nargs="?", help="one of the kinds; omit for all"),
          arg("--format", choices=FORMATS, default="table", help="output format (default: table)")],
)
def run_list(args: argparse.Namespace) -> int:
    from diffbench.bench.catalog import LISTINGS

    kinds = [args.kind] if args.kind else LISTINGS.names()
    listings = [LISTINGS.get(k) for k in kinds]  # validates before printing anything
    for i, listing in enumerate(listings):
        rows = listing.rows()
        if args.format == "table":
            if len(listings) > 1:
                print(("\n" if i else "") + f"# {listing.kind}: {listing.description}")
            print(render(rows, listing.columns, "table"))
            if listing.note:
                print(f"({listing.note})")
        else:
            print(render(rows, listing.columns, args.format))
    return 0
