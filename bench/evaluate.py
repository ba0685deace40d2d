"""Train and score, once for every subject: train to the case's budget, sample held-out conditions
with per-sample seeds, and score with the dataset's embedded detector (FID) and, for captions, the
embedded CLIP (CLIP score with the samples' own captions and with captions shifted by 7)."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from diffbench.bench.spec import CaseSpec
from diffbench.bench.subjects import Subject, held_out
from diffbench.metrics.reading import Reading


def training_readings(results: dict[str, Any], steps: int) -> dict[str, Reading]:
    """Loss at the start and end (mean of the first and last few steps), steps, time and training FLOPs; with
    several parts (a pipeline's autoencoder, prior, stages), the losses per part: ``train_loss_last[part]``."""
    out: dict[str, Reading] = {}
    for part, r in results.items():
        k = max(1, min(10, len(r.losses) // 5))
        q = f"[{part}]" if part else ""
        out[f"train_loss_first{q}"] = Reading(sum(r.losses[:k]) / k, "1", samples=r.losses)
        out[f"train_loss_last{q}"] = Reading(sum(r.losses[-k:]) / k, "1")
    parts = [p for p in results if p]
    out["train_steps"] = Reading(steps, "steps",
                                 extra={"per": "part", "parts": parts} if parts else {})
    out["train_seconds"] = Reading(sum(r.seconds for r in results.values()), "s")
    flops = [r.train_flops for p, r in results.items() if p != "autoencoder"]
    out["train_flops"] = Reading(sum(flops) if flops and all(flops) else None, "FLOP",
                                 extra={"convention": "3 x forward FLOPs x images seen, summed over the denoising "
                                                      "parts (an autoencoder's training apart)"})
    return out


def score(samples: torch.Tensor, reference: torch.Tensor, dataset: str, captions: list[str] | None
          ) -> dict[str, Reading]:
    """FID of uint8 samples against the reference images with the dataset's embedded detector, and for
    captioned samples the embedded CLIP score with their own captions and with captions shifted by 7."""
    from diffbench.metrics.detectors import build_detector, describe
    from diffbench.metrics.quality import compare, extract

    det = build_detector(dataset)
    fid = compare(extract(samples, det), extract(reference, det))["fid"]
    out = {f"fid[{det.name}]": Reading(fid, "1", extra={**describe(det), "n_generated": len(samples),
                                                         "n_reference": len(reference)})}
    if captions is not None:
        from diffbench.metrics import clip_score

        clip = clip_score.load("embedded")
        own, _ = clip_score.clip_score(clip, samples, captions)
        shuffled, _ = clip_score.clip_score(clip, samples, captions[7:] + captions[:7])
        meta = {"model": clip.name, "weights_sha256": clip.weights_sha256, "verified": clip.verified,
                "convention": clip_score.CONVENTION}
        out["clip_score"] = Reading(own, "1", extra=meta)
        out["clip_score_shuffled"] = Reading(shuffled, "1", extra=meta)
    return out


def train_and_score(subject: Subject, spec: CaseSpec) -> dict[str, Reading]:
    assert spec.training is not None and spec.sampler is not None, "a case that trains carries both settings"
    with tempfile.TemporaryDirectory() as tmp:
        out = training_readings(subject.train(tmp), spec.training.train_steps)
    if not spec.measures("quality"):
        return out
    n, reference = spec.training.samples, subject.reference_images()
    held = held_out(subject.cond, n, reference.shape[-1], spec.seed, subject.num_classes)
    t0 = time.perf_counter()
    samples = subject.sample(n, held)
    s = spec.sampler
    out["sample_ms_per_image"] = Reading((time.perf_counter() - t0) * 1e3 / n, "ms",
                                         extra={"steps": s.sample_steps, "scheduler": s.scheduler})
    out.update(score(samples, reference, subject.dataset, held.captions))
    return out
