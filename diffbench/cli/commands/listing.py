"""``diffbench list [KIND]``."""

from __future__ import annotations

import argparse

import diffbench
from diffbench.bench.formatting import FORMATS, render
from diffbench.cli.app import arg, command


@command(
    "list",
    help="list what diffbench knows: families, presets, metrics, commands (all kinds when KIND is omitted)",
    examples=["diffbench list", "diffbench list presets", "diffbench list families --format json"],
    args=[arg("kind", nargs="?", help="one of the kinds; omit for all"),
          arg("--format", choices=FORMATS, default="table", help="output format (default: table)")],
)
def run_list(args: argparse.Namespace) -> int:
    found = diffbench.listings(args.kind)
    for i, (listing, rows) in enumerate(found):
        if args.format == "table":
            if len(found) > 1:
                print(("\n" if i else "") + f"# {listing.kind}: {listing.description}")
            print(render(rows, listing.columns, "table"))
            if listing.note:
                print(f"({listing.note})")
        else:
            print(render(rows, listing.columns, args.format))
    return 0
