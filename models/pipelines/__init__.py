"""Pipelines of the canon (Stable Diffusion/LDM, Imagen, eDiff-I, unCLIP, GLIDE, latent DiT/U-ViT):
``spec`` (the data), ``modules`` (what is built from it, checkpoints), ``counting``, ``sizing``
(to a denoiser budget) and ``presets`` (each system at paper and tiny scale).

The names below load on first use (PEP 562), so that listing the pipelines reads their specs without building
(or importing torch for) any of them."""

from diffbench.core import lazy

_WHERE = {"ComponentCount": "counting", "component_rows": "counting", "count_pipeline": "counting",
          "denoiser_params": "counting", "Pipeline": "modules", "load_pipeline": "modules",
          "load_unet_into_stage": "modules", "save_pipeline": "modules", "PIPELINES": "presets", "SCALES": "presets",
          "PipelinePreset": "presets", "pipeline_spec": "sizing", "size_pipeline": "sizing",
          "AutoencoderSpec": "spec", "PipelineSpec": "spec", "PriorSpec": "spec", "StageSpec": "spec",
          "fingerprint": "spec"}
__all__ = sorted(_WHERE)


__getattr__, __dir__ = lazy.names(__name__, _WHERE, globals())
