"""Sampling a pipeline end to end, with per-sample seeds and a per-component time breakdown.

Image k depends only on (seed, k): every stage, the prior and every noise-augmentation draw use
generators seeded by the sample's global index (and the stage's position), so a batch of 1 and a
batch of 8 give the same images. Conditions are the caption token ids or the class labels of
samples ``start .. start + n - 1``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from diffbench.core.errors import ConfigError
from diffbench.diffusion.process import make_scheduler, noise_augment
from diffbench.diffusion.sampling import check_sampling, generators, guided, reverse_process, to_uint8
from diffbench.models.text_encoders import attention_mask


class Timings:
    """Seconds per component (``text_encoder``, ``prior``, each stage, ``decoder``), synchronised on GPU."""

    def __init__(self, device: str = "cpu") -> None:
        self.device, self.seconds = device, dict[str, float]()

    def __call__(self, name: str) -> _Span:
        return _Span(self, name)


class _Span:
    def __init__(self, timings: Timings, name: str) -> None:
        self.t, self.name = timings, name

    def _sync(self) -> None:
        if self.t.device.startswith("cuda"):
            torch.cuda.synchronize(self.t.device)

    def __enter__(self) -> None:
        self._sync()
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self._sync()
        self.t.seconds[self.name] = self.t.seconds.get(self.name, 0.0) + time.perf_counter() - self.start


@torch.no_grad()
def sample_pipeline(pipe: Any, n: int, tokens: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                    scheduler: str = "ddim", steps: int | None = None, guidance: float | None = None, seed: int = 0,
                    batch_size: int = 64, device: str = "cpu", start: int = 0, timings: Timings | None = None
                    ) -> Iterator[torch.Tensor]:
    """Yield uint8 (B, C, H, W) batches of samples ``start .. start + n - 1`` of a ``Pipeline``."""
    spec = pipe.spec
    steps = spec.steps if steps is None else steps
    guidance = spec.guidance if guidance is None else guidance
    check_sampling(steps, guidance, batch_size)
    make_scheduler(scheduler)  # unknown names fail before any work
    if spec.cond == "text" and tokens is None:
        raise ConfigError(f"the {spec.name} pipeline is text-conditional: give captions")
    if spec.cond == "class" and labels is None:
        raise ConfigError(f"the {spec.name} pipeline is class-conditional: give class labels")
    timings = timings or Timings(device)
    pipe = pipe.to(device).eval()
    for b0 in range(start, start + n, batch_size):
        idx = list(range(b0, min(b0 + batch_size, start + n)))
        rows = [k - start for k in idx]
        yield _sample_batch(pipe, idx, None if tokens is None else tokens[rows].to(device),
                            None if labels is None else labels[rows].to(device), scheduler, steps, guidance, seed,
                            device, timings)


def _sample_batch(pipe: Any, idx: list[int], tokens: torch.Tensor | None, labels: torch.Tensor | None,
                  scheduler: str, steps: int, guidance: float, seed: int, device: str, timings: Timings
                  ) -> torch.Tensor:
    b = _Batch(pipe, idx, tokens, labels, scheduler, steps, guidance, seed, device, timings)
    image_embed = b.prior() if pipe.prior is not None else None
    outputs: dict[str, torch.Tensor] = {}
    for si, s in enumerate(pipe.spec.stages, start=1):
        x = b.stage(si, s, outputs, image_embed)
        outputs[s.name] = x.clamp(-1, 1) if pipe.autoencoder is None else x
    x = outputs[pipe.spec.stages[-1].name]
    if pipe.autoencoder is not None:
        with timings("decoder"):
            x = pipe.autoencoder.decode(x / pipe.latent_scale).sample.float()
    return to_uint8(x)


@dataclass
class _Batch:
    """One batch of samples ``idx`` through a pipeline: the prior, then every stage, text encoded once."""

    pipe: Any
    idx: list[int]
    tokens: torch.Tensor | None
    labels: torch.Tensor | None
    scheduler: str
    steps: int
    guidance: float
    seed: int
    device: str
    timings: Timings
    texts: dict[str | None, tuple[Any, Any]] = field(default_factory=dict)

    def text_for(self, stage: str | None) -> tuple[Any, Any]:
        """(caption encoding, null-caption encoding) for a stage (its own text encoder) or the shared one."""
        key = stage if stage is not None and self.pipe.stages[stage].text is not None else None
        if key not in self.texts:
            assert self.tokens is not None
            with self.timings("text_encoder"):
                self.texts[key] = (self.pipe.encode_text(self.tokens, key),
                                   self.pipe.encode_text(torch.zeros_like(self.tokens), key))
        return self.texts[key]

    def prior(self) -> torch.Tensor:
        """unCLIP's prior: caption -> CLIP image embedding, guided like the stages."""
        (h, pooled), (h0, pooled0) = self.text_for(None)
        tokens, prior = self.tokens, self.pipe.prior
        assert tokens is not None

        def prior_fn(x: torch.Tensor, t: torch.Tensor, c: dict[str, Any]) -> torch.Tensor:
            return prior(hidden_states=x, timestep=t, proj_embedding=c["pooled"], encoder_hidden_states=c["h"],
                         attention_mask=c["mask"]).predicted_image_embedding

        # the null caption's mask as in training (diffusion.pipeline_training): padding, first position attended
        step = guided(prior_fn, {"pooled": pooled, "h": h, "mask": attention_mask(tokens)},
                      {"pooled": pooled0, "h": h0, "mask": attention_mask(torch.zeros_like(tokens))}, self.guidance,
                      None)
        with self.timings("prior"):
            return reverse_process(step, (self.pipe.spec.prior.image_embed_dim,), generators(self.seed, self.idx, 0),
                                   self.scheduler, self.steps, "sample", device=self.device)

    def stage(self, si: int, s: Any, outputs: dict[str, torch.Tensor], image_embed: torch.Tensor | None
              ) -> torch.Tensor:
        """Stage ``si`` (1-based) from its own noise, conditioned on labels, text, the image embedding or an earlier
        stage's output (noise-augmented at the stage's fixed level, Imagen)."""
        b, device = len(self.idx), self.device
        cond: dict[str, Any] = {"device": device}
        null: dict[str, Any] = {"device": device}
        if s.cond == "class":
            assert self.labels is not None
            cond["y"], null["y"] = self.labels, torch.full_like(self.labels, self.pipe.spec.num_classes)
        if s.cond == "image":
            cond["image_embed"], null["image_embed"] = image_embed, self.pipe.null_image_embed(b)
        if s.low_res_from:
            low = outputs[s.low_res_from]
            aug_t = torch.full((b,), float(s.aug_level), device=device)
            if s.aug_level > 0:
                gens = generators(self.seed, self.idx, 100 + si)
                noise = torch.stack([torch.randn(low.shape[1:], generator=g) for g in gens])
                low = noise_augment(low, noise.to(device), aug_t)
            cond["low_res"] = null["low_res"] = low
            cond["aug_t"] = null["aug_t"] = aug_t
        text, null_text = self.text_for(s.name) if s.cond in ("text", "image") else (None, None)
        inputs = self.pipe.condition(s.name, cond, text)
        null_inputs = self.pipe.condition(s.name, null, null_text) if s.cond != "none" else None
        step = guided(self.pipe.stages[s.name], inputs, null_inputs, self.guidance, s.input_shape[0])
        with self.timings(s.name):
            return reverse_process(step, s.input_shape, generators(self.seed, self.idx, si), self.scheduler,
                                   self.steps, s.prediction, s.thresholding, device)
