"""A user's own ``nn.Module`` as a subject: the protocol through which a research codebase is benchmarked from
the Python API without writing a family or a plugin (``diffbench.benchmark_module``).

The protocol: the module is called as ``model(**inputs(batch_size, device, dtype))``, where ``inputs``
is given to ``benchmark_module`` or is the module's own ``diffbench_inputs(batch_size, device, dtype)``
method, returning a dict of tensors (a denoiser's ``x``, ``t``, ``y`` or ``context``). It is counted
(parameters, and GMACs of one call at batch 1 by torch's flop counter) and timed and measured for
memory like any backbone. It runs in the calling process: a module object cannot be sent to a fresh
one, so there is no timeout and an abort ends the caller (suites' cases are isolated; this is not).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from diffbench.bench.spec import CaseSpec
from diffbench.bench.subjects import Evaluation, Held
from diffbench.core.errors import CaseUnsupported, ConfigError
from diffbench.metrics.reading import Reading

Inputs = Callable[[int, torch.device, torch.dtype], dict[str, torch.Tensor]]


def inputs_of(model: nn.Module, inputs: Inputs | None) -> Inputs:
    if inputs is not None:
        if not callable(inputs):
            raise ConfigError("inputs must be a function (batch_size, device, dtype) -> dict of tensors")
        return inputs
    own = getattr(model, "diffbench_inputs", None)
    if not callable(own):
        raise ConfigError(f"{type(model).__name__} has no diffbench_inputs(batch_size, device, dtype) method; pass "
                          "inputs=, a function returning the keyword arguments of one call")
    return own


class ModuleSubject:
    """Counts, speed and memory of a user's module; it is not trained or sampled here."""

    dataset = "none"
    cond = "none"
    num_classes = 0

    def __init__(self, model: nn.Module, inputs: Inputs, spec: CaseSpec) -> None:
        self.model, self.inputs, self.spec = model, inputs, spec

    def _call_inputs(self, batch: int, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        got = self.inputs(batch, device, dtype)
        if not isinstance(got, dict) or not all(isinstance(k, str) for k in got):
            raise ConfigError(f"inputs({batch}, ...) returned {type(got).__name__}; it must return a dict of keyword "
                              "arguments for one call of the module")
        return got

    def counts(self) -> dict[str, Reading]:
        from diffbench.metrics.counting import count_flops, count_params, flops_to_gmacs

        p = count_params(self.model)
        device = next((q.device for q in self.model.parameters()), torch.device("cpu"))
        args = self._call_inputs(1, device, torch.float32)
        with torch.no_grad():
            flops = count_flops(lambda: self.model(**args))
        return {"params": Reading(p.total, "count", extra={"by_module": p.by_module}),
                "params_trainable": Reading(p.trainable, "count"),
                "gmacs": Reading(flops_to_gmacs(flops), "GMAC",
                                 extra={"convention": "FlopCounterMode/2, batch 1, one call"}),
                "flops": Reading(flops, "FLOP")}

    def flops_per_image(self, counts: dict[str, Reading]) -> float | None:
        return None if counts.get("flops") is None else counts["flops"].value

    def evaluations(self) -> list[Evaluation]:
        device = torch.device(self.spec.device)
        model = self.model.to(device).eval()
        args = self._call_inputs(self.spec.batch_size, device, torch.float32)
        return [Evaluation(lambda: model(**args), self.spec.batch_size)]

    def breakdown(self, calls: int) -> dict[str, Reading]:
        return {}

    def train(self, out_dir: str, stop_after: int | None = None) -> dict[str, Any]:
        raise CaseUnsupported("a user's module is measured as it is; train it in its own codebase")

    def reference_images(self) -> torch.Tensor:
        raise CaseUnsupported("a user's module has no dataset here")

    def sample(self, n: int, held: Held) -> torch.Tensor:
        raise CaseUnsupported("a user's module is not sampled here")
