"""Pipelines of the canon (Stable Diffusion/LDM, Imagen, eDiff-I, unCLIP, GLIDE, latent DiT/U-ViT):
``spec`` (the data), ``modules`` (what is built from it, checkpoints), ``counting``, ``sizing``
(to a denoiser budget) and ``presets`` (each system at paper and tiny scale)."""

from diffbench.models.pipelines.counting import ComponentCount, component_rows, count_pipeline, denoiser_params
from diffbench.models.pipelines.modules import Pipeline, load_pipeline, load_unet_into_stage, save_pipeline
from diffbench.models.pipelines.presets import PIPELINES, SCALES, PipelinePreset
from diffbench.models.pipelines.sizing import pipeline_spec, size_pipeline
from diffbench.models.pipelines.spec import AutoencoderSpec, PipelineSpec, PriorSpec, StageSpec, fingerprint

__all__ = ["PIPELINES", "SCALES", "AutoencoderSpec", "ComponentCount", "Pipeline", "PipelinePreset", "PipelineSpec",
           "PriorSpec", "StageSpec", "component_rows", "count_pipeline", "denoiser_params", "fingerprint",
           "load_pipeline", "load_unet_into_stage", "pipeline_spec", "save_pipeline", "size_pipeline"]
