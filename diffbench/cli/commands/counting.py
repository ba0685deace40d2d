"""``diffbench count NAME...``: params and GMACs on the meta device, of backbones or of pipelines."""

from __future__ import annotations

import argparse

import diffbench
from diffbench.bench.formatting import FORMATS, render
from diffbench.cli.app import arg, command
from diffbench.core.errors import ConfigError
from diffbench.core.log import logger

COLUMNS = ("name", "family", "params", "params_trainable", "gmacs", "flops")
PIPELINE_COLUMNS = ("pipeline", "name", "component", "params", "gmacs", "per_step", "reported_params")


@command(
    "count",
    help="count params (all and trainable) and GMACs of one network evaluation at batch 1, on the meta device; "
         "for a pipeline, one row per component (text encoders, prior, each stage and expert, autoencoder)",
    examples=["diffbench count DiT-XL/2", "diffbench count SD-1.5 SDXL --format json",
              "diffbench count unclip --format json", "diffbench count glide imagen --params 1.2B",
              "diffbench count ldm --scale tiny"],
    args=[arg("names", nargs="+", metavar="NAME",
              help="preset names or families (see 'diffbench list presets'), or pipelines ('diffbench list "
                   "pipelines'; dit and uvit name the pipelines here)"),
          arg("--scale", choices=("paper", "tiny"), default="paper", help="pipelines: paper or tiny scale"),
          arg("--params", metavar="N", help="pipelines: reshape the denoisers to total N params (e.g. 1.2B); "
                                            "text encoders and autoencoders keep their size"),
          arg("--format", choices=FORMATS, default="table", help="output format (default: table)")],
)
def run_count(args: argparse.Namespace) -> int:
    from diffbench.models.api import resolve
    from diffbench.models.pipelines import PIPELINES

    is_pipe = [n in PIPELINES for n in args.names]
    if any(is_pipe):
        if not all(is_pipe):
            raise ConfigError("count takes either pipelines or presets/families in one call, not both: "
                              f"pipelines here: {', '.join(n for n in args.names if n in PIPELINES)}")
        rows = [r for name in args.names for r in diffbench.count_pipeline(name, args.scale, args.params)]
        print(render(rows, PIPELINE_COLUMNS if args.format != "json" else list(rows[0]), args.format))
        from diffbench.models.families import FAMILIES

        for name in args.names:  # what was counted, where a name could mean two things
            if name in FAMILIES:
                logger.info(f"{name} names the {name} pipeline here (every component, its autoencoder included), "
                      f"not the {name} backbone family: count a backbone preset (diffbench list presets) or size "
                      f"the family with 'diffbench match --families {name}'")
        return 0
    if args.params or args.scale != "paper":
        raise ConfigError("--params and --scale apply to pipelines; size a backbone family with 'diffbench match'")
    for name in args.names:  # validate every name before counting any
        resolve(name)
    out = [diffbench.count(name).as_dict() for name in args.names]
    from diffbench.models.presets import PRESETS

    for name, row in zip(args.names, out, strict=True):
        if name not in PRESETS:  # a family name: its config class's defaults, which no paper may have used
            logger.info(f"{name} is a family: counted its default config ({row['params'] / 1e6:.4g}M params), not a "
                  f"paper's model; name a preset (diffbench list presets) or size it with 'diffbench match "
                  f"--families {name} --params N'")
    if args.format != "json":
        for r in out:
            r.pop("config"), r.pop("params_by_module")
    print(render(out, COLUMNS if args.format != "json" else list(out[0]), args.format))
    return 0
