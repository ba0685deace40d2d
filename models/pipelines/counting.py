"""Counting a pipeline: params and GMACs of every component, on the meta device."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from diffbench.metrics.counting import count_flops, count_params, flops_to_gmacs
from diffbench.models.families import FAMILIES
from diffbench.models.pipelines.modules import Pipeline
from diffbench.models.pipelines.presets import PIPELINES
from diffbench.models.pipelines.sizing import size_pipeline
from diffbench.models.pipelines.spec import PipelineSpec
from diffbench.models.quantities import parse_quantity


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


def _row(name: str, component: str, module: Any, call: Any, **kw: Any) -> ComponentCount:
    return ComponentCount(name, component, count_params(module).total, flops_to_gmacs(count_flops(call)), **kw)


def count_pipeline(spec: PipelineSpec) -> list[ComponentCount]:
    """Params and GMACs of every component, built on the meta device (nothing is allocated)."""
    meta = torch.device("meta")
    with meta:
        pipe: Any = Pipeline(spec).eval()
    rows: list[ComponentCount] = []
    with torch.no_grad():
        for i, enc in enumerate(pipe.text_encoders):
            toks = _tokens(1, spec.text_length).to(meta)
            rows.append(_row(f"text_encoder{'' if i == 0 else f'.{i}'}", "text_encoder", enc, partial(enc, toks)))
        for i, lin in enumerate(pipe.text_merge):
            x = torch.zeros(1, spec.text_length, lin.in_features, device=meta)
            rows.append(_row(f"text_merge.{i + 1}", "text_merge", lin, partial(lin, x)))
        if pipe.prior is not None and spec.prior is not None:
            rows += _prior_rows(pipe, spec, meta)
        for s in spec.stages:
            rows += _stage_rows(pipe, spec, s, meta)
        if pipe.autoencoder is not None and spec.autoencoder is not None:
            c, h, w = spec.stages[-1].input_shape
            ae: Any = pipe.autoencoder
            z = torch.zeros(1, c, h, w, device=meta)
            rows.append(_row("autoencoder", "autoencoder", ae, partial(ae.decode, z)))
    return rows


def _prior_rows(pipe: Any, spec: PipelineSpec, meta: torch.device) -> list[ComponentCount]:
    assert spec.prior is not None and pipe.text_proj is not None
    e, length = spec.prior.image_embed_dim, spec.text_length
    args = dict(hidden_states=torch.zeros(1, e, device=meta), timestep=torch.tensor([1], device=meta),
                proj_embedding=torch.zeros(1, e, device=meta),
                encoder_hidden_states=torch.zeros(1, length, e, device=meta),
                attention_mask=torch.ones(1, length, dtype=torch.bool, device=meta))
    return [_row("prior", "prior", pipe.prior, partial(pipe.prior, **args), per_step=True),
            ComponentCount("text_proj", "text_proj", count_params(pipe.text_proj).total, 0.0)]


def _stage_rows(pipe: Any, spec: PipelineSpec, s: Any, meta: torch.device) -> list[ComponentCount]:
    """A stage's own text encoder (GLIDE) and each of its experts (one, or eDiff-I's several)."""
    rows, stage = [], pipe.stages[s.name]
    if stage.text is not None and s.text_encoder is not None:
        toks = _tokens(1, spec.text_length).to(meta)
        rows.append(_row(f"{s.name}.text_encoder", "text_encoder", stage.text, partial(stage.text, toks),
                         stage=s.name))
    fam = FAMILIES.get(s.family)
    for k, (cfg, net) in enumerate(zip(s.backbones, stage.experts, strict=True)):
        inputs = fam.make_inputs(cfg, 1, meta, torch.float32)
        if s.low_res_from and "low_res" in inputs:  # the previous stage's actual resolution
            prev = next(p for p in spec.stages if p.name == s.low_res_from).input_shape
            inputs["low_res"] = torch.zeros(1, prev[0], prev[1], prev[2], device=meta)
        name = s.name if len(s.backbones) == 1 else f"{s.name}.expert{k}"
        rows.append(_row(name, "denoiser", net, partial(fam.denoise, net, inputs), per_step=True, stage=s.name))
    return rows


def denoiser_params(rows: list[ComponentCount]) -> int:
    """Total denoiser parameters (all stages and experts; text encoders and autoencoders apart)."""
    return sum(r.params for r in rows if r.component in ("denoiser", "prior"))


def component_rows(name: str, scale: str = "paper", params: str | float | None = None) -> list[dict[str, Any]]:
    """One row per component of pipeline preset ``name`` (denoisers optionally reshaped to ``params`` in
    total), with the paper's reported count beside the measured one, and one row per network as
    released where a paper reports several components together (``decoder+text_proj``)."""
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
