"""The modules built from a ``PipelineSpec``: stages (with experts), text conditioning, prior,
autoencoder; and pipeline checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from diffbench.core.errors import BadInputError, ConfigError, MissingWeightsError
from diffbench.models.api import load_into, load_state_dict, read_safetensors, write_safetensors
from diffbench.models.families import FAMILIES
from diffbench.models.pipelines.spec import AutoencoderSpec, PipelineSpec, PriorSpec, StageSpec, fingerprint
from diffbench.models.pretrained import from_local


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
        if not (Path(spec.path) / "config.json").is_file():
            raise MissingWeightsError(f"no autoencoder at {spec.path} (config.json missing): give a local diffusers "
                                      "AutoencoderKL directory saved with save_pretrained")

        ae = from_local(AutoencoderKL, spec.path, "a diffusers AutoencoderKL", MissingWeightsError)
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


def save_pipeline(pipe: Pipeline, path: str | Path) -> None:
    """All weights in one safetensors file (tied weights once), the pipeline's config in its metadata."""
    write_safetensors(path, pipe.state_dict(), {"format": "diffbench-pipeline", "pipeline": pipe.spec.name,
                                                "spec": fingerprint(pipe.spec)})


def load_pipeline(pipe: Pipeline, path: str | Path) -> Pipeline:
    """Weights into ``pipe`` from a pipeline checkpoint: safetensors (config checked) or a plain state
    dict loaded with ``weights_only`` (a pickle that needs code execution is refused)."""
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


def load_unet_into_stage(pipe: Pipeline, stage: str, folder: str | Path) -> Pipeline:
    """A diffusers-layout U-Net directory (``UNet2DConditionModel`` / ``UNet2DModel`` saved with
    ``save_pretrained``, e.g. a fine-tuned SD U-Net) into ``stage``: the stage's network is that diffusers class
    already, so the directory must hold its config (architecture fields compared, one line naming the first that
    differ) and its weights load strictly. Pickled weights are checked (``core/safeload.py``) before diffusers
    reads the directory."""
    from diffusers import UNet2DConditionModel, UNet2DModel

    if stage not in pipe.stages:
        raise ConfigError(f"the {pipe.spec.name} pipeline has no stage {stage!r} (its stages: "
                          f"{', '.join(pipe.stages)})")
    st = pipe.stages[stage]
    if len(st.experts) != 1:
        raise ConfigError(f"stage {stage} has {len(st.experts)} experts; a U-Net directory loads into a one-network "
                          "stage")
    net: Any = st.experts[0]
    if not isinstance(net, (UNet2DConditionModel, UNet2DModel)):
        raise ConfigError(f"stage {stage} is a {st.spec.family} network ({type(net).__name__}), not a diffusers "
                          "U-Net")
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise MissingWeightsError(f"no U-Net at {folder} (config.json missing): give a local diffusers U-Net "
                                  "directory saved with save_pretrained")

    loaded: Any = from_local(type(net), folder, f"a diffusers {type(net).__name__}")
    unet: Any = net
    ours, theirs = dict(unet.config), dict(loaded.config)
    differ = [k for k in sorted(set(ours) | set(theirs)) if not k.startswith("_") and
              _plain(ours.get(k)) != _plain(theirs.get(k))]
    if differ:
        shown = ", ".join(f"{k} ({theirs.get(k)!r} there, {ours.get(k)!r} here)" for k in differ[:3])
        raise ConfigError(f"{folder}: the U-Net's config differs from stage {stage} of {pipe.spec.name} as built: "
                          f"{shown}{' ...' if len(differ) > 3 else ''}; build the pipeline that U-Net was trained "
                          "in (--scale, --params)")
    load_into(unet, loaded.state_dict(), folder, f"use a U-Net saved from stage {stage} of this pipeline")
    return pipe


def _plain(v: Any) -> Any:
    """Config values as JSON has them (tuples and lists alike)."""
    return [_plain(x) for x in v] if isinstance(v, (list, tuple)) else v
