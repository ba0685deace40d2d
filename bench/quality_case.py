"""The train-and-evaluate part of a case: train on an embedded dataset to a fixed budget, sample with
per-sample seeds, and score with the embedded detector (FID) and, for captions, the embedded CLIP."""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch

from metrics.reading import Reading


def _data(case: dict[str, Any], shape: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor, list[str] | None]:
    from bench import datasets

    if case["dataset"] == "digits":
        d = datasets.digits(shape[1])
        return d.images, d.labels, None
    from metrics.embedded import tokenize

    d = datasets.shapes(3000, shape[1], seed=case["seed"] + 1)
    return d.images, tokenize(d.captions or []), d.captions


def train_and_score(case: dict[str, Any], family: Any, config: Any) -> tuple[Any, dict[str, Reading]]:
    """Returns (the conditioned backbone config, readings)."""
    from bench.sampling import sample
    from bench.training import TrainConfig, train
    from metrics.embedded import VOCAB
    from models.api import count
    from models.denoiser import Denoiser

    shape = family.input_shape(config)
    images, conds, captions = _data(case, shape)
    cond = "text" if case["dataset"] == "shapes" else case.get("cond", "class")
    torch.manual_seed(case["seed"])
    model = Denoiser(family.name, config, cond, num_classes=10, vocab=len(VOCAB))
    flops = count(model.config).flops
    out: dict[str, Reading] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(steps=case["train_steps"], batch_size=case["train_batch"], lr=case["lr"], seed=case["seed"],
                          checkpoint_every=0)
        ema, res = train(model, images, conds if cond != "none" else None, cfg, tmp, flops_per_image=flops,
                         device=case["device"])
    k = max(1, min(10, len(res.losses) // 5))
    out["train_steps"] = Reading(res.steps, "steps")
    out["train_loss_first"] = Reading(sum(res.losses[:k]) / k, "1", samples=res.losses)
    out["train_loss_last"] = Reading(sum(res.losses[-k:]) / k, "1")
    out["train_seconds"] = Reading(res.seconds, "s")
    out["train_flops"] = Reading(res.train_flops, "FLOP", extra={"convention": "3 x forward FLOPs x images seen"})
    if "quality" not in case["measure"]:
        return model.config, out
    n = case["samples"]
    if captions is None:
        held_conds = torch.arange(n) % 10
    else:  # held-out captions: shapes the model never trained on
        from bench import datasets
        from metrics.embedded import tokenize

        held = datasets.shapes(n, shape[1], seed=case["seed"] + 777)
        held_conds, held_caps = tokenize(held.captions or []), held.captions or []
    t0 = time.perf_counter()
    samples = torch.cat(list(sample(ema, n, shape, None if cond == "none" else held_conds,
                                    case["scheduler"], case["sample_steps"], case["guidance"], case["seed"],
                                    batch_size=128, device=case["device"])))
    out["sample_ms_per_image"] = Reading((time.perf_counter() - t0) * 1e3 / n, "ms",
                                         extra={"steps": case["sample_steps"], "scheduler": case["scheduler"]})
    out.update(score(samples, images, case["dataset"], held_caps if captions is not None else None))
    return model.config, out


def score(samples: torch.Tensor, reference: torch.Tensor, dataset: str, captions: list[str] | None
          ) -> dict[str, Reading]:
    """FID of uint8 samples against the reference images with the dataset's embedded detector, and for
    captioned samples the embedded CLIP score with their own captions and with captions shifted by 7."""
    from metrics.detectors import build_detector, describe
    from metrics.quality import compare, extract

    det = build_detector(dataset)
    fid = compare(extract(samples, det), extract(reference, det))["fid"]
    out = {f"fid[{det.name}]": Reading(fid, "1", extra={**describe(det), "n_generated": len(samples),
                                                         "n_reference": len(reference)})}
    if captions is not None:
        from metrics import clip_score

        clip = clip_score.load("embedded")
        own, _ = clip_score.clip_score(clip, samples, captions)
        shuffled, _ = clip_score.clip_score(clip, samples, captions[7:] + captions[:7])
        meta = {"model": clip.name, "weights_sha256": clip.weights_sha256, "verified": clip.verified,
                "convention": clip_score.CONVENTION}
        out["clip_score"] = Reading(own, "1", extra=meta)
        out["clip_score_shuffled"] = Reading(shuffled, "1", extra=meta)
    return out
