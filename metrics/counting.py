"""Counting: parameters and multiply-accumulates of one network evaluation.

Conventions (docs/reference.md): params count every ``nn.Parameter`` (frozen ones included;
"trainable" apart). GMACs are for one image and one network evaluation; torch's flop counter
counts 2 FLOPs per MAC, so GMACs = FlopCounterMode total / 2 / 1e9. Both are reported.

Pitfall: on CPU, ``scaled_dot_product_attention`` dispatches to a fused kernel that the flop
counter does not know, so attention silently counts as zero (DiT-S/2 reads 10% low). Count
on the ``meta`` device (no memory, no compute: billion-parameter models count in seconds)
and, belt and braces, inside ``sdpa_kernel(SDPBackend.MATH)`` so real tensors count right too.

Pitfall: ``nn.TransformerEncoder``/``nn.MultiheadAttention`` in eval mode under ``no_grad`` take a fused
"fast path" (``torch._transformer_encoder_layer_fwd``) that the counter also cannot see: a 0.25-GMAC
encoder read 0.0006. The one counting mode, for every subject: the module in eval mode (as it is
timed: dropout off, normalisation statistics untouched), no autograd, and PyTorch's MHA fast path
switched off for the count (``torch.backends.mha.set_fastpath_enabled``), so the math ops run and
are counted whatever mode the caller left the module in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

FLOPS_PER_MAC = 2


@dataclass(frozen=True)
class ParamCount:
    total: int
    trainable: int
    by_module: dict[str, int] = field(default_factory=dict)  # top-level children, in definition order
    bytes: int = 0  # parameters and buffers as held (their own dtypes): the model's own memory, exactly


def count_params(model: nn.Module) -> ParamCount:
    """Every parameter (shared ones once), trainable ones, and the split over top-level modules."""
    seen: set[int] = set()
    total = trainable = size = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        size += p.numel() * p.element_size()
    size += sum(b.numel() * b.element_size() for b in {id(b): b for b in model.buffers()}.values())
    by_module: dict[str, int] = {}
    for name, child in model.named_children():
        n = sum(p.numel() for p in child.parameters())
        if n:
            by_module[name] = n
    direct = sum(p.numel() for p in model.parameters(recurse=False))
    if direct:
        by_module["(own)"] = direct
    return ParamCount(total, trainable, by_module, size)


@contextmanager
def no_fused_fast_paths() -> Iterator[None]:
    before = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(before)


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``module`` in eval mode for the block; every submodule's own training flag is restored after."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, training in flags:
            m.training = training


def count_flops(call: Callable[[], Any]) -> int:
    """FLOPs of ``call()`` as torch's flop counter sees them (2 per multiply-accumulate), without autograd and
    with the fused kernels the counter cannot see switched off. The caller puts the modules in eval mode
    (``eval_mode``): the module docstring's one counting mode."""
    with torch.no_grad(), no_fused_fast_paths(), FlopCounterMode(display=False) as counter:
        call()
    return int(counter.get_total_flops())


def flops_to_gmacs(flops: int) -> float:
    return flops / FLOPS_PER_MAC / 1e9
