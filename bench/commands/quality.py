"""``diffbench fid``, ``diffbench stats``, ``diffbench clip-score``: quality metrics from local files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffbench.bench.cli import arg, command, positive_int, seed_int
from diffbench.bench.formatting import render
from diffbench.core.errors import BadInputError
from diffbench.core.files import output_file

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


def _detector(args: argparse.Namespace):
    from diffbench.metrics.detectors import build_detector
    from diffbench.metrics.device import resolve_device

    args.device = resolve_device(args.device)
    mode = args.mode if args.mode != "embedded" else None
    return build_detector(args.detector, mode, args.weights, args.allow_unverified_weights, args.device)


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
)
def run_fid(args: argparse.Namespace) -> int:
    import diffbench

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
)
def run_stats(args: argparse.Namespace) -> int:
    from diffbench.core.distributed import current
    from diffbench.metrics.detectors import describe
    from diffbench.metrics.refcache import cached_extract

    if not Path(args.source).exists():
        raise BadInputError(f"{args.source}: no such file or folder")
    out = output_file(args.out, ".npz", "-o")  # np.savez would add .npz to any other name
    det = _detector(args)
    # under torchrun: every rank's share; otherwise through the reference cache (metrics/refcache.py), which it fills
    side = cached_extract(args.source, det, keep_features=False, batch_size=args.batch_size, progress=True).side
    meta = {k: str(v) for k, v in describe(det).items()}
    if current().is_writer:
        side.stats.save(out, **meta, count=str(side.stats.count))
    print(f"{side.stats.count} images -> {out} ({det.name}, {det.mode}, weights {det.weights_sha256[:12]}"
          f"{'' if det.verified else ', UNVERIFIED'})")
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
    import torch

    from diffbench.metrics import clip_score, inputs

    cap_path = Path(args.captions)
    if not cap_path.is_file():
        raise BadInputError(f"{cap_path}: no such captions file")
    from diffbench.bench.protocols import read_captions

    captions = read_captions(cap_path)
    if not Path(args.images).exists():
        raise BadInputError(f"{args.images}: no such file or folder")
    images = torch.cat(list(inputs.batches(args.images, 256)))
    if len(captions) != len(images):
        raise BadInputError(f"{len(images)} images but {len(captions)} captions in {cap_path}; "
                            "give exactly one caption per image")
    model = clip_score.load(args.model, args.arch, args.allow_unverified_weights)
    score, _ = clip_score.clip_score(model, images, captions)
    result = {"clip_score": score, "n": len(images), "model": model.name, "weights_sha256": model.weights_sha256,
              "verified": model.verified, "convention": clip_score.CONVENTION}
    print(json.dumps(result, indent=2) if args.format == "json" else
          render([{"metric": k, "value": v} for k, v in result.items()], ("metric", "value")))
    return 0
