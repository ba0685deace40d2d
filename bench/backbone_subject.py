"""A backbone as a subject: a family sized here (trained on an embedded dataset, then sampled and scored) or
one with released weights (an official checkpoint, scored by a protocol)."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import torch

from diffbench.bench.spec import BackboneRef, CaseSpec
from diffbench.bench.subjects import Evaluation, Held, train_config
from diffbench.core.errors import CaseUnsupported
from diffbench.core.progress import progress
from diffbench.diffusion.config import Loop
from diffbench.diffusion.process import reads_variance
from diffbench.diffusion.resolve import open_source
from diffbench.diffusion.sampling import sample, to_uint8
from diffbench.diffusion.sources import DataSource, TensorSource, Unconditioned
from diffbench.diffusion.training import train
from diffbench.metrics.captions import VOCAB
from diffbench.metrics.reading import Reading
from diffbench.models.api import config_from_dict, count, file_sha256, load_checkpoint
from diffbench.models.denoiser import Denoiser
from diffbench.models.families import FAMILIES
from diffbench.models.pretrained import from_local


class PretrainedBackbone(torch.nn.Module):
    """A backbone with released weights, as the sampler calls a ``Denoiser``: ``forward(x, t, labels)``, and
    ``null(n)`` the null class (index ``classes``, DiT's and U-ViT's convention)."""

    def __init__(self, family: Any, net: torch.nn.Module, cond: str, classes: int) -> None:
        super().__init__()
        self.family, self.net, self.cond, self.classes = family, net, cond, classes

    def null(self, n: int, device: torch.device | str = "cpu") -> torch.Tensor:
        return torch.full((n,), self.classes, dtype=torch.long, device=device)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        inputs: dict[str, Any] = {"x": x, "t": t}
        if self.cond == "class":
            inputs["y"] = cond if cond is not None else self.null(len(x), x.device)
        return self.family.denoise(self.net, inputs)


class BackboneSubject:
    """A backbone config of a family; trained as a ``Denoiser`` (its conditioning modules added)."""

    def __init__(self, spec: CaseSpec) -> None:
        assert isinstance(spec.model, BackboneRef)
        self.spec, self.family = spec, FAMILIES.get(spec.model.family)
        self.config = config_from_dict(self.family.config_cls, spec.model.config)
        t = spec.training
        self.dataset = t.dataset if t else "digits"
        self.cond = "text" if self.dataset == "shapes" else spec.cond  # a captioned folder says so when opened
        self.num_classes = 10  # the embedded digits' classes; a class-folder tree's count when opened
        self.ema: Any = None
        self._model: Any = None
        self.sampling: dict[str, Any] = {}  # how a pretrained backbone was sampled (variance, guided channels)

    def counts(self) -> dict[str, Reading]:
        c = count(self.config)
        return {"params": Reading(c.params, "count", extra={"by_module": c.params_by_module}),
                "params_trainable": Reading(c.params_trainable, "count"),
                "model_bytes": Reading(c.weights_bytes, "bytes"),
                "gmacs": Reading(c.gmacs, "GMAC", extra={"convention": "FlopCounterMode/2, batch 1, one evaluation",
                                                         **_fallback(c)}),
                "flops": Reading(c.flops, "FLOP")}

    def flops_per_image(self, counts: dict[str, Reading]) -> float | None:
        return None if counts.get("flops") is None else counts["flops"].value

    @functools.cached_property
    def source(self) -> DataSource:
        """What it trains on and is scored against (``diffusion/sources.py``), opened once, as the network takes
        it: the grey digits as one channel for a one-channel input."""
        t = self.spec.training
        assert t is not None, "a backbone trains on a dataset only when its case trains"
        channels, res, _ = self.family.input_shape(self.config)
        src = open_source(t.dataset, t.data_resolution or res, self.spec.seed, t.skip_bad, t.fid_detector)
        src.flippable = src.flippable and t.flip
        if src.latent:
            if src.shape != self.family.input_shape(self.config):
                raise CaseUnsupported(f"the latents of {t.dataset} are {tuple(src.shape)}; the backbone takes "
                                      f"{self.family.input_shape(self.config)}")
        elif src.shape[-1] != res:
            raise CaseUnsupported(f"{t.dataset} is decoded at {src.shape[-1]} px; the backbone takes {res} px "
                                  "(data_resolution = 0 decodes at the backbone's)")
        elif isinstance(src, TensorSource) and t.dataset == "digits" and channels == 1:  # grey: one channel
            src = dataclasses.replace(src, images=src.images[:, :1].contiguous())
        elif channels != 3:
            raise CaseUnsupported(f"{t.dataset} is in colour: give the input 3 channels, not {channels}"
                                  + (" (the digits are grey: 1 or 3)" if t.dataset == "digits" else ""))
        if src.cond == "text":
            self.cond = "text"
        elif src.cond == "class" and self.cond == "class":
            if src.classes > self.spec.classes:
                raise CaseUnsupported(f"{t.dataset} has {src.classes} classes; the backbone knows "
                                      f"{self.spec.classes} (classes = {self.spec.classes})")
            self.num_classes = src.classes
        return src

    @property
    def detector(self) -> str:
        """The detector its samples are scored with: the suite's, else its dataset's own."""
        return self.source.detector

    def reference_images(self) -> torch.Tensor:
        return self.source.reference().x

    def training_data(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images and conditions (labels or caption ids) of the training set: the whole of an embedded one, the
        scoring reference of one on disk (for the condition gain)."""
        b = self.source.reference()
        return b.x, b.conds

    def train(self, out_dir: str, stop_after: int | None = None) -> dict[str, Any]:
        source, p = self.source, self.spec.placement
        torch.manual_seed(self.spec.seed)
        model = Denoiser(self.family.name, self.config, self.cond, num_classes=self.num_classes, vocab=len(VOCAB))
        self.config = model.config  # counted and timed as conditioned for training
        loop = Loop(workers=p.data_workers, micro_batch=p.micro_batch, compile=self.spec.compile)
        self.ema, result = train(model, source if self.cond != "none" else Unconditioned(source), None,
                                 train_config(self.spec), out_dir, flops_per_image=count(model.config).flops,
                                 device=self.spec.device, stop_after=stop_after, loop=loop)
        return {"": result}

    def sample(self, n: int, held: Held) -> torch.Tensor:
        """Trained here: the scored (EMA) weights; with a checkpoint: its weights, latents decoded by the sweep's
        autoencoder. Image k is seeded by (seed, k); batches of the case's batch size (128 when trained here)."""
        s = self.spec.sampler
        weights = self.spec.model.checkpoint if isinstance(self.spec.model, BackboneRef) else None
        assert s is not None and (self.ema is not None or weights), "sampling follows training or a checkpoint"
        shape = self.family.input_shape(self.config)
        if self.ema is not None:  # trained here (on latents: decoded by their autoencoder)
            return self.sample_range(0, n, held)
        assert weights is not None

        model = PretrainedBackbone(self.family, self._weighted(), self.spec.cond, self.spec.classes)
        decode = _decoder(weights.get("autoencoder"), shape, self.spec.device)
        guide = self.spec.protocol.guide_channels if self.spec.protocol else None
        # a network that learned its variance (DiT, ADM) samples with it under DDPM, as their releases sample
        learned = bool(getattr(self.config, "learn_sigma", False)) and reads_variance(s.scheduler)
        self.sampling = {"learned_variance": learned, "guide_channels": guide or shape[0]}
        out, bar = [], progress(n, "sampling")
        batches = sample(model, n, shape, held.conds, s.scheduler, s.sample_steps, s.guidance, self.spec.seed,
                         batch_size=self.spec.batch_size, device=self.spec.device, raw=decode is not None,
                         learned_variance=learned, guide_channels=guide)
        for b in batches:
            out.append(decode(b) if decode is not None else b)
            bar.update(len(b))
        bar.close()
        return torch.cat(out)

    def sample_range(self, b0: int, b1: int, held: Held) -> torch.Tensor:
        """Samples b0 .. b1 - 1 of the trained (EMA) weights, each seeded by (seed, k) as in :meth:`sample`: the
        same images whichever rank makes them."""
        s = self.spec.sampler
        assert s is not None and self.ema is not None, "a range is sampled from weights trained here"
        shape = self.family.input_shape(self.config)
        pred = self.spec.training.prediction if self.spec.training else "epsilon"
        latent = getattr(self.source, "latent", False)
        decoder = _decoder(self.source.autoencoder, shape, self.spec.device) if latent else None
        conds = held.conds[b0:b1] if held.conds is not None else None
        batches = sample(self.ema, b1 - b0, shape, conds, s.scheduler, s.sample_steps, s.guidance, self.spec.seed,
                         batch_size=128, device=self.spec.device, prediction=pred, start=b0, raw=decoder is not None)
        return torch.cat([decoder(b) if decoder is not None else b for b in batches])

    def _weighted(self) -> torch.nn.Module:
        """The network with the suite's checkpoint loaded strictly (keys, shapes, dtypes, finite values)."""
        model = self.config.build()
        weights = self.spec.model.checkpoint if isinstance(self.spec.model, BackboneRef) else None
        if weights:
            if file_sha256(weights["path"]) != weights["sha256"]:
                raise CaseUnsupported(f"{weights['path']} changed since the suite was expanded; run it again")
            load_checkpoint(model, weights["path"])
        return model

    def evaluations(self) -> list[Evaluation]:
        spec, device = self.spec, self.spec.device
        model = self._weighted().to(device).eval()
        inputs = self.family.make_inputs(self.config, spec.batch_size, torch.device(device), torch.float32)
        if spec.channels_last:
            if not self.family.name.startswith("unet"):
                raise CaseUnsupported("channels_last applies to the U-Net families")
            model = model.to(memory_format=torch.channels_last)
            inputs["x"] = inputs["x"].contiguous(memory_format=torch.channels_last)
        net: Any = torch.compile(model) if spec.compile else model
        return [Evaluation(lambda: self.family.denoise(net, inputs), spec.batch_size)]

    def breakdown(self, calls: int) -> dict[str, Reading]:
        return {}


def _fallback(c: Any) -> dict[str, str]:
    """Where a network that meta cannot run was counted instead, and why (recorded with its GMACs)."""
    return {"counted_on": c.counted_on, "fallback_reason": c.fallback_reason} if c.counted_on != "meta" else {}


def _decoder(path: str | None, shape: tuple[int, ...], device: str) -> Any:
    """Latent samples -> uint8 images through a local diffusers ``AutoencoderKL`` (the latents divided by its
    ``scaling_factor``, SD's 0.18215 for the SD-VAE that DiT and U-ViT decode with); None for a pixel backbone."""
    if not path:
        return None
    from diffusers import AutoencoderKL

    ae = from_local(AutoencoderKL, path, "a diffusers AutoencoderKL")
    if ae.config.latent_channels != shape[0]:
        raise CaseUnsupported(f"the autoencoder at {path} has {ae.config.latent_channels} latent channels; the "
                              f"backbone makes {shape[0]}")
    ae = ae.to(device).eval()
    scale = float(ae.config.scaling_factor)

    @torch.no_grad()
    def decode(latents: torch.Tensor) -> torch.Tensor:
        return to_uint8(ae.decode(latents.to(device) / scale).sample)

    return decode
