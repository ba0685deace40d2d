"""Pipeline specs: the canon's systems as data, composed from parts.

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
import json
from dataclasses import dataclass, field
from typing import Any

from diffbench.core.errors import ConfigError
from diffbench.models.families import FAMILIES
from diffbench.models.text_encoders import TextEncoderSpec

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


def fingerprint(spec: PipelineSpec) -> str:
    return json.dumps(dataclasses.asdict(spec), sort_keys=True, default=str)
