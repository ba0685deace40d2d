"""``diffbench train`` and ``diffbench sample``: a pipeline trained to a fixed budget, and sampled
(``diffbench.train`` and ``diffbench.sample``)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import diffbench
from diffbench.bench.formatting import render
from diffbench.bench.settings import DEFAULTS, PipelineJob, SampleJob, TrainJob, train_default
from diffbench.cli.app import (
    arg,
    command,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed_int,
)

PIPELINE_ARGS = [
    arg("pipeline", metavar="PIPELINE", help="a pipeline (see 'diffbench list pipelines'); for sample also a diffusers "
                                              "pipeline directory (model_index.json), loaded from local files only"),
    arg("--scale", choices=("paper", "tiny"), default=PipelineJob.scale,
        help="paper or tiny scale (default: %(default)s)"),
    arg("--params", metavar="N", help="reshape the denoisers to total N params (as 'diffbench count --params')"),
    arg("--device", default=PipelineJob.device, help="cpu or cuda[:N] (default: %(default)s)"),
    arg("--seed", type=seed_int, default=DEFAULTS.measurement.seed, help="seed (default: %(default)s)"),
    arg("--text-encoder", metavar="DIR", help="load the (first) text encoder from a local Hugging Face directory "
                                              "(model and tokenizer; frozen)"),
    arg("--autoencoder", metavar="DIR", help="load the autoencoder from a local diffusers AutoencoderKL directory"),
]


@command(
    "train",
    help="train a pipeline stage by stage to a fixed budget (autoencoder first when latent, then the prior, then "
         "each stage); resumes from its checkpoints when run again with the same arguments",
    examples=["diffbench train dit --dataset digits --steps 300 --out runs/dit-tiny",
              "diffbench train glide --dataset shapes --steps 400 --out runs/glide-tiny",
              "diffbench train ldm --dataset shapes --train-flops 5e12 --params 2M --out runs/ldm-2m"],
    args=[*PIPELINE_ARGS,
          arg("--dataset", default=DEFAULTS.training.dataset,
              help="digits, shapes (captions), a class-folder tree, a captioned folder (metadata.jsonl) or an "
                   "ADM-style .npz "
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
    result = diffbench.train(**_job_fields(TrainJob, args))
    print(render(result["parts"], ("part", "steps", "resumed_from", "loss_first", "loss_last", "seconds",
                                   "train_flops"), "table"))
    print(f"wrote {result['out']}")
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
          arg("--num-samples", "--n", dest="n", type=positive_int, default=SampleJob.n,
              help="number of images (default: %(default)s); spell it --num-samples under torchrun, whose own options "
                   "take --n"),
          arg("--steps", type=positive_int, help="sampling steps per stage (default: the pipeline's)"),
          arg("--guidance", type=non_negative_float,
              help="classifier-free guidance scale, 1 = none (default: the pipeline's)"),
          arg("--scheduler", help="ddpm, ddim, dpm-solver++, euler, or the papers' adm-ddpm, adm-ddim, dit-ddpm, "
                                  "uvit-dpm-solver (default: ddim; a diffusers directory's own)"),
          arg("--stage-weights", action="append", metavar="STAGE=DIR",
              help="load a diffusers-layout U-Net directory into a built-in pipeline's stage (repeatable)"),
          arg("--captions", nargs="+", metavar="TEXT", help="captions, cycled over the samples (text pipelines; "
                                                            "default: held-out procedural captions)"),
          arg("--captions-file", metavar="FILE", help="captions file: one per line, or a .jsonl with a \"caption\" "
                                                       "field per line (COCO-30K style); image k gets caption k"),
          arg("--labels", help="comma-separated class labels, cycled (class pipelines; default: k mod classes)"),
          arg("--batch-size", type=positive_int, default=SampleJob.batch_size,
              help="images per batch (default: %(default)s)"),
          arg("--format", choices=("png", "npz"), default=SampleJob.format,
              help="png files or one .npz (default: %(default)s)"),
          arg("--out", required=True, help="output directory: empty, or holding only earlier samples with "
                                            "--overwrite"),
          arg("--overwrite", action="store_true", help="replace the samples an earlier 'diffbench sample' wrote in "
                                                       "--out (other files are never touched: they are refused)")],
    distributed=True,
)
def run_sample(args: argparse.Namespace) -> int:
    result = diffbench.sample(**_job_fields(SampleJob, args))
    if not result["writer"]:
        return 0
    print(render(result["components"], ("component", "ms_per_image"), "table"))
    if result["ranks"] > 1:
        print(f"{result['ranks']} ranks; ms_per_image is device time summed over them")
    print(f"wrote {result['n']} images to {result['out']}")
    return 0


def _job_fields(job: type, args: argparse.Namespace) -> dict[str, Any]:
    """The job's fields, from the parsed arguments of the same names."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(job)}
