"""Training a pipeline to a fixed budget, and sampling one (built-in or a diffusers directory) into files: what
``diffbench.train`` and ``diffbench.sample`` do (the CLI's ``train`` and ``sample`` print what these return)."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffbench.bench.evaluate import save_pngs
from diffbench.bench.protocols import read_captions
from diffbench.bench.settings import DEFAULTS, PipelineJob, SampleJob, TrainJob
from diffbench.core.distributed import all_gather, barrier, current, shard
from diffbench.core.errors import BadInputError, ConfigError
from diffbench.core.files import atomic_path, output_dir, write_text_atomic
from diffbench.core.log import logger
from diffbench.core.progress import progress
from diffbench.diffusion import datasets
from diffbench.diffusion.pipeline_sampling import Timings, sample_pipeline
from diffbench.diffusion.pipeline_training import train_pipeline, training_data
from diffbench.diffusion.process import make_scheduler
from diffbench.diffusion.sampling import check_sampling, generators
from diffbench.diffusion.training import TrainConfig
from diffbench.metrics.device import resolve_device
from diffbench.models.pipelines import (
    PIPELINES,
    Pipeline,
    load_pipeline,
    load_unet_into_stage,
    save_pipeline,
    size_pipeline,
)
from diffbench.models.pipelines.spec import PipelineSpec
from diffbench.models.pretrained import (
    Instrument,
    PipelineDir,
    call_arguments,
    call_defaults,
    inspect_dir,
    is_pipeline_dir,
    load_dir,
    to_uint8,
)
from diffbench.models.quantities import parse_quantity

Maker = Callable[[int, int], torch.Tensor]  # make(b0, b1): uint8 NCHW images b0..b1-1


def _spec(args: PipelineJob) -> PipelineSpec:
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


def train(args: TrainJob) -> dict[str, Any]:
    """Train every part of a pipeline in turn (resuming from its checkpoints); writes ``pipeline.safetensors`` and
    ``train.json`` into ``args.out``; returns what train.json holds."""
    spec = _spec(args)
    cfg = TrainConfig(steps=args.steps, train_flops=args.train_flops, batch_size=args.batch_size, lr=args.lr,
                      seed=args.seed, checkpoint_every=args.checkpoint_every)
    out = output_dir(args.out)  # checked before the work, not after
    data, _ = training_data(spec, args.dataset, args.seed)
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
    summary = {"pipeline": spec.name, "dataset": args.dataset, "parts": rows,
               "losses": {p: r.losses for p, r in results.items()}}
    write_text_atomic(out / "train.json", json.dumps(summary, indent=1))
    return {**summary, "out": str(out / "pipeline.safetensors")}


def sample(args: SampleJob) -> dict[str, Any]:
    """Sample ``args.n`` images (image k seeded by (seed, k), whatever the batch size; under torchrun batch j made by
    rank j mod world size and written by rank 0) into PNGs or one .npz; returns the time per image of each
    component (device time summed over the ranks)."""
    if is_pipeline_dir(args.pipeline):
        make, timings, labels = _directory_sampler(args)
    else:
        make, timings, labels = _pipeline_sampler(args)
    return _write_samples(args, make, timings, labels)


def _pipeline_sampler(args: SampleJob) -> tuple[Maker, dict[str, float], torch.Tensor | None]:
    """(make(b0, b1) -> uint8 NCHW images b0..b1-1, seconds per component, labels) of a built-in pipeline."""
    spec = _spec(args)
    steps = spec.steps if args.steps is None else args.steps
    guidance = spec.guidance if args.guidance is None else args.guidance
    scheduler = args.scheduler or DEFAULTS.sampling.scheduler
    check_sampling(steps, guidance, args.batch_size)
    make_scheduler(scheduler)
    if current().is_writer:  # the folder is checked (and old samples removed) by rank 0, before any rank writes
        sample_folder(args.out, args.overwrite)
    barrier()  # every rank writes its own images: none may start before the check (it would count them as old)
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
        logger.info(f"no --checkpoint, so the weights are random (untrained){loaded}")
    timings = Timings(args.device)

    def make(b0: int, b1: int) -> torch.Tensor:
        return next(sample_pipeline(pipe, b1 - b0, None if tokens is None else tokens[b0:b1],
                                    None if labels is None else labels[b0:b1], scheduler, steps, guidance,
                                    args.seed, args.batch_size, args.device, start=b0, timings=timings))

    return make, timings.seconds, labels


def _directory_sampler(args: SampleJob) -> tuple[Maker, dict[str, float], torch.Tensor | None]:
    """The same for a diffusers pipeline directory: loaded from local files only, its own scheduler unless
    --scheduler names one, image k seeded by (seed, k), time per component from its calls."""
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
    if current().is_writer:  # the folder is checked (and old samples removed) by rank 0, before any rank writes
        sample_folder(args.out, args.overwrite)
    barrier()  # every rank writes its own images: none may start before the check (it would count them as old)
    captions, labels = _conditions(_DirSpec(info), args)
    pipe = load_dir(args.pipeline, args.scheduler or "own", args.device)
    inst = Instrument(args.device).attach(pipe)

    @torch.no_grad()
    def make(b0: int, b1: int) -> torch.Tensor:
        kw = call_arguments(pipe, info, b1 - b0, None if labels is None else labels[b0:b1].tolist(),
                            None if captions is None else captions[b0:b1], steps, guidance,
                            generators(args.seed, list(range(b0, b1))))
        return to_uint8(pipe(**kw).images)

    return make, inst.seconds, labels


class _DirSpec:
    """What ``_conditions`` reads of a pipeline, for a diffusers directory."""

    def __init__(self, info: PipelineDir) -> None:
        self.name, self.cond, self.num_classes = info.class_name, info.cond, max(info.classes, 1)


def _stage_weights(args: SampleJob) -> list[tuple[str, str]]:
    out = []
    for item in args.stage_weights or []:
        stage, sep, folder = item.partition("=")
        if not sep or not stage or not folder:
            raise BadInputError(f"--stage-weights {item!r}: expected STAGE=DIR (a diffusers U-Net directory)")
        out.append((stage, folder))
    return out


SAMPLE_NAME = re.compile(r"\d{6}\.png|samples\.npz|\.parts")  # what _write_samples writes (evaluate.save_pngs)


def sample_folder(out: str, overwrite: bool) -> Path:
    """``out``, ready for samples: a folder holding other files is refused (a later ``fid out`` would score them
    with the new samples), unless ``overwrite``, which removes the samples diffbench wrote there before and still
    refuses anything else."""
    folder = output_dir(out)
    present = sorted(p.name for p in folder.iterdir())
    ours = [n for n in present if SAMPLE_NAME.fullmatch(n)]
    others = [n for n in present if not SAMPLE_NAME.fullmatch(n)]
    if others or (ours and not overwrite):
        what = f"{len(ours)} earlier sample(s)" if ours and not others else f"other files ({', '.join(others[:3])})"
        fix = "pass --overwrite to replace them" if not others else "choose an empty folder"
        raise ConfigError(f"--out {out}: holds {what}; the new samples would be mixed with them: {fix}")
    for name in ours:
        if (folder / name).is_dir():  # .parts: an .npz's batches, left by a killed sampling
            shutil.rmtree(folder / name)
        else:
            (folder / name).unlink()
    return folder


def _write_samples(args: SampleJob, make: Maker, seconds: dict[str, float],
                   labels: torch.Tensor | None) -> dict[str, Any]:
    """Every rank writes the batches it makes (batch j by rank j mod world size): PNGs named by their global index,
    or for an .npz its batches as .npy parts that rank 0 then streams into one ``samples.npz``. No rank receives
    another's images (at FID-50K, 256 px, gathering them on rank 0 was 9.8 GB), so the memory of each rank does not
    grow with the sample count."""
    out = output_dir(args.out)
    world = current()
    parts = out / ".parts"
    bar = progress(args.n, "sampling", enabled=world.is_writer)
    for _, b0, b1 in shard(args.n, args.batch_size, world):
        images = make(b0, b1).permute(0, 2, 3, 1).numpy()
        if args.format == "npz":
            parts.mkdir(exist_ok=True)
            with atomic_path(parts / f"{b0:09d}.npy") as tmp:
                np.save(tmp, images)
        else:
            save_pngs(images, out, start=b0)
        bar.update(len(images) * world.size)  # the others make as many meanwhile
    bar.close()
    total: dict[str, float] = {}
    for part in all_gather(dict(seconds), world):  # device-seconds of every rank (numbers, not images)
        for k, v in part.items():
            total[k] = total.get(k, 0.0) + v
    result = {"n": args.n, "out": str(out), "ranks": world.size, "writer": world.is_writer}
    if not world.is_writer:
        return {**result, "components": []}
    if args.format == "npz":
        write_npz(out / "samples.npz", sorted(parts.glob("*.npy")), args.n, labels)
        shutil.rmtree(parts)
    rows = [{"component": k, "ms_per_image": v * 1e3 / args.n} for k, v in total.items()]
    rows.append({"component": "total", "ms_per_image": sum(total.values()) * 1e3 / args.n})
    return {**result, "components": rows}


def write_npz(path: Path, parts: list[Path], n: int, labels: torch.Tensor | None) -> None:
    """An ADM-style ``.npz`` (``arr_0`` uint8 NHWC, ``arr_1`` labels) streamed from its batches on disk, one batch
    in memory at a time (``np.savez`` needs the whole array)."""
    first = np.load(parts[0], mmap_mode="r")
    header = {"descr": np.lib.format.dtype_to_descr(first.dtype), "fortran_order": False,
              "shape": (n, *first.shape[1:])}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("arr_0.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            written = 0
            for part in parts:
                batch = np.load(part)
                f.write(np.ascontiguousarray(batch).tobytes())
                written += len(batch)
        assert written == n, (written, n)
        if labels is not None:
            with zf.open("arr_1.npy", "w") as f:
                np.lib.format.write_array(f, labels.numpy())


def _conditions(spec: PipelineSpec | _DirSpec, args: SampleJob) -> tuple[list[str] | None, torch.Tensor | None]:
    """(captions, labels) for the ``--n`` samples, cycled from the arguments or defaulted."""
    captions = labels = None
    given = args.captions
    if args.captions_file:
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
            captions = datasets.shapes(args.n, 16, seed=args.seed + 777).captions or []
        captions = [captions[k % len(captions)] for k in range(args.n)]
    elif given:
        raise BadInputError(f"the {spec.name} pipeline is not text-conditional; drop --captions")
    if spec.cond == "class":
        if args.labels:
            try:
                classes = [int(v) for v in args.labels.split(",")]
            except ValueError:
                raise BadInputError(f"--labels must be comma-separated integers, got {args.labels!r}") from None
            bad = [v for v in classes if not 0 <= v < spec.num_classes]
            if bad:
                raise BadInputError(f"--labels {bad} outside 0..{spec.num_classes - 1} of the {spec.name} pipeline")
        else:
            classes = list(range(spec.num_classes))
        labels = torch.tensor([classes[k % len(classes)] for k in range(args.n)])
    elif args.labels:
        raise BadInputError(f"the {spec.name} pipeline is not class-conditional; drop --labels")
    return captions, labels
