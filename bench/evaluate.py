"""Train and score, once for every subject: train to the case's budget, sample held-out conditions
with per-sample seeds, and score with the dataset's embedded detector (FID) and, for captions, the
embedded CLIP (CLIP score with the samples' own captions and with captions shifted by 7)."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from diffbench.bench import precision, workdir
from diffbench.bench.backbone_subject import BackboneSubject
from diffbench.bench.protocols import conditions
from diffbench.bench.spec import CaseSpec
from diffbench.bench.subjects import Held, Subject, held_out
from diffbench.core import distributed
from diffbench.core.files import atomic_path, output_dir
from diffbench.diffusion.conditioning import condition_gain
from diffbench.metrics import clip_score, quality
from diffbench.metrics.detectors import build_detector, describe
from diffbench.metrics.device import device_name
from diffbench.metrics.inputs import LazyBatches
from diffbench.metrics.intervals import bootstrap
from diffbench.metrics.mfu import peak_for
from diffbench.metrics.quality import extract, load_side
from diffbench.metrics.reading import Reading
from diffbench.metrics.refcache import cached_extract
from diffbench.metrics.specs import MetricKey, metric_name
from diffbench.metrics.stats import is_stats_file


def _data_notes(subject: Subject, results: dict[str, Any]) -> dict[str, Any]:
    """What the training read, for its records: the dataset's identity, and with skip_bad the files it skipped
    (found when listed, or undecodable when read), counted."""
    source = getattr(subject, "source", None) if isinstance(subject, BackboneSubject) else None
    if source is None:
        return {}
    listing = getattr(source, "listing", None)
    at_listing = list(listing.skipped) if listing is not None else []
    unread = sorted({f for r in results.values() for f in r.timing.get("skipped_files", [])})
    notes: dict[str, Any] = {"data": {**source.identity(), "items": len(source)}}
    if at_listing or unread:
        notes["data"].update(skipped=len(at_listing) + len(unread), skipped_when_listed=at_listing[:20],
                             undecodable=unread[:20])
    return notes


def loop_readings(results: dict[str, Any], device: str) -> dict[str, Reading]:
    """The training loop's own measurements (``diffusion/steps.py``'s StepTimer) over every part it trained (a
    pipeline's stages together): throughput, step time, the fraction spent waiting for data, and training MFU where
    the device's peak is known."""
    timed = [r for r in results.values() if r.timing.get("timed_steps")]
    if not timed:
        return {}
    steps = [ms for r in timed for ms in r.timing["step_ms"]]
    busy = sum(steps) / 1e3
    images = sum(r.timing["images_per_s"] * sum(r.timing["step_ms"]) / 1e3 for r in timed)
    world = {"world_size": max(r.timing["world_size"] for r in timed), "timed_steps": len(steps),
             "images_seen": sum(r.images_seen for r in timed),
             "resumed_from": max(r.resumed_from for r in timed), **({"parts": len(timed)} if len(timed) > 1 else {})}
    q = np.quantile(np.asarray(steps), [0.5, 0.9])
    waits = sum(r.timing["data_wait_fraction"] * sum(r.timing["step_ms"]) / 1e3 for r in timed)
    out = {"train_images_per_s": Reading(images / busy, "img/s", extra=world),
           "train_step_ms": Reading(float(q[0]), "ms", samples=steps,
                                    extra={**world, "p90_ms": float(q[1]),
                                           "first_step_ms": timed[0].timing["first_step_s"] * 1e3}),
           "train_data_wait": Reading(waits / busy, "1", extra=world)}
    flops = sum(r.train_flops or 0 for r in timed)
    seen = sum(r.images_seen for r in timed)
    mode = "bf16" if device.startswith("cuda") else "fp32"
    peak, source = peak_for(device_name(device), mode)
    if not flops or not seen:
        out["train_mfu"] = Reading.unavailable("1", "the training FLOPs were not counted")
    elif peak is None:
        out["train_mfu"] = Reading.unavailable("1", source)
    else:  # the FLOPs of an image (3 x forward) x the images trained per second, over the world's peak
        out["train_mfu"] = Reading(flops / seen * images / busy / (peak * world["world_size"]), "1",
                                   extra={"peak_source": source, **world})
    return out


def training_readings(results: dict[str, Any], steps: int) -> dict[str, Reading]:
    """Loss at the start and end (mean of the first and last few steps), steps, time and training FLOPs; with
    several parts (a pipeline's autoencoder, prior, stages), the losses per part: ``train_loss_last[part]``."""
    out: dict[str, Reading] = {}
    for part, r in results.items():
        k = max(1, min(10, len(r.losses) // 5))
        out[metric_name("train_loss_first", part)] = Reading(sum(r.losses[:k]) / k, "1", samples=r.losses)
        out[metric_name("train_loss_last", part)] = Reading(sum(r.losses[-k:]) / k, "1")
    parts = [p for p in results if p]
    scored = {p or "model": r.extra for p, r in results.items() if r.extra}  # which weights are scored, per part
    resumed = {p or "model": r.resumed_from for p, r in results.items() if r.resumed_from}
    out["train_steps"] = Reading(steps, "steps",
                                 extra={**({"per": "part", "parts": parts} if parts else {}), "scored": scored,
                                        **({"resumed_from": resumed} if resumed else {})})
    out["train_seconds"] = Reading(sum(r.seconds for r in results.values()), "s")
    flops = [r.train_flops for p, r in results.items() if p != "autoencoder"]
    out["train_flops"] = Reading(sum(flops) if flops and all(flops) else None, "FLOP",
                                 extra={"convention": "3 x forward FLOPs x images seen, summed over the denoising "
                                                      "parts (an autoencoder's training apart)"})
    return out


def condition_reading(subject: Subject, spec: CaseSpec) -> Reading | None:
    """The trained backbone's condition gain (``diffusion/conditioning.py``): how much its scored weights use the
    label or caption; None for an unconditional model and for a pipeline (its stages have their own conditions)."""
    if not isinstance(subject, BackboneSubject) or subject.cond == "none" or subject.ema is None:
        return None
    if not distributed.current().is_writer:  # rank 0 records it; the other ranks of the case need not compute it
        return None

    images, conds = subject.training_data()
    if conds is None:
        return None
    g = condition_gain(subject.ema, images, conds, spec.training.prediction if spec.training else "epsilon",
                       seed=spec.seed, device=spec.device)
    return Reading(g.gain, "1", extra=g.extra())


def score(samples: torch.Tensor, reference: torch.Tensor, detector: str, captions: list[str] | None, seed: int,
          kid: bool = True, ref: Any = None) -> dict[str, Reading]:
    """Quality of uint8 samples with the dataset's embedded detector, through the one scorer
    (:func:`diffbench.metrics.quality.score`), each number with its 95% interval over the generated samples: FID
    (bootstrap), KID (unbiased at small N; half-samples), and the floor FID reaches at this sample count (as many
    real images as samples, against the reference). For captioned samples the embedded CLIP score with their own
    captions and with captions shifted by 7."""
    det = build_detector(detector)
    gen = extract(samples, det, keep_features=True)
    if ref is None:  # the reference's features: passed in by a caller that scores several times
        ref = extract(reference, det, keep_features=True)
    ident = {**describe(det), "n_generated": len(samples), "n_reference": len(reference)}
    # an evaluation along training (kid False): FID only
    readings = quality.score(gen, ref, quality.Asked(kid=kid, fid_real=kid, intervals=True), seed)
    out = {metric_name(name, det.name): dataclasses.replace(r, extra={**ident, **r.extra})
           for name, r in readings.items()}
    if kid and captions is not None:
        out.update(clip_readings(clip_score.load("embedded"), samples, captions, seed))
    return out


def clip_readings(clip: Any, samples: torch.Tensor, captions: list[str], seed: int, protocol: str = ""
                  ) -> dict[str, Reading]:
    """CLIP score with the samples' own captions and with captions shifted by 7 (a chance baseline), each with its
    bootstrap interval; a protocol's are named ``clip_score[PROTOCOL:CLIP]``."""
    _, own = clip_score.clip_score(clip, samples, captions)
    _, shuffled = clip_score.clip_score(clip, samples, captions[7:] + captions[:7])
    meta = {"model": clip.name, "weights_sha256": clip.weights_sha256, "verified": clip.verified,
            "convention": clip_score.CONVENTION, **({"protocol": protocol, "n": len(samples)} if protocol else {})}
    out = {}
    for name, per in (("clip_score", own), ("clip_score_shuffled", shuffled)):
        iv = bootstrap(lambda x: float(x.mean()), per, seed=seed)
        key = metric_name(name, f"{protocol}:{clip.name}") if protocol else name
        out[key] = Reading(iv.value, "1", extra={**meta, **iv.extra()})
    return out


def train_and_score(subject: Subject, spec: CaseSpec) -> dict[str, Reading]:
    """Train (with DiT's Figure-9 evaluations along the way when ``eval_every`` is set), then sample and score."""
    assert spec.training is not None and spec.sampler is not None, "a case that trains carries both settings"
    t0 = time.perf_counter()
    t = spec.training
    n, reference = t.samples, subject.reference_images()
    held = held_out(subject.cond, n, reference.shape[-1], spec.seed, subject.num_classes,
                    getattr(subject, "source", None))
    evaluating = 0.0
    ref, cache = None, None
    if spec.measures("quality"):  # the reference's features once for every evaluation, from the cache if there
        e0 = time.perf_counter()
        lookup = cached_extract(reference, build_detector(subject.detector), keep_features=True)
        ref, cache = lookup.side, {"hit": lookup.hit, "key": lookup.key}
        evaluating += time.perf_counter() - e0
    with _training_dir() as tmp:
        results, curve, seconds = _train_along(subject, spec, held, reference, ref, tmp)
        evaluating += seconds
        out = training_readings(results, t.train_steps)
        out["train_steps"].extra.update(_data_notes(subject, results))
        out.update(loop_readings(results, spec.device))
        gain = condition_reading(subject, spec)
        if gain is not None:
            out["cond_gain"] = gain
    out[metric_name("phase_seconds", "train")] = Reading(time.perf_counter() - t0 - evaluating, "s")
    if evaluating:
        out[metric_name("phase_seconds", "evaluate")] = Reading(evaluating, "s", extra={"evaluations": len(curve)})
    if spec.measures("quality"):
        out.update(_sample_and_score(subject, spec, results, curve, held, reference, ref, cache))
    return out


@contextlib.contextmanager
def _training_dir() -> Iterator[str]:
    """Where the case's training checkpoints: its working directory in the run (``RUN_DIR/cases/CASE_ID/train``,
    so that a killed or preempted case continues from its checkpoint under --resume), else a temporary one."""
    work = workdir.working_dir()
    if work is None:
        with tempfile.TemporaryDirectory() as tmp:
            yield tmp
        return
    path = Path(work) / "train"
    path.mkdir(parents=True, exist_ok=True)
    yield str(path)


def _train_along(subject: Subject, spec: CaseSpec, held: Held, reference: torch.Tensor, ref: Any,
                 tmp: str) -> tuple[dict[str, Any], list[dict[str, Any]], float]:
    """(the training results, FID along training, seconds spent evaluating): with ``eval_every`` and quality, the
    training stops at each evaluation, is scored, and resumes from its checkpoint (DiT's Figure 9, one run)."""
    assert spec.training is not None
    t, n = spec.training, spec.training.samples
    curve: list[dict[str, Any]] = []
    earlier = evaluating = 0.0
    resumed: int | None = None  # where this process found the training (a preempted case's checkpoint)
    if t.eval_every and spec.measures("quality"):
        for step in range(t.eval_every, t.train_steps, t.eval_every):
            part = subject.train(tmp, stop_after=step)[""]  # resumes from the last evaluation's checkpoint
            resumed = part.resumed_from if resumed is None else resumed
            if part.steps != step:  # resumed past this point (a preempted case): its evaluation went with it
                continue
            earlier += part.seconds
            e0 = time.perf_counter()
            point = score(_samples(subject, n, held), reference, subject.detector, None, spec.seed, kid=False,
                          ref=ref)
            evaluating += time.perf_counter() - e0
            fid = next(r for k, r in point.items() if MetricKey.parse(k).base == "fid")
            curve.append({"step": step, "train_flops": part.train_flops, "value": fid.value,
                          "ci95": fid.extra.get("ci95")})
    results = subject.train(tmp)
    if resumed is not None:
        results[""].resumed_from = resumed
    if earlier:
        results[""].seconds += earlier  # the training time of every segment, not only the last
    return results, curve, evaluating


def _samples(subject: Subject, n: int, held: Held) -> Any:
    """The n samples to score: made now, or, in a case of several ranks (class or unconditional), made batch by
    batch as the detector reads them, each rank its own batches (metrics/inputs.py's LazyBatches): rank 0
    receives the detector's sums, never images. Captioned samples are made on rank 0 (their CLIP score reads
    them)."""
    if distributed.current().is_distributed and held.captions is None and hasattr(subject, "sample_range"):
        return LazyBatches(lambda b0, b1: subject.sample_range(b0, b1, held), n, 128)
    return subject.sample(n, held)


def _sample_and_score(subject: Subject, spec: CaseSpec, results: dict[str, Any], curve: list[dict[str, Any]],
                      held: Held, reference: torch.Tensor, ref: Any,
                      cache: dict[str, Any] | None) -> dict[str, Reading]:
    """The trained model's samples, timed and scored against the reference (the FID curve on the final FID)."""
    assert spec.training is not None and spec.sampler is not None
    n, s = spec.training.samples, spec.sampler
    t0 = time.perf_counter()
    samples = _samples(subject, n, held)
    sampling = time.perf_counter() - t0
    t0 = time.perf_counter()
    got = score(samples, reference, subject.detector, held.captions, spec.seed, ref=ref)
    scoring = time.perf_counter() - t0
    if isinstance(samples, LazyBatches):  # made while the detector read them: this rank's sampling time apart
        sampling, scoring = samples.seconds, scoring - samples.seconds
    world = distributed.current().size
    out = {"sample_ms_per_image": Reading(sampling * 1e3 / n, "ms",
                                          extra={"steps": s.sample_steps, "scheduler": s.scheduler,
                                                 **({"world_size": world} if world > 1 else {})}),
           metric_name("phase_seconds", "sample"): Reading(sampling, "s")}
    scored = {p or "model": r.extra for p, r in results.items() if r.extra}
    for name, reading in got.items():
        reading.extra["scored"] = scored  # the EMA's kind and parameters, and the weight left on the init
        key = MetricKey.parse(name)
        if cache is not None and key.qualifier:  # detector metrics: whether the reference came from the cache
            reading.extra["reference_cache"] = cache
        if curve and key.base == "fid":
            final = results[""]
            reading.extra["curve"] = [*curve, {"step": final.steps, "train_flops": final.train_flops,
                                               "value": reading.value, "ci95": reading.extra.get("ci95")}]
        out[name] = reading
    out[metric_name("phase_seconds", "score")] = Reading(scoring, "s")
    return out


def score_pretrained(subject: Subject, spec: CaseSpec, case_id: str) -> dict[str, Reading]:
    """A system that arrives trained, scored by its protocol (``bench/protocols.py``): the protocol's conditions
    sampled with per-sample seeds, then FID (and KID where the reference has images) with the protocol's detector
    against its reference (reference features from the cache), and for captions the CLIP score with the protocol's
    CLIP, own captions and shifted by 7."""
    assert spec.protocol is not None and spec.sampler is not None, "a pretrained system is scored by a protocol"
    p = spec.protocol
    labels, captions = conditions(p)
    held = Held(torch.tensor(labels) if labels is not None else None, captions)
    t0 = time.perf_counter()
    with precision.precision(spec.precision, spec.device, spec.attention):  # scored as it is timed: bf16 is bf16
        samples = subject.sample(p.samples, held)
    sampling = time.perf_counter() - t0
    s = spec.sampler
    out = {"sample_ms_per_image": Reading(sampling * 1e3 / p.samples, "ms",
                                          extra={"steps": s.sample_steps, "scheduler": s.scheduler,
                                                 "guidance": s.guidance, "batch_size": spec.batch_size,
                                                 **getattr(subject, "sampling", {})}),
           metric_name("phase_seconds", "sample"): Reading(sampling, "s")}
    if p.save_samples:
        save_pngs(samples, Path(p.save_samples) / case_id)
    t0 = time.perf_counter()
    out.update(score_with(samples, p, captions, spec.seed, spec.device))
    out[metric_name("phase_seconds", "score")] = Reading(time.perf_counter() - t0, "s")
    return out


def save_pngs(samples: Any, folder: Path, start: int = 0) -> None:
    """uint8 images (NCHW tensor, or NHWC array) -> folder/{start:06d}.png ..., each written atomically (lossless:
    a folder FID equals the in-memory one)."""
    output_dir(folder)
    arrays = samples.permute(0, 2, 3, 1).numpy() if isinstance(samples, torch.Tensor) else samples
    for k, img in enumerate(arrays, start=start):
        with atomic_path(folder / f"{k:06d}.png") as tmp:
            Image.fromarray(img).save(tmp, format="PNG")


def score_with(samples: torch.Tensor, p: Any, captions: list[str] | None, seed: int, device: str
               ) -> dict[str, Reading]:
    """FID and KID of ``samples`` with the protocol's detector against its reference, through the one scorer
    (:func:`diffbench.metrics.quality.score`, as ``diffbench fid SAMPLES REFERENCE`` scores them), and the CLIP
    scores."""
    det = build_detector(p.detector, p.mode or None, p.weights or None, p.allow_unverified, device)
    reference = Path(p.reference)
    stats_only = is_stats_file(reference)
    keep = p.kid and not stats_only
    gen = extract(samples, det, keep_features=True)
    cache: dict[str, Any] | None = None
    if stats_only:
        ref = load_side(reference, det, False)
    else:
        lookup = cached_extract(reference, det, keep_features=keep)
        ref, cache = lookup.side, {"hit": lookup.hit, "key": lookup.key}
    q = p.qualifier(det.name, det.mode)
    ident = {**describe(det), "protocol": p.name, "protocol_source": p.source, "n_generated": len(samples),
             "n_reference": ref.count, "seed": seed, **({"reference_cache": cache} if cache else {})}
    readings = quality.score(gen, ref, quality.Asked(kid=keep, intervals=True), seed)
    out = {metric_name(name, q): dataclasses.replace(r, extra={**ident, **r.extra})
           for name, r in readings.items()}
    if captions is not None:
        out.update(clip_readings(clip_score.load(p.clip, p.clip_arch, p.allow_unverified), samples, captions, seed,
                                 protocol=p.name))
    return out
