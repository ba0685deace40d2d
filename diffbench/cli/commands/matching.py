"""``diffbench match``: the config of each family closest to each target, by params or GMACs."""

from __future__ import annotations

import argparse

import diffbench
from diffbench.bench.formatting import FORMATS, render
from diffbench.cli.app import arg, command, names, number, positive_int
from diffbench.core.errors import ConfigError
from diffbench.models.quantities import SCALINGS, parse_input_shape, parse_target

COLUMNS = ("family", "target", "by", "params", "gmacs", "rel_error", "shape")


def shape_summary(config: dict) -> str:
    keys = ("hidden_size", "embed_dim", "model_channels", "width", "depth", "heads", "num_heads", "patch_size",
            "channel_mult", "num_res_blocks", "attention_resolutions")
    return " ".join(f"{k}={config[k]}" for k in keys if k in config)


@command(
    "match",
    help="size each family to each target parameter count (or GMACs) and report the closest config",
    examples=[
        "diffbench match --families dit,uvit,vit,unet-adm,unet-ldm --params 33M,130M,458M,675M",
        "diffbench match --families dit,unet-adm --params 1M,4M --input-shape 3x32x32 --classes 10",
        "diffbench match --families dit,uvit --by gmacs --gmacs 6G,23G --format json",
        "diffbench match --families dit,vit --params 0.7M,1.4M,2.8M --input-shape 3x8x8 --scaling width "
        "--tolerance 0.1",
    ],
    args=[
        arg("--families", required=True, type=names, help="comma-separated families (see 'diffbench list families')"),
        arg("--params", help="comma-separated parameter targets, e.g. 33M,130M,1.5B"),
        arg("--gmacs", help="comma-separated GMACs targets, e.g. 6G,23G (a bare number means GMACs)"),
        arg("--by", choices=("params", "gmacs"), help="what to match (default: whichever targets were given)"),
        arg("--input-shape", default="4x32x32",
            help="input shape CxHxW (default: 4x32x32, the SD-VAE latent of 256 px); suites: input_shapes"),
        arg("--input", dest="input_shape", default=argparse.SUPPRESS, help=argparse.SUPPRESS),  # the old spelling
        arg("--cond", choices=("class", "text", "none"), default="class", help="conditioning (default: class)"),
        arg("--classes", type=positive_int, default=1000, help="number of classes for --cond class (default: 1000)"),
        arg("--patch", type=positive_int, help="patch size for the transformer families (default: 2)"),
        arg("--tolerance", type=number(float, above=0, below=1), default=0.02,
            help="largest relative error accepted (default: 0.02)"),
        arg("--scaling", choices=SCALINGS, default="free",
            help="free: each target sized on its own (default); width: one structure and depth for a family's "
                 "targets, only the width grows (a cleaner scaling series)"),
        arg("--format", choices=FORMATS, default="table", help="output format (default: table)"),
    ],
)
def run_match(args: argparse.Namespace) -> int:
    from diffbench.models.families import FAMILIES

    by = args.by or ("gmacs" if args.gmacs and not args.params else "params")
    raw = args.params if by == "params" else args.gmacs
    if not raw:
        raise ConfigError(f"--by {by} needs --{by} with at least one target (e.g. --{by} "
                          f"{'33M' if by == 'params' else '6G'})")
    items = [t.strip() for t in raw.split(",") if t.strip()]
    if not items:
        raise ConfigError(f"--{by} {raw!r} names no target; give comma-separated targets such as "
                          f"{'33M,130M' if by == 'params' else '6G,23G'}")
    targets = [parse_target(t, by, f"--{by} target") for t in items]
    families = args.families
    for f in families:
        FAMILIES.get(f)
    shape = parse_input_shape(args.input_shape)
    rows = [r.as_dict() for r in diffbench.match_many(families, targets, by, shape, args.cond, args.classes,
                                                        args.patch, args.tolerance, args.scaling)]
    if args.format == "table":
        for d in rows:
            d["shape"] = shape_summary(d["config"])
            d["rel_error"] = f"{d['rel_error']:+.2%}"
        print(render(rows, COLUMNS, "table"))
    else:
        print(render(rows, list(rows[0]), args.format))
    return 0
