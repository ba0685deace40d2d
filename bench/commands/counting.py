"""``diffbench count NAME...``: params and GMACs on the meta device."""

from __future__ import annotations

import argparse

from bench.cli import arg, command
from bench.formatting import FORMATS, render

COLUMNS = ("name", "family", "params", "params_trainable", "gmacs", "flops")


@command(
    "count",
    help="count params (all and trainable) and GMACs of one network evaluation at batch 1, on the meta device",
    examples=["diffbench count DiT-XL/2", "diffbench count SD-1.5 SDXL --format json", "diffbench count dit uvit"],
    args=[arg("names", nargs="+", metavar="NAME", help="preset names (see 'diffbench list presets') or families"),
          arg("--format", choices=FORMATS, default="table", help="output format (default: table)")],
)
def run_count(args: argparse.Namespace) -> int:
    import models

    for name in args.names:  # validate every name before counting any
        models.resolve(name)
    rows = [models.count(name).as_dict() for name in args.names]
    if args.format != "json":
        for r in rows:
            r.pop("config"), r.pop("params_by_module")
    print(render(rows, COLUMNS if args.format != "json" else list(rows[0]), args.format))
    return 0
