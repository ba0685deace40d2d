"""MFU: achieved FLOP/s (counted FLOPs x evaluations per second) over the device's peak.

Peaks are dense (no 2:4 sparsity) tensor-core figures from NVIDIA's datasheets and
architecture whitepapers, keyed by the name torch reports and by the math mode the case
ran in. A device or dtype not in the table gives "not available", never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from diffbench.metrics.reading import Reading


@dataclass(frozen=True)
class Peak:
    key: str
    pattern: str  # regex over torch.cuda.get_device_name()
    tflops: dict[str, float]  # dtype -> dense peak TFLOP/s
    source: str


H100_SRC = "NVIDIA H100 Tensor Core GPU datasheet (dense = half the with-sparsity figures)"
PEAKS: list[Peak] = [
    Peak("H200", r"H200", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4},
         "NVIDIA H200 Tensor Core GPU datasheet (SXM; dense = half the with-sparsity figures)"),
    Peak("H100 PCIe", r"H100.*PCIe", {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0}, H100_SRC),
    Peak("H100 SXM", r"H100", {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4}, H100_SRC),
    Peak("A100", r"A100", {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0},
         "NVIDIA A100 Tensor Core GPU datasheet (40GB and 80GB, SXM and PCIe share the peaks)"),
    Peak("L40S", r"L40S", {"fp32": 91.6, "tf32": 183.0, "bf16": 362.05, "fp16": 362.05},
         "NVIDIA L40S datasheet (dense = half the with-sparsity figures)"),
    Peak("L4", r"\bL4\b", {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0},
         "NVIDIA L4 Tensor Core GPU datasheet (dense = half the with-sparsity figures)"),
    Peak("A10G", r"A10G?\b", {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0},
         "NVIDIA A10 datasheet (A10G is AWS's A10 variant; NVIDIA publishes no separate A10G sheet)"),
    Peak("RTX 4090", r"RTX 4090", {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2},
         "NVIDIA Ada Lovelace architecture whitepaper, Table 2 (FP16/BF16 tensor with FP32 accumulate)"),
    Peak("V100", r"V100", {"fp32": 15.7, "fp16": 125.0},
         "NVIDIA Tesla V100 datasheet (SXM2; no TF32 or BF16 tensor cores)"),
]


def peak_for(device_name: str, math_mode: str) -> tuple[float | None, str]:
    """(peak FLOP/s, source) or (None, reason)."""
    for p in PEAKS:
        if re.search(p.pattern, device_name):
            if math_mode not in p.tflops:
                return None, f"{p.key} has no {math_mode} peak in the MFU table"
            return p.tflops[math_mode] * 1e12, f"{p.key} {math_mode}: {p.source}"
    return None, f"no peak FLOP/s for {device_name!r} in the MFU table (metrics/mfu.py)"


def mfu(flops_per_eval: int, evals_per_s: float, device_name: str, math_mode: str) -> Reading:
    peak, source = peak_for(device_name, math_mode)
    if peak is None:
        return Reading.unavailable("1", source)
    achieved = flops_per_eval * evals_per_s
    return Reading(achieved / peak, "1", extra={"achieved_tflops": achieved / 1e12, "peak_tflops": peak / 1e12,
                                                 "peak_source": source})
