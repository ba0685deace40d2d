"""The pipeline adapter of the subject contract: every component counted, the parts trained in order,
and one end-to-end sample per timed call, guided and unguided, with a per-component breakdown."""

from __future__ import annotations

from typing import Any

import torch

from diffbench.bench.spec import CaseSpec, PipelineRef
from diffbench.bench.subjects import Evaluation, Held, train_config
from diffbench.core.errors import CaseUnsupported
from diffbench.diffusion.pipeline_sampling import Timings, sample_pipeline
from diffbench.diffusion.pipeline_training import train_pipeline, training_data
from diffbench.metrics.reading import Reading
from diffbench.metrics.specs import metric_name
from diffbench.models.pipelines import Pipeline, count_pipeline, denoiser_params, pipeline_spec


class PipelineSubject:
    def __init__(self, spec: CaseSpec) -> None:
        assert isinstance(spec.model, PipelineRef) and spec.sampler is not None, "pipelines carry sampler settings"
        if spec.compile or spec.channels_last:
            raise CaseUnsupported("compile and channels_last apply to backbones; a pipeline is timed as built")
        m = spec.model
        self.spec, self.sampler = spec, spec.sampler
        self.pipeline_spec = pipeline_spec(m.pipeline, m.scale, m.budget, m.tolerance)
        self.cond, self.num_classes = self.pipeline_spec.cond, self.pipeline_spec.num_classes
        self.dataset = "shapes" if self.cond == "text" else (spec.training.dataset if spec.training else "digits")
        # scored by the embedded detector of an embedded dataset, else the suite's (Inception by default)
        self.detector = self.dataset if self.dataset in ("digits", "shapes") else \
            (spec.training.fid_detector if spec.training and spec.training.fid_detector else "inception-v3")
        torch.manual_seed(spec.seed)
        self.pipe = Pipeline(self.pipeline_spec).to(spec.device)
        self._data: Any = None
        self._timings: Any = None

    def counts(self) -> dict[str, Reading]:
        spec, rows = self.pipeline_spec, count_pipeline(self.pipeline_spec)
        passes = 2 if self.sampler.guidance != 1.0 and spec.cond != "none" else 1
        by_stage: dict[str, float] = {}  # one expert of a stage runs per step (eDiff-I): the largest counts
        for r in rows:
            if r.per_step:
                by_stage[r.stage or r.name] = max(by_stage.get(r.stage or r.name, 0.0), r.gmacs)
        per_step, once = sum(by_stage.values()), sum(r.gmacs for r in rows if not r.per_step)
        by_component = {r.name: {"component": r.component, "params": r.params, "gmacs": r.gmacs} for r in rows}
        note = "denoisers: every stage and expert, and the unCLIP prior; text encoders and the autoencoder apart"
        steps = self.sampler.sample_steps
        return {
            "params": Reading(denoiser_params(rows), "count", extra={"counts": note, "by_component": by_component}),
            "params_all": Reading(sum(r.params for r in rows), "count", extra={"counts": "every component"}),
            "gmacs": Reading(per_step, "GMAC", extra={"convention": "one step of every stage (and the prior), "
                                                                    "batch 1; with experts, the largest runs"}),
            "flops": Reading(int(per_step * 2e9), "FLOP"),
            "gmacs_per_image": Reading(once + per_step * steps * passes, "GMAC",
                                       extra={"steps": steps, "network_passes": passes,
                                              "convention": "text encoders and decoder once, denoisers x steps "
                                                            "x passes"}),
        }

    def flops_per_image(self, counts: dict[str, Reading]) -> float | None:
        per_image = counts.get("gmacs_per_image")
        return None if per_image is None or per_image.value is None else float(per_image.value) * 2e9

    def _training_data(self) -> Any:
        if self._data is None:
            self._data = training_data(self.pipeline_spec, self.dataset, self.spec.seed)[0]
        return self._data

    def reference_images(self) -> torch.Tensor:
        return self._training_data().images

    def train(self, out_dir: str, stop_after: int | None = None) -> dict[str, Any]:
        assert self.spec.training is not None
        return train_pipeline(self.pipe, self._training_data(), train_config(self.spec), out_dir, self.spec.device,
                              self.spec.training.autoencoder_steps, stop_after=stop_after)

    def _sample(self, n: int, held: Held, guidance: float, batch: int, timings: Any = None) -> list[torch.Tensor]:
        text = self.cond == "text"
        return list(sample_pipeline(self.pipe, n, held.conds if text else None, None if text else held.conds,
                                    self.sampler.scheduler, self.sampler.sample_steps, guidance, self.spec.seed,
                                    batch, self.spec.device, timings=timings))

    def sample(self, n: int, held: Held) -> torch.Tensor:
        return torch.cat(self._sample(n, held, self.sampler.guidance, 128))

    def _timing_conditions(self, batch: int) -> Held:
        """Caption ids of the full length the text encoders take (SD: 77 tokens), as real prompts are padded to."""
        spec = self.pipeline_spec
        if spec.cond == "text":
            vocab = min(int(e.config.get("vocab_size") or e.config.get("vocab") or 2) for e in spec.text_encoder_specs)
            return Held(torch.randint(1, vocab, (batch, spec.text_length), generator=torch.Generator().manual_seed(0)))
        return Held(torch.arange(batch) % spec.num_classes if spec.cond == "class" else None)

    def evaluations(self) -> list[Evaluation]:
        """One end-to-end sample of the batch with the case's guidance, and one at guidance 1 (no unconditional
        pass). The guided calls after the first and the warmup feed the per-component breakdown."""
        self.pipe.eval()
        batch, held, s = self.spec.batch_size, self._timing_conditions(self.spec.batch_size), self.sampler
        self._timings, calls = Timings(self.spec.device), [0]

        def guided() -> None:
            calls[0] += 1
            self._sample(batch, held, s.guidance, batch, self._timings if calls[0] > 1 + self.spec.warmup else None)

        extra = {"steps": s.sample_steps, "scheduler": s.scheduler}
        def unguided() -> None:
            self._sample(batch, held, 1.0, batch)

        return [Evaluation(guided, batch, "", {**extra, "guidance": s.guidance}),
                Evaluation(unguided, batch, "_unguided", {**extra, "guidance": 1.0})]

    def breakdown(self, calls: int) -> dict[str, Reading]:
        """Time per image in each component over the ``calls`` timed guided calls."""
        s = self.sampler
        extra = {"steps": s.sample_steps, "guidance": s.guidance, "scheduler": s.scheduler}
        return {metric_name("component_ms_per_image", comp): Reading(secs * 1e3 / (calls * self.spec.batch_size), "ms",
                                                           extra=extra)
                for comp, secs in self._timings.seconds.items()}
