"""The diffusers-directory adapter of the subject contract: a pretrained pipeline loaded from local files,
counted and timed per component (``models/pretrained.py``), sampled with per-sample seeds for its protocol.

It arrives trained: it is not trained here (``train`` is refused when the suite is read), and it is scored by the
suite's protocol (``bench/protocols.py``), not by the embedded datasets.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch

from diffbench.bench.spec import CaseSpec, DiffusersRef
from diffbench.bench.subjects import Evaluation, Held
from diffbench.core.errors import CaseUnsupported
from diffbench.core.files import content_sha256
from diffbench.core.progress import progress
from diffbench.diffusion.sampling import generators
from diffbench.metrics.counting import no_fused_fast_paths
from diffbench.metrics.reading import Reading
from diffbench.metrics.specs import metric_name
from diffbench.models.pretrained import (
    Instrument,
    call_arguments,
    component_kind,
    inspect_dir,
    load_dir,
    modules,
    to_uint8,
)

TIMING_PROMPT = "a photograph of an astronaut riding a horse"  # padded to the text encoder's length like any prompt


class DiffusersSubject:
    def __init__(self, spec: CaseSpec) -> None:
        assert isinstance(spec.model, DiffusersRef) and spec.sampler is not None, "pipelines carry sampler settings"
        if spec.compile or spec.channels_last:
            raise CaseUnsupported("compile and channels_last apply to backbones; a pipeline is timed as loaded")
        m = spec.model
        if content_sha256(Path(m.path)) != m.sha256:
            raise CaseUnsupported(f"{m.path} changed since the suite was expanded; run it again")
        self.spec, self.sampler = spec, spec.sampler
        self.info = inspect_dir(m.path)
        self.cond, self.num_classes = self.info.cond, max(self.info.classes, 1)
        self.dataset = "protocol"
        self.detector = "protocol"  # the protocol names its own
        torch.manual_seed(spec.seed)
        self.pipe = load_dir(m.path, spec.sampler.scheduler, spec.device)
        self.instrument = Instrument(spec.device, enabled=False).attach(self.pipe)

    # -- one call ---------------------------------------------------------------------------------
    def _call(self, n: int, labels: list[int] | None, captions: list[str] | None, steps: int, guidance: float,
              start: int = 0) -> torch.Tensor:
        gens = generators(self.spec.seed, list(range(start, start + n)))  # image k's noise depends on (seed, k) only
        kw = call_arguments(self.pipe, self.info, n, labels, captions, steps, guidance, gens)
        return to_uint8(self.pipe(**kw).images)

    def _conditions(self, n: int) -> tuple[list[int] | None, list[str] | None]:
        if self.cond == "text":
            return None, [TIMING_PROMPT] * n
        if self.cond == "class":
            return [k % self.num_classes for k in range(n)], None
        return None, None

    # -- the contract -----------------------------------------------------------------------------
    def counts(self) -> dict[str, Reading]:
        """Parameters per component, and MACs counted on real calls at batch 1: one network evaluation of the
        denoiser (guidance 1, one step), and one image at the case's steps and guidance, from two counted calls
        (one step and two: their difference is one step, every pass of guidance included)."""
        inst, s = self.instrument, self.sampler
        labels, captions = self._conditions(1)

        def counted(steps: int, guidance: float) -> dict[str, int]:
            inst.reset()
            inst.enabled = inst.counting = True
            try:
                with no_fused_fast_paths(), torch.no_grad():  # diffusers loads modules in eval mode
                    self._call(1, labels, captions, steps, guidance)
            finally:
                inst.enabled = inst.counting = False
            return dict(inst.flops)

        single = counted(1, 1.0)
        calls = dict(inst.calls)
        one = counted(1, s.guidance)
        two = counted(2, s.guidance)
        keys = sorted(set(one) | set(two))
        per_step = {k: two.get(k, 0) - one.get(k, 0) for k in keys}
        per_image = {k: one.get(k, 0) + (s.sample_steps - 1) * per_step[k] for k in keys}
        mods = modules(self.pipe)
        denoisers = [k for k in mods if component_kind(k) == "denoiser"]
        by_component: dict[str, dict[str, Any]] = {}
        for name, module in mods.items():
            entries = [k for k in keys if k == name or k.startswith(f"{name}.")]
            by_component[name] = {"component": component_kind(name), "class": type(module).__name__,
                                  "params": sum(p.numel() for p in module.parameters()),
                                  "gmacs_per_image": sum(per_image[k] for k in entries) / 2e9}
        evaluation = sum(single.get(k, 0) / max(calls.get(k, 1), 1) for k in denoisers)
        total = sum(per_image.values())
        steps = s.sample_steps
        return {
            "params": Reading(sum(by_component[k]["params"] for k in denoisers), "count",
                              extra={"counts": "the denoiser(s): " + ", ".join(denoisers),
                                     "by_component": by_component}),
            "params_all": Reading(sum(c["params"] for c in by_component.values()), "count",
                                  extra={"counts": "every nn.Module component"}),
            "gmacs": Reading(evaluation / 2e9, "GMAC", extra={"convention": "one network evaluation of the "
                                                                           "denoiser, batch 1 (FlopCounterMode/2)"}),
            "flops": Reading(int(evaluation), "FLOP"),
            "gmacs_per_image": Reading(total / 2e9, "GMAC", extra={
                "steps": steps, "guidance": s.guidance,
                "convention": "every component of one image at the case's steps and guidance, counted on real "
                              "calls (FlopCounterMode/2)"}),
        }

    def flops_per_image(self, counts: dict[str, Reading]) -> float | None:
        per_image = counts.get("gmacs_per_image")
        return None if per_image is None or per_image.value is None else float(per_image.value) * 2e9

    def reference_images(self) -> torch.Tensor:
        raise CaseUnsupported("a pretrained pipeline is scored by its protocol's reference")

    def train(self, out_dir: str, stop_after: int | None = None) -> dict[str, Any]:
        raise CaseUnsupported("a pretrained diffusers pipeline is not trained here; measure counts, speed, memory, "
                              "energy or quality")

    def sample(self, n: int, held: Held) -> torch.Tensor:
        """Images 0..n-1 of the protocol, in batches of the case's batch size, image k seeded by (seed, k)."""
        labels = held.conds.tolist() if held.conds is not None else None
        out, batch = [], self.spec.batch_size
        bar = progress(n, "sampling")
        with torch.no_grad():
            for b0 in range(0, n, batch):
                b1 = min(b0 + batch, n)
                out.append(self._call(b1 - b0, None if labels is None else labels[b0:b1],
                                      None if held.captions is None else held.captions[b0:b1],
                                      self.sampler.sample_steps, self.sampler.guidance, start=b0))
                bar.update(b1 - b0)
        bar.close()
        return torch.cat(out)

    def evaluations(self) -> list[Evaluation]:
        """One end-to-end call for the batch at the case's guidance, and one at guidance 1 where the pipeline
        takes a guidance scale. The guided calls after the first and the warmup feed the per-component breakdown."""
        batch, s, inst = self.spec.batch_size, self.sampler, self.instrument
        labels, captions = self._conditions(batch)
        calls = [0]
        inst.reset()

        def guided() -> None:
            calls[0] += 1
            inst.enabled = calls[0] > 1 + self.spec.warmup
            try:
                self._call(batch, labels, captions, s.sample_steps, s.guidance)
            finally:
                inst.enabled = False

        extra = {"steps": s.sample_steps, "scheduler": s.scheduler}
        out = [Evaluation(guided, batch, "", {**extra, "guidance": s.guidance})]
        if "guidance_scale" in inspect.signature(type(self.pipe).__call__).parameters and s.guidance != 1.0:
            out.append(Evaluation(lambda: self._call(batch, labels, captions, s.sample_steps, 1.0), batch,
                                  "_unguided", {**extra, "guidance": 1.0}))
        return out

    def breakdown(self, calls: int) -> dict[str, Reading]:
        """Time per image in each component's calls (``unet``, ``text_encoder``, ``vae.decode``) over the timed
        guided calls (the rest of a call, the scheduler and guidance arithmetic, is in no component)."""
        s = self.sampler
        extra = {"steps": s.sample_steps, "guidance": s.guidance, "scheduler": s.scheduler}
        images = calls * self.spec.batch_size
        return {metric_name("component_ms_per_image", k): Reading(v * 1e3 / images, "ms", extra=extra)
                for k, v in self.instrument.seconds.items()}
