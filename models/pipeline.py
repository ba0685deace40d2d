"""Pipelines: the canon's systems composed from parts.

A pipeline is
- optional text encoders (``models.text_encoders``: CLIP, T5 or GLIDE's own; several are
  concatenated along the token axis after a linear map to the first one's width, eDiff-I);
- an optional prior (unCLIP: text embedding -> CLIP image embedding; diffusers ``PriorTransformer``)
  with its decoder-side projection (diffusers ``UnCLIPTextProjModel``);
- an optional autoencoder (diffusers ``AutoencoderKL``: random init, local weights, or trained by
  the harness on the embedded data first);
- one or more stages, each a backbone config of a registered family, or several (eDiff-I's
  experts, each owning an interval of timesteps); a stage with ``low_res_from`` is a
  super-resolution stage conditioned on the previous stage's output, upsampled, concatenated,
  and noise-augmented (Imagen's noise-conditioning augmentation);
- guidance settings (classifier-free scale; Imagen's dynamic thresholding).

``PipelineSpec`` is data; ``Pipeline`` the module built from it; ``count_pipeline`` counts every
component on the meta device. How a pipeline is trained and sampled lives in ``bench``.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bench.errors import ConfigError
from models.families import FAMILIES
from models.text_encoders import TextEncoderSpec

CONDS = ("text", "class", "image", "none")  # image: unCLIP's decoder (CLIP image embedding + text)


@dataclass(frozen=True)
class AutoencoderSpec:
    """diffusers ``AutoencoderKL`` fields; ``path`` a local diffusers directory to load instead."""

    config: dict[str, Any]
    path: str = ""
    scaling_factor: float = 0.18215  # SD's latent scale; the harness re-estimates it when it trains one

    @property
    def factor(self) -> int:
        return 2 ** (len(self.config.get("block_out_channels", (64,))) - 1)

    @property
    def latent_channels(self) -> int:
        return int(self.config.get("latent_channels", 4))


@dataclass(frozen=True)
class PriorSpec:
    """diffusers ``PriorTransformer`` fields (unCLIP); it predicts the clean image embedding."""

    config: dict[str, Any] = field(default_factory=dict)
    image_embed_dim: int = 768
    extra_tokens: int = 4  # unCLIP's decoder: the image embedding as 4 extra context tokens


@dataclass(frozen=True)
class StageSpec:
    name: str
    family: str
    backbones: tuple[Any, ...]  # one config, or one per expert
    cond: str = "text"
    boundaries: tuple[int, ...] = ()  # experts: descending timesteps; expert i owns [b_i, b_{i-1})
    low_res_from: str = ""  # super-resolution: the stage whose output is the low-res input
    aug_level: int = 0  # noise-conditioning augmentation timestep used at sampling (Imagen: fixed)
    prediction: str = "epsilon"
    thresholding: bool = False  # Imagen's dynamic thresholding (pixel stages predicting epsilon)
    text_encoder: TextEncoderSpec | None = None  # a text encoder of the stage's own (GLIDE's upsampler)

    def __post_init__(self) -> None:
        FAMILIES.get(self.family)
        if self.cond not in CONDS:
            raise ConfigError(f"stage {self.name}: cond must be one of {', '.join(CONDS)}, got {self.cond!r}")
        if not self.backbones:
            raise ConfigError(f"stage {self.name} has no backbone")
        if len(self.boundaries) != len(self.backbones) - 1:
            raise ConfigError(f"stage {self.name}: {len(self.backbones)} experts need {len(self.backbones) - 1} "
                              f"timestep boundaries, got {len(self.boundaries)}")
        if list(self.boundaries) != sorted(self.boundaries, reverse=True):
            raise ConfigError(f"stage {self.name}: expert boundaries must be descending timesteps")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        fam = FAMILIES.get(self.family)
        return fam.input_shape(self.backbones[0])


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    title: str
    stages: tuple[StageSpec, ...]
    text_encoders: tuple[TextEncoderSpec, ...] = ()
    prior: PriorSpec | None = None
    autoencoder: AutoencoderSpec | None = None
    num_classes: int = 0  # class-conditional pipelines (DiT, U-ViT): the null class is num_classes
    guidance: float = 1.0  # default classifier-free guidance scale
    steps: int = 50  # default sampling steps per stage
    source: str = ""

    def __post_init__(self) -> None:
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ConfigError(f"pipeline {self.name}: stage names repeat: {names}")
        for i, s in enumerate(self.stages):
            if s.low_res_from and s.low_res_from not in names[:i]:
                raise ConfigError(f"pipeline {self.name}: stage {s.name} takes its low-res input from "
                                  f"{s.low_res_from!r}, which is not an earlier stage")
            if s.cond in ("text", "image") and not self.text_encoders and s.text_encoder is None:
                raise ConfigError(f"pipeline {self.name}: stage {s.name} is text-conditional but there is no "
                                  "text encoder")
            if s.cond == "image" and self.prior is None:
                raise ConfigError(f"pipeline {self.name}: stage {s.name} needs a prior for its image embedding")

    @property
    def cond(self) -> str:
        """What a user gives each sample: captions ("text") or labels ("class") or nothing."""
        if self.text_encoder_specs:
            return "text"
        return "class" if self.num_classes else "none"

    @property
    def text_encoder_specs(self) -> list[TextEncoderSpec]:
        return [*self.text_encoders, *(s.text_encoder for s in self.stages if s.text_encoder is not None)]

    @property
    def text_length(self) -> int:
        """Caption length every text encoder accepts (all encoders read the same token ids)."""
        return min(e.length for e in self.text_encoder_specs)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        c, h, w = self.stages[-1].input_shape
        if self.autoencoder is not None:
            f = self.autoencoder.factor
            return (int(self.autoencoder.config.get("out_channels", 3)), h * f, w * f)
        return (c, h, w)


# --- modules -------------------------------------------------------------------------------------

class Stage(nn.Module):
    """One denoising stage; with experts, each timestep is routed to the expert owning it."""

    def __init__(self, spec: StageSpec) -> None:
        super().__init__()
        self.spec = spec
        self.family = FAMILIES.get(spec.family)
        self.experts: Any = nn.ModuleList(c.build() for c in spec.backbones)
        for e in self.experts:  # DiT drops labels with the global RNG; the harness's seeded trainer drops them
            embedder: Any = getattr(e, "y_embedder", None)
            if embedder is not None:
                embedder.dropout_prob = 0.0
        self.text: Any = spec.text_encoder.build() if spec.text_encoder is not None else None

    def route(self, t: torch.Tensor) -> torch.Tensor:
        """Expert index per timestep: expert i owns boundaries[i-1] > t >= boundaries[i]."""
        idx = torch.zeros_like(t, dtype=torch.long)
        for b in self.spec.boundaries:
            idx += (t < b).long()
        return idx

    def forward(self, x: torch.Tensor, t: torch.Tensor, inputs: dict[str, Any]) -> torch.Tensor:
        if len(self.experts) == 1:
            return self.family.denoise(self.experts[0], {"x": x, "t": t, **inputs})
        which = self.route(t)
        out: torch.Tensor | None = None
        for e, expert in enumerate(self.experts):
            sel = which == e
            if not sel.any():
                continue
            part = self.family.denoise(expert, {"x": x[sel], "t": t[sel],
                                                **{k: v[sel] for k, v in inputs.items()}})
            if out is None:
                out = x.new_zeros((len(x), *part.shape[1:]))
            out[sel] = part
        assert out is not None
        return out


class Pipeline(nn.Module):
    """The modules of a ``PipelineSpec``; ``condition`` turns a batch's conditions into stage inputs."""

    def __init__(self, spec: PipelineSpec) -> None:
        super().__init__()
        self.spec = spec
        self.text_encoders: Any = nn.ModuleList(s.build() for s in spec.text_encoders)
        first: Any = self.text_encoders[0] if len(self.text_encoders) else None
        self.text_merge: Any = nn.ModuleList(nn.Linear(_width(e), first.width)
                                             for e in list(self.text_encoders)[1:])
        self.prior: Any = None
        self.text_proj: Any = None
        if spec.prior is not None:
            from diffusers.models import PriorTransformer

            self.prior = PriorTransformer(**spec.prior.config)
            decoder = next(s for s in spec.stages if s.cond == "image")
            self.text_proj = _text_proj(spec.prior, decoder.backbones[0], first.width, first.pooled_width)
        self.autoencoder: Any = None
        if spec.autoencoder is not None:
            self.autoencoder = build_autoencoder(spec.autoencoder)
        self.stages: Any = nn.ModuleDict({s.name: Stage(s) for s in spec.stages})
        # latents are divided by this before decoding (SD's 0.18215; re-estimated when the harness trains one)
        scale = spec.autoencoder.scaling_factor if spec.autoencoder is not None else 1.0
        if spec.autoencoder is not None and spec.autoencoder.path:  # a released autoencoder carries its own
            scale = float(self.autoencoder.config.scaling_factor)
        self.latent_scale: torch.Tensor
        self.register_buffer("latent_scale", torch.tensor(float(scale)))

    # -- conditions -------------------------------------------------------------------------------
    def text_modules(self, stage: str | None = None) -> tuple[Any, ...]:
        """The modules that encode captions for ``stage``: its own encoder, or the shared ones."""
        own = self.stages[stage].text if stage is not None else None
        return (own,) if own is not None else (self.text_encoders, self.text_merge)

    def encode_text(self, tokens: torch.Tensor, stage: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return encode_text(self.text_modules(stage), tokens)

    def null_image_embed(self, n: int) -> torch.Tensor:
        return null_image_embed(self.text_proj, n)

    def condition(self, stage: str, cond: dict[str, Any], text: tuple[torch.Tensor, torch.Tensor] | None
                  ) -> dict[str, Any]:
        return stage_inputs(self.stages[stage].spec, cond, text, self.text_proj)


def null_image_embed(text_proj: Any, n: int) -> torch.Tensor:
    """unCLIP's learned null image embedding (classifier-free guidance), for ``n`` samples."""
    return text_proj.learned_classifier_free_guidance_embeddings[None].expand(n, -1)


def _width(encoder: Any) -> int:
    return int(encoder.width)


def encode_text(modules: tuple[Any, ...], tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption ids (N, L) -> (tokens (N, L', D), pooled (N, P)).

    ``modules`` is a stage's own encoder (GLIDE), or (encoders, merges): all the pipeline's text
    encoders, the later ones mapped to the first one's width and concatenated along the tokens
    (eDiff-I's T5 + CLIP); the pooled vector is the first encoder's.
    """
    if len(modules) == 1:
        return modules[0](tokens)
    encoders, merges = modules
    hs, pooled = [], None
    for i, enc in enumerate(encoders):
        h, p = enc(tokens)
        hs.append(h if i == 0 else merges[i - 1](h))
        pooled = p if pooled is None else pooled
    assert pooled is not None
    return torch.cat(hs, dim=1), pooled


def stage_inputs(spec: StageSpec, cond: dict[str, Any], text: tuple[torch.Tensor, torch.Tensor] | None,
                 text_proj: nn.Module | None) -> dict[str, Any]:
    """Backbone inputs of a stage from a batch's conditions.

    ``cond`` holds what applies of ``y`` (labels; the null class where dropped), ``image_embed``
    (unCLIP; the learned null embedding where dropped), ``low_res`` (the super-resolution input,
    already noise-augmented) and ``aug_t`` (its augmentation timestep); ``text`` the encoded
    captions (the empty caption where dropped).
    """
    cfg = spec.backbones[0]
    inputs: dict[str, Any] = {}
    if spec.cond == "class":
        inputs["y"] = cond["y"]
    elif spec.cond in ("text", "image"):
        assert text is not None
        h, pooled = text
        if spec.cond == "image":
            assert text_proj is not None
            h, add = text_proj(image_embeddings=cond["image_embed"], prompt_embeds=pooled,
                               text_encoder_hidden_states=h, do_classifier_free_guidance=False)
            inputs["class_embed"] = add
        elif getattr(cfg, "class_embed", "none") == "projection":
            inputs["class_embed"] = pooled
        inputs["context"] = h
    if spec.low_res_from:
        inputs["low_res"] = cond["low_res"]
        if getattr(cfg, "class_embed", "none") == "timestep":
            inputs["class_embed"] = cond["aug_t"]
    if spec.family == "unet-ldm" and "context" not in inputs:  # LDM U-Nets always cross-attend: a zero token
        n = len(cond["low_res"]) if "low_res" in cond else len(cond["y"])
        inputs["context"] = torch.zeros(n, 1, cfg.context_dim, device=cond.get("device", "cpu"))
    return inputs


def build_autoencoder(spec: AutoencoderSpec) -> Any:
    from diffusers import AutoencoderKL

    if spec.path:
        from bench.errors import MissingWeightsError

        if not (Path(spec.path) / "config.json").is_file():
            raise MissingWeightsError(f"no autoencoder at {spec.path} (config.json missing): give a local diffusers "
                                      "AutoencoderKL directory saved with save_pretrained")
        ae = AutoencoderKL.from_pretrained(spec.path, local_files_only=True)
        factor = 2 ** (len(ae.config.block_out_channels) - 1)
        if ae.config.latent_channels != spec.latent_channels or factor != spec.factor:
            raise ConfigError(f"the autoencoder at {spec.path} has {ae.config.latent_channels} latent channels and "
                              f"downsamples {factor}x; this pipeline needs {spec.latent_channels} channels and "
                              f"{spec.factor}x")
        return ae
    return AutoencoderKL(**spec.config)


def _text_proj(prior: PriorSpec, decoder_cfg: Any, text_width: int, pooled_width: int) -> nn.Module:
    """unCLIP's decoder conditioning (image embedding -> 4 context tokens and a time-embedding term)."""
    try:
        from diffusers.pipelines.unclip.text_proj import UnCLIPTextProjModel
    except ImportError:  # moved under deprecated/ in newer diffusers
        from diffusers.pipelines.deprecated.unclip.text_proj import UnCLIPTextProjModel
    if text_width != prior.image_embed_dim or pooled_width != prior.image_embed_dim:
        raise ConfigError(f"unCLIP's text projection takes text tokens and pooled text of the image embedding's "
                          f"width {prior.image_embed_dim}; the text encoder gives {text_width} and {pooled_width}")
    proj = UnCLIPTextProjModel(clip_extra_context_tokens=prior.extra_tokens, clip_embeddings_dim=prior.image_embed_dim,
                               time_embed_dim=decoder_cfg.time_embed_dim, cross_attention_dim=decoder_cfg.context_dim)
    return proj


# --- counting ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ComponentCount:
    name: str
    component: str  # text_encoder, text_merge, prior, text_proj, denoiser, autoencoder
    params: int
    gmacs: float  # one evaluation at batch 1 (a denoiser: one step; the autoencoder: one decode)
    per_step: bool = False  # evaluated once per sampling step (denoisers, the prior)
    stage: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _tokens(n: int, length: int) -> torch.Tensor:
    return torch.ones(n, length, dtype=torch.long)


def count_pipeline(spec: PipelineSpec) -> list[ComponentCount]:
    """Params and GMACs of every component, built on the meta device (nothing is allocated)."""
    from metrics.counting import count_flops, count_params, flops_to_gmacs

    def n_params(m: nn.Module) -> int:
        return count_params(m).total

    meta = torch.device("meta")
    rows: list[ComponentCount] = []
    with meta:
        pipe: Any = Pipeline(spec).eval()
    with torch.no_grad():
        for i, enc in enumerate(pipe.text_encoders):
            toks = _tokens(1, spec.text_length).to(meta)
            rows.append(ComponentCount(f"text_encoder{'' if i == 0 else f'.{i}'}", "text_encoder", n_params(enc),
                                       flops_to_gmacs(count_flops(partial(enc, toks)))))
        for i, lin in enumerate(pipe.text_merge):
            length = spec.text_length
            x = torch.zeros(1, length, lin.in_features, device=meta)
            rows.append(ComponentCount(f"text_merge.{i + 1}", "text_merge", n_params(lin),
                                       flops_to_gmacs(count_flops(partial(lin, x)))))
        if pipe.prior is not None and spec.prior is not None:
            e, length = spec.prior.image_embed_dim, spec.text_length
            args = dict(hidden_states=torch.zeros(1, e, device=meta), timestep=torch.tensor([1], device=meta),
                        proj_embedding=torch.zeros(1, e, device=meta),
                        encoder_hidden_states=torch.zeros(1, length, e, device=meta),
                        attention_mask=torch.ones(1, length, dtype=torch.bool, device=meta))
            prior = pipe.prior
            rows.append(ComponentCount("prior", "prior", n_params(prior),
                                       flops_to_gmacs(count_flops(partial(prior, **args))), per_step=True))
            assert pipe.text_proj is not None
            rows.append(ComponentCount("text_proj", "text_proj", n_params(pipe.text_proj), 0.0))
        for s in spec.stages:
            stage = pipe.stages[s.name]
            if stage.text is not None and s.text_encoder is not None:
                toks = _tokens(1, spec.text_length).to(meta)
                rows.append(ComponentCount(f"{s.name}.text_encoder", "text_encoder", n_params(stage.text),
                                           flops_to_gmacs(count_flops(partial(stage.text, toks))),
                                           stage=s.name))
            fam = FAMILIES.get(s.family)
            for k, (cfg, net) in enumerate(zip(s.backbones, stage.experts, strict=True)):
                inputs = fam.make_inputs(cfg, 1, meta, torch.float32)
                if s.low_res_from and "low_res" in inputs:  # the previous stage's actual resolution
                    prev = next(p for p in spec.stages if p.name == s.low_res_from).input_shape
                    inputs["low_res"] = torch.zeros(1, prev[0], prev[1], prev[2], device=meta)
                name = s.name if len(s.backbones) == 1 else f"{s.name}.expert{k}"
                rows.append(ComponentCount(name, "denoiser", n_params(net),
                                           flops_to_gmacs(count_flops(partial(fam.denoise, net, inputs))),
                                           per_step=True, stage=s.name))
        if pipe.autoencoder is not None and spec.autoencoder is not None:
            c, h, w = spec.stages[-1].input_shape
            z = torch.zeros(1, c, h, w, device=meta)
            ae: Any = pipe.autoencoder
            rows.append(ComponentCount("autoencoder", "autoencoder", n_params(ae),
                                       flops_to_gmacs(count_flops(partial(ae.decode, z)))))
    return rows


def denoiser_params(rows: list[ComponentCount]) -> int:
    """Total denoiser parameters (all stages and experts; text encoders and autoencoders apart)."""
    return sum(r.params for r in rows if r.component in ("denoiser", "prior"))


# --- sizing to a parameter budget ----------------------------------------------------------------

WIDTH_FIELDS = {"dit": "hidden_size", "vit": "hidden_size", "uvit": "embed_dim", "unet-adm": "model_channels",
                "unet-ldm": "model_channels", "unet-glide": "model_channels"}


def _width_step(family: str, cfg: Any) -> int:
    """Widths stay multiples of what the family's heads and GroupNorm groups need."""
    if family in ("dit", "vit", "uvit"):
        return math.lcm(cfg.num_heads, 16)
    heads = cfg.num_heads if isinstance(getattr(cfg, "num_heads", None), int) else 1
    attends = bool(getattr(cfg, "attention_resolutions", ())) or getattr(cfg, "mid_attention", False)
    head_ch = getattr(cfg, "num_head_channels", 1) if attends else 1
    return math.lcm(cfg.norm_num_groups, max(head_ch, 1), heads)


DEPTH_FIELDS = {"dit": "depth", "vit": "depth", "uvit": "depth", "unet-adm": "num_res_blocks",
                "unet-ldm": "num_res_blocks", "unet-glide": "num_res_blocks"}


def _reshaped(s: StageSpec, factor: float, depth_delta: int = 0) -> StageSpec | None:
    """The stage with every backbone's width scaled by ``factor`` (rounded to the family's step) and its
    depth (transformer blocks, or U-Net blocks per level) moved by ``depth_delta``; None if invalid."""
    wf, df = WIDTH_FIELDS[s.family], DEPTH_FIELDS[s.family]
    configs = []
    for cfg in s.backbones:
        step = _width_step(s.family, cfg)
        changes: dict[str, Any] = {wf: max(step, round(getattr(cfg, wf) * factor / step) * step)}
        depth = getattr(cfg, df)
        if depth_delta:
            moved: Any = tuple(d + depth_delta for d in depth) if isinstance(depth, tuple) else depth + depth_delta
            if min(moved if isinstance(moved, tuple) else (moved,)) < 1 or (s.family == "uvit" and moved % 2 == 0):
                return None  # U-ViT needs an odd depth (in-blocks, mid-block, out-blocks)
            changes[df] = moved
        try:
            configs.append(dataclasses.replace(cfg, **changes))
        except ConfigError:
            return None
    return dataclasses.replace(s, backbones=tuple(configs))


def _stage_params(s: StageSpec) -> int:
    from models.sizing import probe  # cached per config: the search probes the same widths again and again

    return sum(probe(c, False)[0] for c in s.backbones)


def size_pipeline(spec: PipelineSpec, params: float, tolerance: float = 0.03) -> tuple[PipelineSpec, int, float]:
    """Reshape the stages' backbones so that the denoisers (all stages and experts, plus the unCLIP
    prior, which keeps its size) total ``params``; text encoders and the autoencoder are counted
    apart and keep their size. Returns (spec, achieved, relative error).

    A common width factor keeps the stages' proportions (found by bisection); then each stage may
    move its width a step and its depth by one, and the combination closest to the budget wins
    (near-ties, within 0.5%, go to the least reshaped).
    """
    if not params > 0:
        raise ConfigError(f"the parameter budget must be positive, got {params:g}")
    fixed = 0
    if spec.prior is not None:
        from diffusers.models import PriorTransformer

        with torch.device("meta"):
            fixed = sum(p.numel() for p in PriorTransformer(**spec.prior.config).parameters())

    def total(f: float) -> int:
        return fixed + sum(_stage_params(st) for st in (_reshaped(s, f) for s in spec.stages) if st is not None)

    lo, hi = 1 / 64, 64.0
    for _ in range(40):  # bisection on the log of the width factor; params grow with width
        mid = math.sqrt(lo * hi)
        if total(mid) < params:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1.002:
            break
    f = math.sqrt(lo * hi)
    options: list[list[tuple[StageSpec, int, float]]] = []
    for s in spec.stages:
        opts: dict[str, tuple[StageSpec, int, float]] = {}
        for k in (0.6, 0.7, 0.8, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2, 1.3, 1.45, 1.6):
            for dd in (-2, -1, 0, 1, 2):
                st = _reshaped(s, f * k, dd)
                key = repr(st)
                if st is not None and key not in opts:
                    opts[key] = (st, _stage_params(st), abs(math.log(k)) + abs(dd) * 0.2)
        options.append(list(opts.values()))
    combos: list[tuple[float, float, tuple[StageSpec, ...], int]] = []
    for pick in itertools.product(*options):
        n = fixed + sum(p[1] for p in pick)
        combos.append((abs(n / params - 1), sum(p[2] for p in pick), tuple(p[0] for p in pick), n))
    best_err = min(c[0] for c in combos)
    err, _, stages, n = min((c for c in combos if c[0] <= max(best_err, 0.005)), key=lambda c: (c[1], c[0]))
    if err > tolerance:
        raise ConfigError(f"the {spec.name} pipeline's denoisers cannot reach {params:,.0f} params within "
                          f"{tolerance:.0%} by reshaping their backbones (closest {n:,}, {n / params - 1:+.1%}); "
                          "choose a budget nearer its natural size")
    return dataclasses.replace(spec, stages=stages), n, n / params - 1


# --- checkpoints ---------------------------------------------------------------------------------

def fingerprint(spec: PipelineSpec) -> str:
    import json

    return json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)


def save_pipeline(pipe: Pipeline, path: str | Path) -> None:
    """All weights in one safetensors file (tied weights once), the pipeline's config in its metadata."""
    from models.api import write_safetensors

    write_safetensors(path, pipe.state_dict(), {"format": "diffbench-pipeline", "pipeline": pipe.spec.name,
                                                "spec": fingerprint(pipe.spec)})


def load_pipeline(pipe: Pipeline, path: str | Path) -> Pipeline:
    """Weights into ``pipe`` from a pipeline checkpoint: safetensors (config checked) or a plain state
    dict loaded with ``weights_only`` (a pickle that needs code execution is refused)."""
    from bench.errors import BadInputError
    from models.api import load_into, load_state_dict, read_safetensors

    path = Path(path)
    if path.suffix == ".safetensors" and path.is_file():
        state, meta = read_safetensors(path)
        if meta.get("format") == "diffbench-pipeline" and meta.get("spec") != fingerprint(pipe.spec):
            raise BadInputError(f"{path} was written for a different {meta.get('pipeline', '?')} pipeline config "
                                f"than {pipe.spec.name} as built now; use the same preset, scale and --params")
    else:
        state = load_state_dict(path)
    load_into(pipe, state, path, f"use a checkpoint written for the {pipe.spec.name} preset at this scale and --params")
    return pipe
