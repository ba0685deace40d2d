"""Counting a pipeline: params and GMACs of every component, on the meta device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from diffbench.models.families import FAMILIES
from diffbench.models.pipelines.modules import Pipeline
from diffbench.models.pipelines.spec import PipelineSpec


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
    from diffbench.metrics.counting import count_flops, count_params, flops_to_gmacs

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


def component_rows(name: str, scale: str = "paper", params: str | float | None = None) -> list[dict[str, Any]]:
    """One row per component of pipeline preset ``name`` (denoisers optionally reshaped to ``params`` in
    total), with the paper's reported count beside the measured one, and one row per network as
    released where a paper reports several components together (``decoder+text_proj``)."""
    from diffbench.models.pipelines.presets import PIPELINES
    from diffbench.models.pipelines.sizing import size_pipeline
    from diffbench.models.sizing import parse_quantity

    preset = PIPELINES.get(name)
    spec = preset.spec(scale)
    if params:
        budget = parse_quantity(params, "--params") if isinstance(params, str) else float(params)
        spec, _, _ = size_pipeline(spec, budget)
    comps = count_pipeline(spec)
    with_reported = scale == "paper" and not params
    rows = []
    for c in comps:
        reported = preset.reported.get(c.name) if with_reported else None
        rows.append({"pipeline": name, "scale": scale, **c.as_dict(), "reported_params": reported,
                     "reported_exact": preset.exact if reported is not None else None})
    by_name = {c.name: c for c in comps}
    for key, value in (preset.reported.items() if with_reported else ()):
        parts = key.split("+")
        if len(parts) > 1 and all(p in by_name for p in parts):  # a released network = several components
            rows.append({"pipeline": name, "scale": scale, "name": key, "component": "network (as released)",
                         "params": sum(by_name[p].params for p in parts), "gmacs": sum(by_name[p].gmacs for p in parts),
                         "per_step": True, "stage": by_name[parts[-1]].stage, "reported_params": value,
                         "reported_exact": preset.exact})
    return rows
