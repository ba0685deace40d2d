"""Counting: parameters and multiply-accumulates of one network evaluation.

Conventions (docs/reference.md): params count every ``nn.Parameter`` (frozen ones included;
"trainable" apart). GMACs are for one image and one network evaluation; torch's flop counter
counts 2 FLOPs per MAC, so GMACs = FlopCounterMode total / 2 / 1e9. Both are reported.

Pitfall: on CPU, ``scaled_dot_product_attention`` dispatches to a fused kernel that the flop
counter does not know, so attention silently counts as zero (DiT-S/2 reads 10% low). Count
on the ``meta`` device (no memory, no compute: billion-parameter models count in seconds)
and, belt and braces, inside ``sdpa_kernel(SDPBackend.MATH)`` so real tensors count right too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

FLOPS_PER_MAC = 2


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int
    by_module: dict[str, int] = field(default_factory=dict)  # top-level children, in definition order


def count_params(model: nn.Module) -> ParamCount:
    """Every parameter (shared ones once), trainable ones, and the split over top-level modules."""
    seen: set[int] = set()
    total = trainable = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    by_module: dict[str, int] = {}
    for name, child in model.named_children():
        n = sum(p.numel() for p in child.parameters())
        if n:
            by_module[name] = n
    direct = sum(p.numel() for p in model.parameters(recurse=False))
    if direct:
        by_module["(own)"] = direct
    return ParamCount(total, trainable, by_module)


def count_flops(call: Callable[[], Any]) -> int:
    """FLOPs of ``call()`` as torch's flop counter sees them (2 per multiply-accumulate)."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def flops_to_gmacs(flops: int) -> float:
    return flops / FLOPS_PER_MAC / 1e9
