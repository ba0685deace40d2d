"""The scale model behind docs/scale.md: how long DiT's Table 4 protocol and the ``matched`` suite take
on 1, 8 and 64 GPUs, and where the time goes.

Every network's cost is *counted* here (diffbench's exact GMACs of the DiT presets, the SD-VAE
encoder and decoder at 256 px, Inception-v3 at 299 px); what turns MACs into seconds is an
assumption given on the command line: the GPU's dense bf16 peak and the fraction of it reached
(MFU), and the fixed cost of starting one case. Nothing here is a measurement of a GPU.

    python scripts/scale_model.py --peak-tflops 989 --train-mfu 0.40 --sample-mfu 0.30 > table.md
"""

from __future__ import annotations

import argparse
import heapq
import math

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

DIT_TABLE4 = ["DiT-S/8", "DiT-S/4", "DiT-S/2", "DiT-B/8", "DiT-B/4", "DiT-B/2", "DiT-L/8", "DiT-L/4", "DiT-L/2",
              "DiT-XL/8", "DiT-XL/4", "DiT-XL/2"]
STEPS, BATCH, SAMPLES, SAMPLING_STEPS = 400_000, 256, 50_000, 250  # DiT's protocol (Table 4: no guidance)
LATENTS_ONCE_GPU_H = 0.5  # encoding ImageNet's 1.28M images and their mirrors once (2 x 0.25 h), training MFU


def gmacs_of(fn) -> float:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc, torch.no_grad():
        fn()
    return fc.get_total_flops() / 2 / 1e9


def counted() -> dict[str, float]:
    import torchvision

    import diffbench
    from diffbench.models.pipelines.modules import build_autoencoder
    from diffbench.models.pipelines.presets import SD_VAE
    from diffbench.models.pipelines.spec import AutoencoderSpec

    out = {p: diffbench.count(p).gmacs for p in DIT_TABLE4}
    with torch.device("meta"):
        vae = build_autoencoder(AutoencoderSpec(SD_VAE))
        inception = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    out["vae_encode_256"] = gmacs_of(lambda: vae.encode(torch.zeros(1, 3, 256, 256, device="meta")))
    out["vae_decode_256"] = gmacs_of(lambda: vae.decode(torch.zeros(1, 4, 32, 32, device="meta")))
    out["inception_299"] = gmacs_of(lambda: inception(torch.zeros(1, 3, 299, 299, device="meta")))
    return out


def makespan(jobs: list[float], gpus: int) -> float:
    """Longest-processing-time-first schedule of single-GPU jobs on ``gpus`` GPUs (what one case per GPU gives)."""
    load = [0.0] * gpus
    heapq.heapify(load)
    for j in sorted(jobs, reverse=True):
        heapq.heappush(load, heapq.heappop(load) + j)
    return max(load)


def hours(s: float) -> str:
    return f"{s / 3600:,.1f} h" if s >= 3600 else f"{s / 60:,.1f} min"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak (H100 SXM: 989)")
    ap.add_argument("--train-mfu", type=float, default=0.40)
    ap.add_argument("--sample-mfu", type=float, default=0.30, help="sampling batches are smaller; less reached")
    ap.add_argument("--case-overhead-s", type=float, default=20.0,
                    help="start of one case: process, imports, CUDA context, warm-up (assumed)")
    ap.add_argument("--gpus", default="1,8,64")
    args = ap.parse_args()
    g = counted()
    peak = args.peak_tflops * 1e12
    train_rate, sample_rate = peak * args.train_mfu, peak * args.sample_mfu
    print(f"Counted: VAE encoder {g['vae_encode_256']:.1f} GMACs and decoder {g['vae_decode_256']:.1f} GMACs "
          f"per 256 px image; Inception-v3 {g['inception_299']:.2f} GMACs per 299 px image.\n")
    print(f"Assumed: {args.peak_tflops:g} TFLOP/s bf16 peak; MFU {args.train_mfu:.0%} training, "
          f"{args.sample_mfu:.0%} sampling; {args.case_overhead_s:g} s to start a case.\n")
    print("| model | GMACs | train (400K x 256) | of which VAE encode | sample 50K x 250 | decode 50K | "
          "Inception 50K | total |")
    print("|---|---|---|---|---|---|---|---|")
    per_model: dict[str, dict[str, float]] = {}
    for p in DIT_TABLE4:
        m = g[p]
        train = 2 * (3 * m + g["vae_encode_256"]) * 1e9 * STEPS * BATCH / train_rate  # fwd+bwd = 3 forwards
        encode = 2 * g["vae_encode_256"] * 1e9 * STEPS * BATCH / train_rate
        sample = 2 * m * 1e9 * SAMPLES * SAMPLING_STEPS / sample_rate
        decode = 2 * g["vae_decode_256"] * 1e9 * SAMPLES / sample_rate
        feats = 2 * g["inception_299"] * 1e9 * SAMPLES / sample_rate
        per_model[p] = {"train": train, "sample": sample + decode + feats}
        print(f"| {p} | {m:.2f} | {hours(train)} | {hours(encode)} | {hours(sample)} | {hours(decode)} | "
              f"{hours(feats)} | {hours(train + sample + decode + feats)} |")
    total_train = sum(v["train"] for v in per_model.values())
    total_eval = sum(v["sample"] for v in per_model.values())
    print(f"\nTable 4 in all: training {hours(total_train)}, sampling and scoring {hours(total_eval)} "
          f"(GPU time).\n")
    encode = 2 * g["vae_encode_256"] * 1e9 * STEPS * BATCH / train_rate  # per model, when encoded on the fly
    print("| GPUs | one case per GPU | each case data-parallel on all GPUs (devices_per_case x nodes) | "
          "the same on latents from `diffbench latents` |")
    print("|---|---|---|---|")
    for n in (int(x) for x in args.gpus.split(",")):
        cases = [v["train"] + v["sample"] + args.case_overhead_s for v in per_model.values()]
        spread = (total_train + total_eval) / n + args.case_overhead_s * len(cases)
        latents = spread - len(per_model) * encode / n + LATENTS_ONCE_GPU_H * 3600 / n
        print(f"| {n} | {hours(makespan(cases, n))} | {hours(spread)} | {hours(latents)} |")
    matched = 5 * 4 * 2  # families x sizes x batch sizes of the matched suite: speed cases, no training
    per_case = args.case_overhead_s + 3 * 1.0  # start + warm-up and the 1 s minimum timing of speed and memory
    print(f"\nmatched suite ({matched} cases, about {per_case:g} s each): " + ", ".join(
        f"{n} GPU{'s' if n > 1 else ''}: {hours(math.ceil(matched / n) * per_case)}"
        for n in (int(x) for x in args.gpus.split(","))))


if __name__ == "__main__":
    main()
