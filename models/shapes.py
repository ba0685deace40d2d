"""The building blocks of the families' shape rules (``Family.sizing``).

A *structure* is all of a config but its width (and, for transformers, its depth); each family
lists the structures its paper's series would allow for an input, and ``models.sizing`` searches
them. The rules keep a model recognisably of its family: depth and width grow together as in
the paper's series; widths are multiples of the head size; U-Net channels are GroupNorm-compatible
and follow ADM / LDM channel multipliers.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from diffbench.core.errors import ConfigError, FamilyError

InputShape = tuple[int, int, int]  # (C, H, W)
CONDITIONINGS = ("class", "text", "none")


@dataclass(frozen=True)
class Conditioning:
    kind: str = "class"  # class | text | none
    num_classes: int = 1000
    context_dim: int = 768  # text: width of the text encoder's tokens
    context_tokens: int = 77

    def __post_init__(self) -> None:
        if self.kind not in CONDITIONINGS:
            raise ConfigError(f"conditioning must be one of {', '.join(CONDITIONINGS)}, got {self.kind!r}")


@dataclass(frozen=True)
class Structure:
    """All of a config but its width (and, for transformers, depth)."""

    key: tuple[Any, ...]
    make: Callable[[int, int], Any]  # (width, depth) -> config
    atypicality: Callable[[int, int], float]  # 0 for the paper's own proportions; breaks near-ties
    widths: tuple[int, ...]
    depths: Callable[[int], Sequence[int]]  # allowed depths for a width
    probe_widths: tuple[int, int, int]
    probe_depths: tuple[int, ...]  # two depths for transformers (affine), one for U-Nets (fixed)
    flops_through_origin: bool = False  # no width-independent FLOPs: two probes fix the quadratic
    tier: int = 0  # searched in order; a later tier is probed only if earlier ones miss (see ``match``)
    verify: str = ""  # a family's name: check its params are quadratic in width and affine in depth (a user's own)


def heads(width: int) -> int:
    for head_dim in (64, 32, 16):
        if width % head_dim == 0:
            return width // head_dim
    raise ValueError(f"width {width} is not a multiple of 16")


def transformer_widths() -> tuple[int, ...]:
    # multiples of the head size: 16 below 128, 32 below 512, 64 from 512 up
    return tuple(list(range(32, 128, 16)) + list(range(128, 512, 32)) + list(range(512, 2049, 64)))


TYPICAL_DEPTH_RATIO = 1.5  # depth / (width / 64): S 2.0, B 1.0, L 1.5, XL 1.56 (DiT); U-ViT 1.25-1.56


def depth_band(width: int, even: bool = False) -> list[int]:
    """Depth grows with width as in DiT's S/B/L/XL and U-ViT's S/M/L/H.

    depth / (width/64) stays within [0.5, 3] (the papers' series span 1 to 2), except that
    narrow models may go to 16 blocks, as tiny ViTs do.
    """
    k = width / 64
    ds = range(max(2, math.floor(0.5 * k)), max(16, math.ceil(3 * k)) + 1)
    return [d for d in ds if d % 2 == 0] if even else list(ds)


def transformer_atypicality(width: int, depth: int) -> float:
    return abs(math.log(depth / (width / 64) / TYPICAL_DEPTH_RATIO))


def patch_size(shape: InputShape, patch: int | None) -> int:
    p = patch or 2
    if shape[1] != shape[2]:
        raise ConfigError(f"input {shape[1]}x{shape[2]} is not square; the backbones here take square inputs")
    if shape[1] % p:
        raise ConfigError(f"input size {shape[1]} is not divisible by the patch size {p}; pick --patch that divides it")
    return p


# Widths: multiples of 4 below 32, of 8 below 64, of 16 below 256, of 32 above; GroupNorm groups
# and attention heads follow the width (32 groups where it divides, as in ADM and SD), so
# every level's channels fit.
UNET_WIDTHS = tuple(list(range(16, 32, 4)) + list(range(32, 64, 8)) + list(range(64, 256, 16))
                    + list(range(256, 1025, 32)))
UNET_PROBES = (32, 64, 96)
UNET_RES_BLOCKS = (1, 2, 3, 4)


def groups(width: int) -> int:
    """GroupNorm groups (and attention head width) for a U-Net level ``width`` channels wide: 32, as guided-diffusion
    and diffusers use, where that leaves at least 4 channels a group (every paper width, 128 and up); below, the
    most groups that divide the width and keep 4 channels each. (gcd(width, 32) alone gave a 32-wide U-Net one
    channel a group, an instance norm that erases each channel's mean: unet-adm@1.4M scored FID 366 on 8x8 digits
    where its 0.7M and 2.8M neighbours scored 143 and 29, and 64 with 8 groups.)"""
    g = math.gcd(width, 32)
    while g > 1 and width // g < 4:
        g //= 2
    return g


def unet_atypicality(mult_index: int, nres: int, attn_index: int) -> float:
    return 0.1 * abs(nres - 2) + 0.05 * mult_index + 0.05 * attn_index


def constant(value: float) -> Callable[[int, int], float]:
    return lambda w, d: value


UNET_TIER_0 = 0.15  # structures at most this atypical are searched first


def mults(table: dict[int, list[tuple[int, ...]]], size: int, family: str) -> list[tuple[int, ...]]:
    if size < 8 or size & (size - 1):
        raise ConfigError(f"no {family} shape rules for input size {size}; use a power-of-two size from 8 to 256")
    res = max((r for r in table if r <= size), default=min(table))
    fits = [m for m in table[res] if size % 2 ** (len(m) - 1) == 0 and size // 2 ** (len(m) - 1) >= 4]
    if not fits:
        raise ConfigError(f"input size {size} is too small for the {family} shape rules; use 8 or more")
    return fits


def attention_variants(levels: list[int], wanted: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The wanted attention sets that exist at these levels, deduplicated, never empty sets."""
    out: list[tuple[int, ...]] = []
    for w in wanted:
        eff = tuple(r for r in w if r in levels)
        if eff and eff not in out:
            out.append(eff)
    return out


GENERIC_WIDTH_MAX = 4096  # widths a family without rules of its own is searched over: multiples of its step up to this


def width_depth_rules(family: Any) -> Callable[..., list[Structure]]:
    """The shape rules of a family that gives none (a user's own): its default config, set to the input and the
    condition by the family's ``for_input`` and ``condition``, at every width (multiples of its step, up to 4096)
    and the depths of DiT's and U-ViT's series for that width (:func:`depth_band`; odd ones with ``odd_depth``).
    One structure, whose params and MACs sizing fits from probes; the fit is checked on first use
    (``Structure.verify``), since nothing promises a user's network is quadratic in width and affine in depth.
    Near-ties go to DiT's depth-to-width proportions."""

    def rules(shape: InputShape, cond: Any, patch: int | None = None) -> list[Structure]:
        if cond.kind not in family.conditions:
            raise FamilyError(f"family {family.name} takes {' or '.join(family.conditions)} conditioning, not "
                              f"{cond.kind}; size it with one of those (--cond, a sweep's cond)")
        try:
            base = family.for_input(family.config_cls(), shape, patch)
            if family.condition is not None:
                base = family.condition(base, cond.kind, cond.num_classes, cond.context_tokens, cond.context_dim)
        except ConfigError:
            raise
        except Exception as e:  # noqa: BLE001 - the family's own code: its fault, said in one line
            raise FamilyError(f"family {family.name}: its config for input {'x'.join(map(str, shape))} and "
                              f"{cond.kind} conditioning could not be made: {type(e).__name__}: "
                              f"{' '.join(str(e).split())[:200]}") from None

        def make(w: int, d: int) -> Any:
            return dataclasses.replace(base, **{family.width_field: w, family.depth_field: d})

        step = family.step(base)
        widths = tuple(w for w in range(step, GENERIC_WIDTH_MAX + 1, step) if w % family.step(make(w, 2)) == 0)
        if len(widths) < 4:
            raise FamilyError(f"family {family.name}: width step {step} leaves {len(widths)} widths up to "
                              f"{GENERIC_WIDTH_MAX}; sizing needs at least 4 (a smaller width_step)")

        def depths(w: int) -> list[int]:
            return [d for d in depth_band(w) if d % 2 or not family.odd_depth]

        return [Structure((family.name, "width-depth"), make, transformer_atypicality, widths, depths,
                          (widths[0], widths[1], widths[3]), (3, 5) if family.odd_depth else (2, 4),
                          verify=family.name)]

    return rules
