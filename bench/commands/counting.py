"""``diffbench count NAME...``: params and GMACs on the meta device, of backbones or of pipelines."""

from __future__ import annotations

import argparse
from typing import Any

from bench.cli import arg, command
from bench.errors import ConfigError
from bench.formatting import FORMATS, render

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
    import models
    from models.pipelines import PIPELINES

    is_pipe = [n in PIPELINES for n in args.names]
    if any(is_pipe):
        if not all(is_pipe):
            raise ConfigError("count takes either pipelines or presets/families in one call, not both: "
                              f"pipelines here: {', '.join(n for n in args.names if n in PIPELINES)}")
        rows = [r for name in args.names for r in pipeline_rows(name, args.scale, args.params)]
        print(render(rows, PIPELINE_COLUMNS if args.format != "json" else list(rows[0]), args.format))
        return 0
    if args.params or args.scale != "paper":
        raise ConfigError("--params and --scale apply to pipelines; size a backbone family with 'diffbench match'")
    for name in args.names:  # validate every name before counting any
        models.resolve(name)
    out = [models.count(name).as_dict() for name in args.names]
    if args.format != "json":
        for r in out:
            r.pop("config"), r.pop("params_by_module")
    print(render(out, COLUMNS if args.format != "json" else list(out[0]), args.format))
    return 0


def pipeline_rows(name: str, scale: str = "paper", params: str | None = None) -> list[dict[str, Any]]:
    from models.pipeline import count_pipeline, size_pipeline
    from models.pipelines import PIPELINES
    from models.sizing import parse_quantity

    preset = PIPELINES.get(name)
    spec = preset.spec(scale)
    if params:
        spec, _, _ = size_pipeline(spec, parse_quantity(params, "--params"))
    rows = []
    comps = count_pipeline(spec)
    with_reported = scale == "paper" and not params
    for c in comps:
        reported = preset.reported.get(c.name) if with_reported else None
        rows.append({"pipeline": name, "scale": scale, **c.as_dict(), "reported_params": reported,
                     "reported_exact": preset.exact if reported is not None else None})
    by_name = {c.name: c for c in comps}
    for key, value in (preset.reported.items() if with_reported else ()):
        parts = key.split("+")
        if len(parts) > 1 and all(p in by_name for p in parts):  # a released network = several components
            rows.append({"pipeline": name, "scale": scale, "name": key, "component": "network (as released)",
                         "params": sum(by_name[p].params for p in parts), "gmacs": sum(by_name[p].gmacs for p in parts),
                         "per_step": True, "stage": by_name[parts[-1]].stage, "reported_params": value,
                         "reported_exact": preset.exact})
    return rows
