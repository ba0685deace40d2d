"""Training a pipeline stage by stage, each stage to the same fixed budget.

Order: the autoencoder first (latent pipelines, when none was loaded), then the unCLIP prior,
then each stage in cascade order. A stage learns from the data at its own resolution (or the
autoencoder's latents); a super-resolution stage takes the data downsampled to its low-res
stage's resolution, noise-augmented at a random level drawn from the step's seeded generator
(Imagen's noise-conditioning augmentation). Trainable text encoders (GLIDE's, and every tiny
one, since no pretrained weights ship) learn with the first stage that uses them and are frozen
afterwards, as Imagen's and unCLIP's are. Each part checkpoints into its own sub-directory
through ``diffusion.training.train``, so a killed run resumes part by part.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from diffbench.core.errors import ConfigError
from diffbench.diffusion import datasets
from diffbench.diffusion.config import AUTOENCODER_STEPS
from diffbench.diffusion.process import TRAIN_STEPS, noise_augment
from diffbench.diffusion.resolve import open_source
from diffbench.diffusion.training import TrainConfig, TrainResult, model_range, train
from diffbench.metrics import clip_score
from diffbench.metrics.captions import tokenize
from diffbench.models.api import read_safetensors, write_safetensors
from diffbench.models.pipelines import Pipeline, count_pipeline, fingerprint
from diffbench.models.pipelines.modules import encode_text, null_image_embed, stage_inputs
from diffbench.models.text_encoders import attention_mask

AUG_MAX = 0.5  # training draws the augmentation timestep uniformly from [0, AUG_MAX * 1000)


@dataclass
class PipelineData:
    """Training data: uint8 images and what conditions them (labels, caption ids, image embeddings)."""

    images: torch.Tensor
    labels: torch.Tensor | None = None
    tokens: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None  # unCLIP's prior target (a CLIP image embedding per image)


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 or float images -> float in [-1, 1] at ``size`` (antialiased when shrinking)."""
    x = model_range(images)
    if x.shape[-1] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])


class _Trainable(nn.Module):
    """One part of a pipeline as ``diffusion.training.train`` sees it: ``forward(x_t, t, cond)`` plus
    ``training_condition(idx, drop, generator)`` that gathers (and drops) the conditions of a batch."""

    def __init__(self, pipe: Pipeline, part: str, data: PipelineData, low_res: torch.Tensor | None,
                 train_text: bool, device: str) -> None:
        super().__init__()
        self.part, self.device = part, device
        self.net = pipe.prior if part == "prior" else pipe.stages[part]
        self.spec = None if part == "prior" else pipe.stages[part].spec
        text_mods = pipe.text_modules(None if part == "prior" else part)
        # a stage's own text encoder (GLIDE) is already inside the stage: register it once
        self.own_text = part != "prior" and pipe.stages[part].text is not None
        self.text = nn.ModuleList([] if self.own_text else text_mods)
        for m in text_mods:
            m.requires_grad_(train_text)
        self.text_proj = pipe.text_proj if self.spec is not None and self.spec.cond == "image" else None
        self.num_classes = pipe.spec.num_classes
        self._data, self._low = data, low_res

    def training_condition(self, idx: torch.Tensor, drop: torch.Tensor, g: torch.Generator) -> dict[str, Any]:
        d, dev = self._data, self.device
        c: dict[str, Any] = {"device": dev, "drop": drop.to(dev)}
        if d.tokens is not None:
            c["tokens"] = torch.where(drop[:, None], 0, d.tokens[idx]).to(dev)
        if d.labels is not None and self.num_classes:
            c["y"] = torch.where(drop, self.num_classes, d.labels[idx]).to(dev)
        if d.image_embeds is not None:
            c["image_embed"] = d.image_embeds[idx].to(dev)
        if self._low is not None:
            low = self._low[idx]
            aug_t = torch.randint(0, int(AUG_MAX * TRAIN_STEPS), (len(idx),), generator=g)
            noise = torch.randn(low.shape, generator=g)
            c["low_res"] = noise_augment(low, noise, aug_t).to(dev)
            c["aug_t"] = aug_t.float().to(dev)
        return c

    def _text(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.own_text:
            return self.net.text(tokens)  # type: ignore[operator]
        mods = (self.text[0], self.text[1])
        return encode_text(mods, tokens)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: dict[str, Any] | None) -> torch.Tensor:
        c = c if c is not None else {"device": self.device}
        if self.part == "prior":
            h, pooled = self._text(c["tokens"])
            return self.net(hidden_states=x, timestep=t, proj_embedding=pooled, encoder_hidden_states=h,
                            attention_mask=attention_mask(c["tokens"])).predicted_image_embedding
        assert self.spec is not None
        text = self._text(c["tokens"]) if self.spec.cond in ("text", "image") else None
        if self.spec.cond == "image":
            null = null_image_embed(self.text_proj, len(x))
            c = {**c, "image_embed": torch.where(c["drop"][:, None], null, c["image_embed"])}
        return self.net(x, t, stage_inputs(self.spec, c, text, self.text_proj))


def train_autoencoder(ae: nn.Module, images: torch.Tensor, steps: int, batch_size: int, lr: float, seed: int,
                      device: str = "cpu", kl_weight: float = 1e-6) -> tuple[float, list[float]]:
    """Reconstruction (MSE) plus a small KL term, seeded batches; returns (latent scale, losses).

    The latent scale is 1 / std of the posterior means over the data, LDM's recipe for 0.18215.
    """
    ae.to(device).train()
    opt = torch.optim.AdamW(ae.parameters(), lr=lr)
    x_all = resize(images, images.shape[-1])
    losses = []
    for step in range(steps):
        g = torch.Generator().manual_seed(seed * 1_000_003 + step)
        x = x_all[torch.randint(0, len(x_all), (batch_size,), generator=g)].to(device)
        post = ae.encode(x).latent_dist  # type: ignore[operator]
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
        rec = ae.decode(z).sample  # type: ignore[operator]
        loss = F.mse_loss(rec, x) + kl_weight * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return float(1.0 / encode_latents(ae.eval(), x_all, device).std()), losses


@torch.no_grad()
def encode_latents(ae: Any, x: torch.Tensor, device: str, batch: int = 256) -> torch.Tensor:
    """Posterior means of images in [-1, 1], in batches, on the CPU (unscaled)."""
    return torch.cat([ae.encode(x[i:i + batch].to(device)).latent_dist.mean.cpu() for i in range(0, len(x), batch)])


def _autoencoder_part(pipe: Pipeline, data: PipelineData, cfg: TrainConfig, out: Path, device: str, steps: int
                      ) -> TrainResult | None:
    """Train the autoencoder first (or load it from an earlier, killed run); None when it was loaded."""
    ae_file = out / "autoencoder.safetensors"
    if ae_file.exists():
        _load_module(pipe, ae_file)
        return None
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    assert pipe.autoencoder is not None
    scale, losses = train_autoencoder(pipe.autoencoder, data.images, steps, cfg.batch_size, cfg.lr, cfg.seed, device)
    pipe.latent_scale.fill_(scale)
    out.mkdir(parents=True, exist_ok=True)
    _save_module(pipe, ae_file, ("autoencoder.", "latent_scale"))
    return TrainResult(steps, losses, time.perf_counter() - t0, steps * cfg.batch_size, None)


def train_pipeline(pipe: Pipeline, data: PipelineData, cfg: TrainConfig, out_dir: str | Path, device: str = "cpu",
                   autoencoder_steps: int = AUTOENCODER_STEPS, stop_after: int | None = None) -> dict[str, TrainResult]:
    """Train every trainable part of ``pipe`` in order; returns one result per part (EMA weights loaded)."""
    out = Path(out_dir)
    spec = pipe.spec
    results: dict[str, TrainResult] = {}
    meta = {"pipeline": spec.name, "spec": fingerprint(spec)}
    if pipe.autoencoder is not None and spec.autoencoder is not None and not spec.autoencoder.path:
        trained = _autoencoder_part(pipe, data, cfg, out, device, autoencoder_steps)
        if trained is not None:
            results["autoencoder"] = trained
    trained_text: set[int] = set()
    counts = count_pipeline(spec)
    parts = (["prior"] if pipe.prior is not None else []) + [s.name for s in spec.stages]
    for part in parts:
        s = None if part == "prior" else pipe.stages[part].spec
        uses_text = part == "prior" or (s is not None and s.cond in ("text", "image"))
        mods = pipe.text_modules(None if part == "prior" else part)
        key = id(mods[0])
        train_text = uses_text and key not in trained_text and _spec_trainable(pipe, part)
        if uses_text:
            trained_text.add(key)
        x0, low = _targets(pipe, part, data, device)
        trainer = _Trainable(pipe, part, data, low, train_text, device)
        part_cfg = dataclasses.replace(cfg, prediction="sample" if part == "prior" else (s.prediction if s else
                                                                                          cfg.prediction))
        has_cond = uses_text or (s is not None and (s.cond == "class" or bool(s.low_res_from)))
        conds = torch.arange(len(x0)) if has_cond else None
        cfg_json = {"pipeline": json.dumps(meta), "part": part}
        flops = int(2e9 * sum(r.gmacs for r in counts if r.stage == part or r.name == part
                              or (train_text and r.component in ("text_encoder", "text_merge") and not r.stage)))
        ema, res = train(trainer, x0, conds, part_cfg, out / part.replace("/", "_"), flops_per_image=flops or None,
                         device=device, model_config=cfg_json, stop_after=stop_after)
        trainer.load_state_dict(ema.state_dict())  # EMA weights into the pipeline's own modules
        for m in mods:
            m.requires_grad_(False)
        results[part] = res
        if stop_after is not None and res.steps < part_cfg.total_steps(None):
            break
    pipe.requires_grad_(False)
    return results


def _spec_trainable(pipe: Pipeline, part: str) -> bool:
    own = None if part == "prior" else pipe.stages[part].spec.text_encoder
    if own is not None:
        return own.trainable
    return any(e.trainable for e in pipe.spec.text_encoders)


def _targets(pipe: Pipeline, part: str, data: PipelineData, device: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(x0 for this part, low-res input for super-resolution stages)."""
    if part == "prior":
        if data.image_embeds is None:
            raise ConfigError("training unCLIP's prior needs an image embedding per image (PipelineData.image_embeds)")
        return data.image_embeds.float(), None
    s = pipe.stages[part].spec
    c, h, _ = s.input_shape
    if pipe.autoencoder is not None:
        f = pipe.spec.autoencoder.factor  # type: ignore[union-attr]
        x0 = encode_latents(pipe.autoencoder.to(device), resize(data.images, h * f), device) * pipe.latent_scale.cpu()
    else:
        x0 = resize(data.images, h)
    low = None
    if s.low_res_from:
        prev = pipe.stages[s.low_res_from].spec.input_shape
        low = resize(data.images, prev[1])
    return x0, low


def _save_module(pipe: Pipeline, path: Path, prefixes: tuple[str, ...]) -> None:
    write_safetensors(path, {k: v for k, v in pipe.state_dict().items() if k.startswith(prefixes)}, {})


def _load_module(pipe: Pipeline, path: Path) -> None:
    pipe.load_state_dict({**pipe.state_dict(), **read_safetensors(path)[0]}, strict=True)


def training_data(spec: Any, dataset: str, seed: int = 0, n_shapes: int = 3000
                  ) -> tuple[PipelineData, list[str] | None]:
    """The data a pipeline trains on: ``digits`` (labels), ``shapes`` (captions; labels = the shape), or a dataset
    on disk (``diffusion/resolve.py``: a class-folder tree, a captioned folder, an ``.npz``), at the pipeline's
    output resolution.

    unCLIP's prior targets are the embedded CLIP's image embeddings (the only CLIP that ships; its
    text side is not used, so the pipeline's own text encoder still has to learn the captions).
    """
    res = spec.output_shape[1]
    if dataset == "digits":
        d = datasets.digits(res)
    elif dataset == "shapes":
        d = datasets.shapes(n_shapes, res, seed=seed + 1)
        d = datasets.ImageSet(d.images, d.labels[:, 0], d.captions)
    else:  # a dataset on disk, decoded as a backbone's is (ADM's centre crop), held in memory (a pipeline is tiny)
        src = open_source(dataset, res, seed)
        if src.latent:
            raise ConfigError(f"{dataset} holds latents; a pipeline trains its own autoencoder on images")
        b = src.fetch(range(len(src)))
        labels = b.conds if src.cond == "class" and b.conds is not None else torch.zeros(len(b.x), dtype=torch.long)
        d = datasets.ImageSet(b.x, labels, b.captions)
    if spec.cond == "text" and d.captions is None:
        raise ConfigError(f"the {spec.name} pipeline is text-conditional and {dataset} has no captions; "
                          "train it on --dataset shapes (procedural captioned images)")
    if spec.cond == "class" and spec.num_classes and int(d.labels.max()) >= spec.num_classes:
        raise ConfigError(f"{dataset} has labels up to {int(d.labels.max())} but the {spec.name} pipeline takes "
                          f"{spec.num_classes} classes")
    data = PipelineData(d.images, d.labels, tokenize(d.captions) if d.captions is not None else None)
    if spec.prior is not None:
        clip = clip_score.load("embedded")
        with torch.no_grad():
            data.image_embeds = torch.cat([clip.embed_images(d.images[i:i + 512])
                                           for i in range(0, len(d.images), 512)])
    return data, d.captions
