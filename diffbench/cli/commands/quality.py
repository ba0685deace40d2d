"""``diffbench fid``, ``diffbench stats``, ``diffbench clip-score``: quality metrics from local files."""

from __future__ import annotations

import argparse
import json

import diffbench
from diffbench.bench.formatting import render
from diffbench.cli.app import arg, command, positive_int, seed_int

DETECTOR_ARGS = [
    arg("--detector", default="inception-v3", help="detector (see 'diffbench list detectors'; default inception-v3)"),
    arg("--mode", choices=("torch-fidelity", "clean", "legacy_pytorch", "legacy_tensorflow", "embedded"),
        help="detector mode (default: the detector's first: torch-fidelity for inception-v3)"),
    arg("--weights", metavar="PATH", help="local weights file (else the environment variable, then the caches)"),
    arg("--allow-unverified-weights", action="store_true",
        help="accept weights whose sha256 is not the published one; every result is marked unverified"),
    arg("--batch-size", type=positive_int, default=64, help="images per detector batch (default: 64)"),
    arg("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)"),
]


@command(
    "fid",
    help="FID (and KID, IS, sFID, precision/recall) between A and B: image folders, .npz batches or statistics",
    examples=["diffbench fid samples/ ref_stats.npz",
              "diffbench fid gen.npz VIRTUAL_imagenet256_labeled.npz --kid --prc --format json",
              "diffbench fid a/ b/ --mode clean --weights ~/inception-2015-12-05.pt --allow-unverified-weights",
              "diffbench fid a/ b/ --detector digits"],
    args=[arg("a", metavar="A", help="generated images: folder, .npz batch (arr_0) or statistics .npz"),
          arg("b", metavar="B", help="reference images or statistics"),
          *DETECTOR_ARGS,
          arg("--kid", action="store_true", help="also KID (needs images on both sides)"),
          arg("--isc", action="store_true", help="also the Inception Score of A"),
          arg("--sfid", action="store_true", help="also sFID (Inception spatial features)"),
          arg("--prc", action="store_true", help="also precision and recall (k = 3)"),
          arg("--seed", type=seed_int, default=0, help="seed for KID's subsets (default: 0)"),
          arg("--format", choices=("table", "json"), default="table")],
    distributed=True,
)
def run_fid(args: argparse.Namespace) -> int:
    mode = args.mode if args.mode != "embedded" else None
    result = diffbench.fid(args.a, args.b, args.detector, mode, args.weights, args.allow_unverified_weights,
                           args.kid, args.isc, args.sfid, args.prc, args.seed, args.batch_size, args.device,
                           progress=True)
    if args.format == "json":
        print(json.dumps(result, indent=2))
    else:
        rows = [{"metric": k, "value": v} for k, v in result.items() if k != "not_available"]
        rows += [{"metric": k, "value": f"not available: {v}"} for k, v in result.get("not_available", {}).items()]
        rows = [r for r in rows if r["metric"] != "note"]
        print(render(rows, ("metric", "value")))
        if result.get("note"):
            print(f"note: {result['note']}")
        if result["verified"] is False:
            print("UNVERIFIED weights: these numbers are not comparable with published ones")
    return 0


@command(
    "stats",
    help="save a detector's feature statistics (mu, sigma and mergeable sums) of images to an .npz",
    examples=["diffbench stats ref_images/ -o ref.npz", "diffbench stats ref.npz -o ref_stats.npz --detector digits"],
    args=[arg("source", metavar="A", help="folder of images or .npz batch (arr_0)"),
          arg("-o", "--out", required=True, help="output .npz"), *DETECTOR_ARGS],
    distributed=True,
)
def run_stats(args: argparse.Namespace) -> int:
    mode = args.mode if args.mode != "embedded" else None
    r = diffbench.stats(args.source, args.out, args.detector, mode, args.weights, args.allow_unverified_weights,
                        args.batch_size, args.device, progress=True)
    print(f"{r['images']} images -> {r['out']} ({r['detector']}, {r['mode']}, weights {r['weights_sha256'][:12]}"
          f"{'' if r['verified'] else ', UNVERIFIED'})")
    return 0


@command(
    "clip-score",
    help="CLIP score of images against captions (one caption per line, in the images' sorted order)",
    examples=["diffbench clip-score samples/ captions.txt",
              "diffbench clip-score samples.npz captions.txt --model ~/clip-vit-base-patch32",
              "diffbench clip-score samples/ captions.txt --model ViT-B-32.pt --arch ViT-B-32"],
    args=[arg("images", metavar="IMAGES", help="folder of images or .npz batch (arr_0)"),
          arg("captions", metavar="CAPTIONS", help="text file, one caption per line, or a .jsonl with a \"caption\" "
                                                   "field per line"),
          arg("--model", default="embedded", help="Hugging Face CLIP directory, open_clip checkpoint, or "
                                                   "'embedded' (the shapes-CLIP; default)"),
          arg("--arch", default="ViT-B-32", help="open_clip architecture of --model (default ViT-B-32)"),
          arg("--allow-unverified-weights", action="store_true"),
          arg("--format", choices=("table", "json"), default="table")],
)
def run_clip_score(args: argparse.Namespace) -> int:
    result = diffbench.clip_score(args.images, args.captions, args.model, args.arch, args.allow_unverified_weights)
    print(json.dumps(result, indent=2) if args.format == "json" else
          render([{"metric": k, "value": v} for k, v in result.items()], ("metric", "value")))
    return 0
