"""``diffbench train`` and ``diffbench sample``: a pipeline trained to a fixed budget, and sampled."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from diffbench.bench.cli import (
    arg,
    command,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed_int,
)
from diffbench.bench.formatting import render
from diffbench.bench.settings import DEFAULTS, train_default
from diffbench.core.errors import BadInputError, ConfigError
from diffbench.core.files import atomic_path, output_dir, write_text_atomic

PIPELINE_ARGS = [
    arg("pipeline", metavar="PIPELINE", help="a pipeline (see 'diffbench list pipelines'); for sample also a diffusers "
                                              "pipeline directory (model_index.json), loaded from local files only"),
    arg("--scale", choices=("paper", "tiny"), default="tiny", help="paper or tiny scale (default: tiny)"),
    arg("--params", metavar="N", help="reshape the denoisers to total N params (as 'diffbench count --params')"),
    arg("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)"),
    arg("--seed", type=seed_int, default=DEFAULTS.measurement.seed, help="seed (default: %(default)s)"),
    arg("--text-encoder", metavar="DIR", help="load the (first) text encoder from a local Hugging Face directory "
                                              "(model and tokenizer; frozen)"),
    arg("--autoencoder", metavar="DIR", help="load the autoencoder from a local diffusers AutoencoderKL directory"),
]


def _spec(args: argparse.Namespace) -> Any:
    from diffbench.metrics.device import resolve_device
    from diffbench.models.pipelines import PIPELINES, size_pipeline
    from diffbench.models.sizing import parse_quantity

    spec = PIPELINES.get(args.pipeline).spec(args.scale)
    args.device = resolve_device(args.device)
    for option, path in (("--text-encoder", args.text_encoder), ("--autoencoder", args.autoencoder)):
        if path and not Path(path).is_dir():
            raise BadInputError(f"{option} {path}: no such directory; give a local directory saved with "
                                "save_pretrained")
    if args.text_encoder:
        if not spec.text_encoders or spec.text_encoders[0].kind == "glide":
            raise ConfigError(f"the {spec.name} pipeline has no pretrained text encoder to load (it has "
                              f"{'its own trained text transformer' if spec.text_encoders else 'none'}); "
                              "drop --text-encoder")
        spec = dataclasses.replace(spec, text_encoders=(spec.text_encoders[0].with_path(args.text_encoder),
                                                        *spec.text_encoders[1:]))
    if args.autoencoder:
        if spec.autoencoder is None:
            raise ConfigError(f"the {spec.name} pipeline has no autoencoder; drop --autoencoder")
        spec = dataclasses.replace(spec, autoencoder=dataclasses.replace(spec.autoencoder, path=args.autoencoder))
    if args.params:
        spec, _, _ = size_pipeline(spec, parse_quantity(args.params, "--params"))
    return spec


@command(
    "train",
    help="train a pipeline stage by stage to a fixed budget (autoencoder first when latent, then the prior, then "
         "each stage); resumes from its checkpoints when run again with the same arguments",
    examples=["diffbench train dit --dataset digits --steps 300 --out runs/dit-tiny",
              "diffbench train glide --dataset shapes --steps 400 --out runs/glide-tiny",
              "diffbench train ldm --dataset shapes --train-flops 5e12 --params 2M --out runs/ldm-2m"],
    args=[*PIPELINE_ARGS,
          arg("--dataset", default=DEFAULTS.training.dataset,
              help="digits, shapes (captions), a folder of images (class sub-folders) or an ADM-style .npz "
                   "(default: %(default)s)"),
          arg("--steps", type=non_negative_int, default=train_default("steps"), help="training steps per part"),
          arg("--train-flops", type=non_negative_float, default=train_default("train_flops"),
              help="instead of --steps: training compute per part (3 x forward FLOPs x images seen)"),
          arg("--batch-size", type=positive_int, default=train_default("batch_size"),
              help="images per step (default: %(default)s)"),
          arg("--lr", type=positive_float, default=train_default("lr"),
              help="AdamW learning rate (default: %(default)s)"),
          arg("--checkpoint-every", type=positive_int, default=train_default("checkpoint_every"),
              help="steps between checkpoints (default: %(default)s)"),
          arg("--autoencoder-steps", type=non_negative_int, default=DEFAULTS.training.autoencoder_steps,
              help="steps for the autoencoder of a latent pipeline (default: %(default)s)"),
          arg("--out", required=True, help="output directory: checkpoints, pipeline.safetensors, train.json")],
)
def run_train(args: argparse.Namespace) -> int:
    from diffbench.diffusion.pipeline_training import train_pipeline, training_data
    from diffbench.diffusion.training import TrainConfig
    from diffbench.models.pipelines import Pipeline, save_pipeline

    spec = _spec(args)
    cfg = TrainConfig(steps=args.steps, train_flops=args.train_flops, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed, checkpoint_every=args.checkpoint_every)
    out = output_dir(args.out)  # checked before the work, not after
    data, _ = training_data(spec, args.dataset, args.seed)
    import torch

    torch.manual_seed(args.seed)
    pipe = Pipeline(spec)
    results = train_pipeline(pipe, data, cfg, out / "parts", args.device, args.autoencoder_steps)
    save_pipeline(pipe, out / "pipeline.safetensors")
    rows = []
    for part, r in results.items():
        k = max(1, min(10, len(r.losses) // 5))
        rows.append({"part": part, "steps": r.steps, "resumed_from": r.resumed_from,
                     "loss_first": sum(r.losses[:k]) / k, "loss_last": sum(r.losses[-k:]) / k,
                     "seconds": r.seconds, "train_flops": r.train_flops})
    write_text_atomic(out / "train.json", json.dumps({"pipeline": spec.name, "dataset": args.dataset, "parts": rows,
                                                "losses": {p: r.losses for p, r in results.items()}}, indent=1))
    print(render(rows, ("part", "steps", "resumed_from", "loss_first", "loss_last", "seconds", "train_flops"),
                 "table"))
    print(f"wrote {out / 'pipeline.safetensors'}")
    return 0


@command(
    "sample",
    help="sample a pipeline with per-sample seeds (image k is the same whatever the batch size) into PNGs or an "
         "ADM-style .npz, and print the time per image of each component",
    examples=["diffbench sample glide --checkpoint runs/glide-tiny/pipeline.safetensors --n 16 --out samples/",
              "diffbench sample dit --checkpoint runs/dit-tiny/pipeline.safetensors --labels 3,7 --format npz "
              "--out s/",
              "diffbench sample ldm --captions 'a small red circle at the center' --guidance 4 --steps 30 --out s/",
              "diffbench sample ckpts/sd15 --captions-file coco30k.txt --num-samples 30000 --steps 50 --out s/",
              "diffbench sample ldm --stage-weights unet=ckpts/my-unet --checkpoint runs/ldm/pipeline.safetensors "
              "--out s/"],
    args=[*PIPELINE_ARGS,
          arg("--checkpoint", metavar="FILE", help="weights written by 'diffbench train' (safetensors) or a plain "
                                                   "state dict; without it the weights are random (untrained)"),
          arg("--num-samples", "--n", dest="n", type=positive_int, default=16,
              help="number of images (default: 16); spell it --num-samples under torchrun, whose own options take --n"),
          arg("--steps", type=positive_int, help="sampling steps per stage (default: the pipeline's)"),
          arg("--guidance", type=non_negative_float,
              help="classifier-free guidance scale, 1 = none (default: the pipeline's)"),
          arg("--scheduler", help="ddpm, ddim, dpm-solver++ or euler (default: ddim; a diffusers directory's own)"),
          arg("--stage-weights", action="append", metavar="STAGE=DIR",
              help="load a diffusers-layout U-Net directory into a built-in pipeline's stage (repeatable)"),
          arg("--captions", nargs="+", metavar="TEXT", help="captions, cycled over the samples (text pipelines; "
                                                            "default: held-out procedural captions)"),
          arg("--captions-file", metavar="FILE", help="captions file: one per line, or a .jsonl with a \"caption\" "
                                                       "field per line (COCO-30K style); image k gets caption k"),
          arg("--labels", help="comma-separated class labels, cycled (class pipelines; default: k mod classes)"),
          arg("--batch-size", type=positive_int, default=64, help="images per batch (default: 64)"),
          arg("--format", choices=("png", "npz"), default="png", help="png files or one .npz (default: png)"),
          arg("--out", required=True, help="output directory")],
)
def run_sample(args: argparse.Namespace) -> int:
    from diffbench.models.pretrained import is_pipeline_dir

    if is_pipeline_dir(args.pipeline):
        make, timings, labels = _directory_sampler(args)
    else:
        make, timings, labels = _pipeline_sampler(args)
    return _write_samples(args, make, timings, labels)


def _pipeline_sampler(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """(make(b0, b1) -> uint8 NCHW images b0..b1-1, seconds per component, labels) of a built-in pipeline."""
    import torch

    from diffbench.diffusion.pipeline_sampling import Timings, sample_pipeline
    from diffbench.diffusion.process import make_scheduler
    from diffbench.diffusion.sampling import check_sampling
    from diffbench.models.pipelines import Pipeline, load_pipeline, load_unet_into_stage

    spec = _spec(args)
    steps = spec.steps if args.steps is None else args.steps
    guidance = spec.guidance if args.guidance is None else args.guidance
    scheduler = args.scheduler or "ddim"
    check_sampling(steps, guidance, args.batch_size)
    make_scheduler(scheduler)
    output_dir(args.out)  # checked before the work, not after
    captions, labels = _conditions(spec, args)  # checked before the (possibly large) build
    torch.manual_seed(args.seed)
    pipe = Pipeline(spec)
    tokens = None
    if captions is not None:  # the tokenizer of the text encoder as built (a loaded one brings its own)
        first = pipe.text_encoders[0] if len(pipe.text_encoders) else pipe.stages[spec.stages[-1].name].text
        tokens = first.tokenize(captions)
    if args.checkpoint:
        load_pipeline(pipe, args.checkpoint)
    stages = _stage_weights(args)
    for stage, folder in stages:  # a diffusers-layout U-Net into its stage, strictly
        load_unet_into_stage(pipe, stage, folder)
    if not args.checkpoint:
        loaded = f" except stage{'s' if len(stages) > 1 else ''} {', '.join(s for s, _ in stages)}" if stages else ""
        print(f"diffbench: note: no --checkpoint, so the weights are random (untrained){loaded}", file=sys.stderr)
    timings = Timings(args.device)

    def make(b0: int, b1: int) -> Any:
        return next(sample_pipeline(pipe, b1 - b0, None if tokens is None else tokens[b0:b1],
                                    None if labels is None else labels[b0:b1], scheduler, steps, guidance,
                                    args.seed, args.batch_size, args.device, start=b0, timings=timings))

    return make, timings.seconds, labels


def _directory_sampler(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The same for a diffusers pipeline directory: loaded from local files only, its own scheduler unless
    --scheduler names one, image k seeded by (seed, k), time per component from its calls."""
    import torch

    from diffbench.diffusion.sampling import check_sampling, generators
    from diffbench.metrics.device import resolve_device
    from diffbench.models.pretrained import Instrument, call_arguments, call_defaults, inspect_dir, load_dir, to_uint8

    for option in ("checkpoint", "text_encoder", "autoencoder", "params"):
        if getattr(args, option):
            raise ConfigError(f"--{option.replace('_', '-')} applies to built-in pipelines; a diffusers directory "
                              "brings its own weights")
    if args.scale != "tiny" or _stage_weights(args):
        raise ConfigError("--scale and --stage-weights apply to built-in pipelines; a diffusers directory is "
                          "sampled as saved")
    args.device = resolve_device(args.device)
    info = inspect_dir(args.pipeline)
    own = call_defaults(info.class_name)  # the pipeline class's own defaults (SD: 50 steps, guidance 7.5)
    steps = own.get("num_inference_steps", 50) if args.steps is None else args.steps
    guidance = own.get("guidance_scale", 1.0) if args.guidance is None else args.guidance
    check_sampling(steps, guidance, args.batch_size)
    output_dir(args.out)
    captions, labels = _conditions(_DirSpec(info), args)
    pipe = load_dir(args.pipeline, args.scheduler or "own", args.device)
    inst = Instrument(args.device).attach(pipe)

    @torch.no_grad()
    def make(b0: int, b1: int) -> Any:
        kw = call_arguments(pipe, info, b1 - b0, None if labels is None else labels[b0:b1].tolist(),
                            None if captions is None else captions[b0:b1], steps, guidance,
                            generators(args.seed, list(range(b0, b1))))
        return to_uint8(pipe(**kw).images)

    return make, inst.seconds, labels


class _DirSpec:
    """What ``_conditions`` reads of a pipeline, for a diffusers directory."""

    def __init__(self, info: Any) -> None:
        self.name, self.cond, self.num_classes = info.class_name, info.cond, max(info.classes, 1)


def _stage_weights(args: argparse.Namespace) -> list[tuple[str, str]]:
    out = []
    for item in getattr(args, "stage_weights", None) or []:
        stage, sep, folder = item.partition("=")
        if not sep or not stage or not folder:
            raise BadInputError(f"--stage-weights {item!r}: expected STAGE=DIR (a diffusers U-Net directory)")
        out.append((stage, folder))
    return out


def _write_samples(args: argparse.Namespace, make: Any, seconds: dict[str, float], labels: Any) -> int:
    import math

    import numpy as np

    from diffbench.core.distributed import all_gather, current, gather_to_writer, shard
    from diffbench.core.progress import progress

    out = output_dir(args.out)
    world = current()  # under torchrun: batch j is made by rank j mod world size, written by rank 0
    kept: dict[int, Any] = {}  # first index -> images, for the .npz
    written = 0
    batches = list(shard(args.n, args.batch_size, world))
    rounds = math.ceil(math.ceil(args.n / args.batch_size) / world.size)  # every rank joins every gather
    bar = progress(args.n, "sampling", enabled=world.is_writer)
    for t in range(rounds):
        mine = batches[t] if t < len(batches) else None
        made = None
        if mine is not None:
            _, b0, b1 = mine
            made = (b0, make(b0, b1).permute(0, 2, 3, 1).numpy())
        for got in gather_to_writer(made, world) or []:
            if got is None:
                continue
            b0, images = got
            written += len(images)
            bar.update(len(images))
            if args.format == "npz":
                kept[b0] = images
            else:
                from diffbench.bench.evaluate import save_pngs

                save_pngs(images, out, start=b0)
    bar.close()
    total: dict[str, float] = {}
    for part in all_gather(dict(seconds), world):  # device-seconds of every rank
        for k, v in part.items():
            total[k] = total.get(k, 0.0) + v
    if not world.is_writer:
        return 0
    assert written == args.n, (written, args.n)
    if args.format == "npz":
        arr = np.concatenate([kept[b0] for b0 in sorted(kept)])
        extra = {"arr_1": labels.numpy()} if labels is not None else {}
        with atomic_path(out / "samples.npz") as tmp:
            np.savez(tmp, arr_0=arr, **extra)
    rows = [{"component": k, "ms_per_image": v * 1e3 / args.n} for k, v in total.items()]
    rows.append({"component": "total", "ms_per_image": sum(total.values()) * 1e3 / args.n})
    print(render(rows, ("component", "ms_per_image"), "table"))
    if world.is_distributed:
        print(f"{world.size} ranks; ms_per_image is device time summed over them")
    print(f"wrote {args.n} images to {out}")
    return 0


def _conditions(spec: Any, args: argparse.Namespace) -> tuple[list[str] | None, Any]:
    """(captions, labels) for the ``--n`` samples, cycled from the arguments or defaulted."""
    import torch

    captions = labels = None
    given = args.captions
    if getattr(args, "captions_file", None):
        from diffbench.bench.protocols import read_captions

        if args.captions:
            raise BadInputError("give --captions or --captions-file, not both")
        if not Path(args.captions_file).is_file():
            raise BadInputError(f"--captions-file {args.captions_file}: no such file")
        given = read_captions(Path(args.captions_file))
        if not given:
            raise BadInputError(f"--captions-file {args.captions_file}: no captions in it")
    if spec.cond == "text":
        captions = given
        if not captions:
            from diffbench.diffusion import datasets

            captions = datasets.shapes(args.n, 16, seed=args.seed + 777).captions or []
        captions = [captions[k % len(captions)] for k in range(args.n)]
    elif given:
        raise BadInputError(f"the {spec.name} pipeline is not text-conditional; drop --captions")
    if spec.cond == "class":
        if args.labels:
            try:
                given = [int(v) for v in args.labels.split(",")]
            except ValueError:
                raise BadInputError(f"--labels must be comma-separated integers, got {args.labels!r}") from None
            bad = [v for v in given if not 0 <= v < spec.num_classes]
            if bad:
                raise BadInputError(f"--labels {bad} outside 0..{spec.num_classes - 1} of the {spec.name} pipeline")
        else:
            given = list(range(spec.num_classes))
        labels = torch.tensor([given[k % len(given)] for k in range(args.n)])
    elif args.labels:
        raise BadInputError(f"the {spec.name} pipeline is not class-conditional; drop --labels")
    return captions, labels
