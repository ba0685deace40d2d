"""``diffbench latents``: a dataset encoded once by an autoencoder (``diffbench.latents``)."""

from __future__ import annotations

import argparse

import diffbench
from diffbench.cli.app import arg, command, positive_int


@command(
    "latents",
    help="encode a dataset once with a local diffusers AutoencoderKL (both flips of every image) into safetensors "
         "shards a suite trains on (dataset = \"OUT\"); resumable, and split over torchrun's ranks",
    examples=["diffbench latents data/imagenet/train --autoencoder ckpts/sd-vae-ft-ema --image-size 256 "
              "--out data/imagenet-latents",
              "torchrun --nproc-per-node 8 -m diffbench latents data/imagenet/train --autoencoder "
              "ckpts/sd-vae-ft-ema --device cuda --out data/imagenet-latents"],
    args=[arg("dataset", metavar="DATA", help="a class-folder tree (ImageNet's train/), a captioned folder "
                                               "(metadata.jsonl), or digits / shapes"),
          arg("--autoencoder", metavar="DIR", required=True,
              help="a local diffusers AutoencoderKL directory (DiT's sd-vae-ft-ema)"),
          arg("--out", metavar="LATENTS", required=True, help="output folder: shards and latents.json"),
          arg("--image-size", type=positive_int, default=256, help="image resolution, a multiple of 8 (default: "
                                                                    "%(default)s)"),
          arg("--device", default="cpu", help="cpu or cuda (default: %(default)s)"),
          arg("--shard-size", type=positive_int, default=1024, help="images per shard (default: %(default)s)"),
          arg("--encode-batch", type=positive_int, default=64, metavar="N",
              help="images per encoder call (default: %(default)s)"),
          arg("--skip-bad", action="store_true", help="skip (and count) images that cannot be decoded")],
    distributed=True,
)
def run_latents(args: argparse.Namespace) -> int:
    got = diffbench.latents(args.dataset, args.autoencoder, args.out, image_size=args.image_size,
                            device=args.device, shard_size=args.shard_size, encode_batch=args.encode_batch,
                            skip_bad=args.skip_bad)
    m = got["manifest"]
    print(f"{m['count']} images -> {got['shards']} shard(s) in {args.out} ({got['written']} written, "
          f"{got['skipped']} already there); latents {'x'.join(map(str, m['shape']))}, scaling factor "
          f"{m['scaling_factor']}")
    return 0
