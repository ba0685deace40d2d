"""What makes a backbone family, and the registry of them.

Every family presents ``denoise(model, inputs) -> tensor`` over a dict of inputs with the same
keys (``x``, ``t``, and where the family uses them ``y`` labels, ``context`` text tokens,
``low_res`` image, ``added`` SDXL micro-conditioning), so that counting, timing, training and
sampling never special-case a family. Each family module (``dit``, ``uvit``, ``vit``, ``unet``,
``textunet``) ends with its entry: its inputs, its sizing rules, how it takes a condition, which
fields are its width and depth, and its paper configurations. ``models.families`` imports them
all, in listing order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from diffbench.core.errors import ConfigError, FamilyError
from diffbench.core.registry import Registry
from diffbench.models.shapes import width_depth_rules

Inputs = dict[str, Any]


INFER: Any = "infer"  # a field left to the contract's default (``None`` where allowed says: this family has none)
CONDITION_KINDS = ("class", "text", "none")


@dataclass(frozen=True, kw_only=True)
class Family:
    """A backbone family: the public contract every family satisfies, the built-in five and a user's own
    (``docs/family.md`` walks through one).

    Asked for, since nothing can infer them:

    - ``name``: what suites, the CLI and reports call it.
    - ``config_cls``: a dataclass, a default for every field, whose ``build()`` returns the network.
    - ``width_field``, ``depth_field``: the config's int fields that sizing changes (width: channels or hidden
      size; depth: blocks, or a U-Net's blocks per level).
    - ``width_step``: widths stay multiples of it (an int, or a function of the config: heads, GroupNorm groups).

    Inferred where not given:

    - ``conditions``: what it can be conditioned on, of ``class``, ``text``, ``none`` (default: class and none).
    - ``input_shape(config) -> (C, H, W)`` of the noisy input: default the ``in_channels`` and ``input_size`` fields.
    - ``make_inputs(config, batch, device, dtype) -> inputs``: default ``x`` noise, ``t`` timesteps and, when the
      config's ``num_classes`` is above 0, ``y`` class labels.
    - ``denoise(model, inputs) -> tensor``: default ``model(x, t, y)``, or ``model(x, t)`` without labels. It
      returns the input's shape, or twice its channels (a learned variance, as DiT's and ADM's).
    - ``condition(config, kind, num_classes, text_len, text_dim) -> config``: the config that takes this condition;
      default sets ``num_classes`` (0 for none). Labels run 0 .. num_classes: the last is the null class of
      classifier-free guidance, so a class table needs num_classes + 1 rows. ``None``: it takes none.
    - ``for_input(config, (C, H, W), patch) -> config``: default sets ``in_channels``, ``input_size`` and, when asked
      and the config has one, ``patch_size``.
    - ``sizing(shape, Conditioning, patch) -> structures`` (``models/shapes.py``): default every multiple of the
      width step up to 4096 at DiT's and U-ViT's depths for each width (``shapes.width_depth_rules``), the params
      and FLOPs checked quadratic in width and affine in depth on first use. ``None``: sized inside pipelines only.
    - ``tiny() -> config``: a config small enough for a CPU forward in well under a second; the first-use check
      (``models/external.py``) builds it, else the default config.
    - ``title``, ``description``: words for listings.
    - ``params_affine_in``: a depth field the params are exactly affine in (sizing probes fewer builds);
      ``odd_depth``: the depth stays odd (U-ViT: in-blocks, a mid-block, out-blocks).
    """

    name: str
    config_cls: type
    width_field: str
    depth_field: str
    width_step: int | Callable[[Any], int]
    conditions: tuple[str, ...] = ("class", "none")
    title: str = ""
    description: str = ""
    input_shape: Callable[[Any], tuple[int, int, int]] = INFER
    make_inputs: Callable[[Any, int, torch.device, torch.dtype], Inputs] = INFER
    denoise: Callable[[nn.Module, Inputs], torch.Tensor] = INFER
    condition: Callable[[Any, str, int, int, int], Any] | None = INFER
    for_input: Callable[[Any, tuple[int, int, int], int | None], Any] = INFER
    sizing: Callable[..., list[Any]] | None = INFER
    tiny: Callable[[], Any] | None = None
    params_affine_in: str | None = None
    odd_depth: bool = False

    def __post_init__(self) -> None:
        def default(name: str, value: Any) -> None:
            # inferred for this family: also a default inferred for another (a family copied by dataclasses.replace)
            if getattr(self, name) is INFER or isinstance(getattr(self, name), _Inferred):
                object.__setattr__(self, name, _Inferred(*value))

        default("input_shape", (_fields_input_shape, self.name))
        default("make_inputs", (_default_inputs, self.input_shape))
        default("denoise", (_default_denoise,))
        default("condition", (_num_classes_condition, self.name))
        default("for_input", (_fields_for_input, self.name))
        default("sizing", (width_depth_rules(self),))

    def build(self, config: Any) -> nn.Module:
        return config.build()

    def step(self, config: Any) -> int:
        """The multiple this config's widths stay at."""
        return self.width_step if isinstance(self.width_step, int) else int(self.width_step(config))


class _Inferred(functools.partial):  # type: ignore[type-arg]
    """A default the contract filled in; a copy of the family (``dataclasses.replace``) infers it again."""


def _missing(family: str, config: Any, fields: tuple[str, ...], give: str) -> None:
    absent = [f for f in fields if not hasattr(config, f)]
    if absent:
        raise FamilyError(f"family {family}: its config {type(config).__name__} has no {' or '.join(absent)} field; "
                          f"give the family {give}")


def _fields_input_shape(family: str, config: Any) -> tuple[int, int, int]:
    _missing(family, config, ("in_channels", "input_size"), "input_shape=lambda c: (C, H, W)")
    return (int(config.in_channels), int(config.input_size), int(config.input_size))


def _fields_for_input(family: str, config: Any, shape: tuple[int, int, int], patch: int | None) -> Any:
    _missing(family, config, ("in_channels", "input_size"), "for_input=lambda c, shape, patch: ... (the config "
             "for an input shape)")
    if shape[1] != shape[2]:
        raise ConfigError(f"input {shape[1]}x{shape[2]} is not square; family {family} takes input_size x input_size")
    changes: dict[str, Any] = {"in_channels": shape[0], "input_size": shape[1]}
    if patch is not None and hasattr(config, "patch_size"):
        changes["patch_size"] = patch
    return dataclasses.replace(config, **changes)


def _default_inputs(input_shape: Callable[[Any], tuple[int, int, int]], config: Any, batch: int,
                    device: torch.device, dtype: torch.dtype) -> Inputs:
    inputs = noise_and_time(input_shape(config), batch, device, dtype)
    classes = getattr(config, "num_classes", 0)
    if isinstance(classes, int) and classes > 0:
        inputs["y"] = labels(classes, batch, device)
    return inputs


def _default_denoise(model: nn.Module, inputs: Inputs) -> torch.Tensor:
    if "y" in inputs:
        return model(inputs["x"], inputs["t"], inputs["y"])
    return model(inputs["x"], inputs["t"])


def _num_classes_condition(family: str, config: Any, cond: str, num_classes: int, text_len: int,
                           text_dim: int) -> Any:
    if cond == "text":
        raise FamilyError(f"family {family} takes no text by default; give it condition= (the config for text), "
                          "make_inputs= and denoise= that pass the tokens, and conditions=(..., 'text')")
    if not hasattr(config, "num_classes"):
        if cond == "none":
            return config
        raise FamilyError(f"family {family}: its config {type(config).__name__} has no num_classes field, so it "
                          "cannot take class labels; add the field or give conditions=('none',)")
    return dataclasses.replace(config, num_classes=num_classes if cond == "class" else 0)


FAMILIES: Registry[Family] = Registry("family", "backbone families")


def noise_and_time(shape: tuple[int, int, int], batch: int, device: torch.device, dtype: torch.dtype) -> Inputs:
    return {
        "x": torch.randn(batch, *shape, device=device, dtype=dtype),
        "t": torch.full((batch,), 500.0, device=device),  # any timestep: compute does not depend on it
    }


def labels(num_classes: int, batch: int, device: torch.device) -> torch.Tensor:
    return torch.zeros(batch, dtype=torch.long, device=device)  # class 0: compute does not depend on it


def transformer_width_step(cfg: Any) -> int:
    return math.lcm(cfg.num_heads, 16)


def unet_width_step(cfg: Any) -> int:
    heads = cfg.num_heads if isinstance(getattr(cfg, "num_heads", None), int) else 1
    attends = bool(getattr(cfg, "attention_resolutions", ())) or getattr(cfg, "mid_attention", False)
    head_ch = getattr(cfg, "num_head_channels", 1) if attends else 1
    return math.lcm(cfg.norm_num_groups, max(head_ch, 1), heads)


def family_of(config: Any) -> Family:
    for _, fam in FAMILIES.items():
        if isinstance(config, fam.config_cls):
            return fam
    raise ConfigError(f"no family for config type {type(config).__name__}: register its family (a diffbench.Family, "
                      "docs/family.md) by naming it as package.module:NAME, or time a lone module with "
                      "diffbench.benchmark_module")
