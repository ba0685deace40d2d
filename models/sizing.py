"""Sizing: shape rules per family, and a search for the config closest to a target params or GMACs.

Each family's rules keep a model recognisably of its family (depth and width grow together
as in the paper's series; widths are multiples of the head size; U-Net channels are
GroupNorm-compatible and follow ADM / LDM channel multipliers). Within one *structure*
(everything except width and depth) params and MACs are exact polynomials: quadratic in
the width, and for transformers affine in the depth. So a few meta-device probe builds fix
the polynomial exactly, every candidate is then scored in microseconds, and the chosen
config is counted for real (``models.count``) before it is reported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from diffbench.core.errors import ConfigError
from diffbench.models.dit import DiTConfig
from diffbench.models.unet import ADMUNetConfig, LDMUNetConfig
from diffbench.models.uvit import UViTConfig
from diffbench.models.vit import ViTConfig

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


def _heads(width: int) -> int:
    for head_dim in (64, 32, 16):
        if width % head_dim == 0:
            return width // head_dim
    raise ValueError(f"width {width} is not a multiple of 16")


def _transformer_widths() -> tuple[int, ...]:
    # multiples of the head size: 16 below 128, 32 below 512, 64 from 512 up
    return tuple(list(range(32, 128, 16)) + list(range(128, 512, 32)) + list(range(512, 2049, 64)))


TYPICAL_DEPTH_RATIO = 1.5  # depth / (width / 64): S 2.0, B 1.0, L 1.5, XL 1.56 (DiT); U-ViT 1.25-1.56


def _depth_band(width: int, even: bool = False) -> list[int]:
    """Depth grows with width as in DiT's S/B/L/XL and U-ViT's S/M/L/H.

    depth / (width/64) stays within [0.5, 3] (the papers' series span 1 to 2), except that
    narrow models may go to 16 blocks, as tiny ViTs do.
    """
    k = width / 64
    ds = range(max(2, math.floor(0.5 * k)), max(16, math.ceil(3 * k)) + 1)
    return [d for d in ds if d % 2 == 0] if even else list(ds)


def _transformer_atypicality(width: int, depth: int) -> float:
    return abs(math.log(depth / (width / 64) / TYPICAL_DEPTH_RATIO))


def _patch(shape: InputShape, patch: int | None) -> int:
    p = patch or 2
    if shape[1] != shape[2]:
        raise ConfigError(f"input {shape[1]}x{shape[2]} is not square; the backbones here take square inputs")
    if shape[1] % p:
        raise ConfigError(f"input size {shape[1]} is not divisible by the patch size {p}; pick --patch that divides it")
    return p


def dit_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    if cond.kind == "text":
        raise ConfigError("the DiT family is class-conditional or unconditional; use --cond class or none")
    p = _patch(shape, patch)
    ncls = cond.num_classes if cond.kind == "class" else 0

    def make(w: int, d: int) -> DiTConfig:
        return DiTConfig(input_size=shape[1], patch_size=p, in_channels=shape[0], hidden_size=w, depth=d,
                         num_heads=_heads(w), num_classes=ncls)

    return [Structure(("dit", p), make, _transformer_atypicality, _transformer_widths(), _depth_band,
                      (64, 128, 192), (2, 4))]


def uvit_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    p = _patch(shape, patch)
    out = []
    for mlp_time in (False, True):  # the official code's mlp_time_embed switch (off in the paper's configs)
        def make(w: int, d: int, mlp_time: bool = mlp_time) -> UViTConfig:
            return UViTConfig(img_size=shape[1], patch_size=p, in_chans=shape[0], embed_dim=w, depth=d,
                              num_heads=_heads(w), mlp_time_embed=mlp_time,
                              num_classes=cond.num_classes + 1 if cond.kind == "class" else -1,
                              clip_dim=cond.context_dim if cond.kind == "text" else 0,
                              num_clip_token=cond.context_tokens)

        def atyp(w: int, d: int, mlp_time: bool = mlp_time) -> float:
            return _transformer_atypicality(w, d) + (0.2 if mlp_time else 0.0)

        out.append(Structure(("uvit", p, mlp_time), make, atyp, _transformer_widths(),
                             functools.partial(_depth_band, even=True), (64, 128, 192), (2, 4)))
    return out


def vit_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    if cond.kind == "text":
        raise ConfigError("the ViT family takes class or no conditioning; use --cond class or none")
    p = _patch(shape, patch)

    def make(w: int, d: int) -> ViTConfig:
        return ViTConfig(input_size=shape[1], patch_size=p, in_channels=shape[0], hidden_size=w, depth=d,
                         num_heads=_heads(w), num_classes=cond.num_classes if cond.kind == "class" else 0)

    return [Structure(("vit", p), make, _transformer_atypicality, _transformer_widths(), _depth_band,
                      (64, 128, 192), (2, 4))]


# Channel multipliers by resolution: guided-diffusion's script_util table first, then nearby
# variants of the same shape that fill the gaps between widths.
ADM_MULTS: dict[int, list[tuple[int, ...]]] = {
    32: [(1, 2, 2, 2), (1, 2, 2, 4), (1, 2, 3), (1, 1, 2, 2), (1, 2)],
    64: [(1, 2, 3, 4), (1, 2, 2, 4), (1, 2, 2), (1, 2)],
    128: [(1, 1, 2, 3, 4), (1, 1, 2, 2, 4), (1, 2, 2)],
    256: [(1, 1, 2, 2, 4, 4), (1, 1, 2, 2, 4)],
}
LDM_MULTS: dict[int, list[tuple[int, ...]]] = {
    32: [(1, 2, 4), (1, 2, 2), (1, 2, 2, 2), (1, 2, 4, 4), (1, 2)],
    64: [(1, 2, 4, 4), (1, 2, 3, 5), (1, 2, 4), (1, 2)],
    128: [(1, 2, 4), (1, 2, 4, 4)],
}
# Widths: multiples of 4 below 32, of 8 below 64, of 16 below 256, of 32 above; GroupNorm groups
# and attention heads follow the width (32 groups where it divides, as in ADM and SD), so
# every level's channels fit.
UNET_WIDTHS = tuple(list(range(16, 32, 4)) + list(range(32, 64, 8)) + list(range(64, 256, 16))
                    + list(range(256, 1025, 32)))
UNET_PROBES = (32, 64, 96)
UNET_RES_BLOCKS = (1, 2, 3, 4)


def _groups(width: int) -> int:
    return math.gcd(width, 32)


def _unet_atypicality(mult_index: int, nres: int, attn_index: int) -> float:
    return 0.1 * abs(nres - 2) + 0.05 * mult_index + 0.05 * attn_index


def _constant(value: float) -> Callable[[int, int], float]:
    return lambda w, d: value


UNET_TIER_0 = 0.15  # structures at most this atypical are searched first


def _mults(table: dict[int, list[tuple[int, ...]]], size: int, family: str) -> list[tuple[int, ...]]:
    if size < 8 or size & (size - 1):
        raise ConfigError(f"no {family} shape rules for input size {size}; use a power-of-two size from 8 to 256")
    res = max((r for r in table if r <= size), default=min(table))
    fits = [m for m in table[res] if size % 2 ** (len(m) - 1) == 0 and size // 2 ** (len(m) - 1) >= 4]
    if not fits:
        raise ConfigError(f"input size {size} is too small for the {family} shape rules; use 8 or more")
    return fits


def _attention_variants(levels: list[int], wanted: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
    """The wanted attention sets that exist at these levels, deduplicated, never empty sets."""
    out: list[tuple[int, ...]] = []
    for w in wanted:
        eff = tuple(r for r in w if r in levels)
        if eff and eff not in out:
            out.append(eff)
    return out


def adm_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    if cond.kind == "text":
        raise ConfigError("ADM U-Nets here are class-conditional or unconditional; use unet-ldm for text")
    size = shape[1]
    # DDPM CIFAR-10 attends at 16; ADM at 32, 16, 8; fewer attention levels fill the gaps
    wanted = [(16, 8), (16,), (8,)] if size <= 32 else [(32, 16, 8), (16, 8), (32, 16)]
    out: list[Structure] = []
    for i, mult in enumerate(_mults(ADM_MULTS, size, "unet-adm")):
        levels = [size // 2**j for j in range(len(mult))]
        for a, attn in enumerate(_attention_variants(levels, wanted)):
            for nres in UNET_RES_BLOCKS:
                def make(w: int, d: int, mult: tuple[int, ...] = mult, nres: int = nres,
                         attn: tuple[int, ...] = attn) -> ADMUNetConfig:
                    return ADMUNetConfig(image_size=size, in_channels=shape[0], model_channels=w, channel_mult=mult,
                                         num_res_blocks=nres, attention_resolutions=attn,
                                         num_head_channels=_groups(w), norm_num_groups=_groups(w),
                                         num_classes=cond.num_classes if cond.kind == "class" else 0)

                atyp = _unet_atypicality(i, nres, a)
                out.append(Structure(("unet-adm", mult, nres, attn), make, _constant(atyp),
                                     UNET_WIDTHS, lambda w: (0,), UNET_PROBES, (0,), flops_through_origin=True,
                                     tier=int(atyp > UNET_TIER_0)))
    return out


def ldm_structures(shape: InputShape, cond: Conditioning, patch: int | None = None) -> list[Structure]:
    size = shape[1]
    text = cond.kind == "text"
    out: list[Structure] = []
    for i, mult in enumerate(_mults(LDM_MULTS, size, "unet-ldm")):
        levels = [size // 2**j for j in range(len(mult))]
        # SD 1/2: transformers on the first 3 levels; SDXL: none on the first
        wanted = [tuple(levels[:3]), tuple(levels[1:3])]
        for a, attn in enumerate(_attention_variants(levels, wanted)):
            for nres in UNET_RES_BLOCKS:
                def make(w: int, d: int, mult: tuple[int, ...] = mult, nres: int = nres,
                         attn: tuple[int, ...] = attn) -> LDMUNetConfig:
                    # class conditioning as in LDM-4: a 512-d class embedding is the 1-token context
                    # (its table is counted apart, like a text encoder)
                    return LDMUNetConfig(image_size=size, in_channels=shape[0], out_channels=shape[0],
                                         model_channels=w, channel_mult=mult, num_res_blocks=nres,
                                         attention_resolutions=attn, num_heads=math.gcd(w, 8),
                                         context_dim=cond.context_dim if text else 512,
                                         context_tokens=cond.context_tokens if text else 1,
                                         norm_num_groups=_groups(w))

                atyp = _unet_atypicality(i, nres, a)
                out.append(Structure(("unet-ldm", mult, nres, attn), make, _constant(atyp),
                                     UNET_WIDTHS, lambda w: (0,), UNET_PROBES, (0,), flops_through_origin=True,
                                     tier=int(atyp > UNET_TIER_0)))
    return out


RULES: dict[str, Callable[..., list[Structure]]] = {
    "dit": dit_structures, "uvit": uvit_structures, "vit": vit_structures,
    "unet-adm": adm_structures, "unet-ldm": ldm_structures,
}


# --- exact count polynomials ------------------------------------------------------------------------

@functools.lru_cache(maxsize=4096)
def probe(config: Any, with_flops: bool, small: bool = False) -> tuple[int, int]:
    """(params, flops) of a config, counted on meta; flops 0 when not asked for. ``small``: a probe at the
    sizing rules' probe widths, whose params are counted on an uninitialised CPU build (faster)."""
    import torch

    from diffbench.metrics.counting import count_params

    if with_flops:
        from diffbench.models.api import count

        c = count(config)
        return c.params, c.flops
    nres = getattr(config, "num_res_blocks", None)
    if small and isinstance(config, (ADMUNetConfig, LDMUNetConfig)) and isinstance(nres, int) and nres > 2:
        # A U-Net's params are affine in num_res_blocks (each extra block adds the same resnet, and attention
        # where the level attends, to every level's down and up path): two builds give every other depth.
        # tests/test_sizing.py checks this against real builds.
        one, two = (probe(dataclasses.replace(config, num_res_blocks=n), False, True)[0] for n in (1, 2))
        return one + (nres - 1) * (two - one), 0
    with _no_init() if small else torch.device("meta"):
        model = config.build()
    return count_params(model).total, 0


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Build on the CPU with every ``torch.nn.init`` function a no-op: a probe's widths are small, so its
    (uninitialised) tensors cost little, and this is ~10x faster than building under ``torch.device("meta")``,
    whose mode intercepts every call of a diffusers U-Net's construction. Parameter counts are the same."""
    import torch

    names = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


def _quadratic(points: Sequence[tuple[int, int]]) -> tuple[Fraction, Fraction, Fraction]:
    """Exact coefficients (c0, c1, c2) of the quadratic through three (x, y) points (Lagrange)."""
    (x0, y0), (x1, y1), (x2, y2) = points
    d0 = Fraction(y0, (x0 - x1) * (x0 - x2))
    d1 = Fraction(y1, (x1 - x0) * (x1 - x2))
    d2 = Fraction(y2, (x2 - x0) * (x2 - x1))
    c2 = d0 + d1 + d2
    c1 = -(d0 * (x1 + x2) + d1 * (x0 + x2) + d2 * (x0 + x1))
    c0 = d0 * x1 * x2 + d1 * x0 * x2 + d2 * x0 * x1
    return c0, c1, c2


@dataclass(frozen=True)
class CountModel:
    """params or flops = q_a(w) + (d - d_a) * (q_b(w) - q_a(w)) / (d_b - d_a), exact for one structure."""

    depth_a: int
    depth_b: int | None
    q_a: tuple[Fraction, Fraction, Fraction]
    q_b: tuple[Fraction, Fraction, Fraction] | None

    def __call__(self, w: int, d: int) -> float:
        def q(c: tuple[Fraction, Fraction, Fraction]) -> float:
            return float(c[0] + c[1] * w + c[2] * w * w)

        a = q(self.q_a)
        if self.q_b is None or self.depth_b is None:
            return a
        return a + (d - self.depth_a) * (q(self.q_b) - a) / (self.depth_b - self.depth_a)


def fit_counts(s: Structure, by: str) -> CountModel:
    idx = 0 if by == "params" else 1
    qs = []
    for d in s.probe_depths:
        if by != "params" and s.flops_through_origin:  # U-Net FLOPs: every term scales with the width
            pts = [(0, 0)] + [(w, probe(s.make(w, d), True)[idx]) for w in s.probe_widths[:2]]
        else:
            pts = [(w, probe(s.make(w, d), by != "params", small=True)[idx]) for w in s.probe_widths]
        qs.append(_quadratic(pts))
    if len(qs) == 1:
        return CountModel(s.probe_depths[0], None, qs[0], None)
    return CountModel(s.probe_depths[0], s.probe_depths[1], qs[0], qs[1])


# --- search ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MatchResult:
    family: str
    by: str  # "params" or "gmacs"
    target: float
    input_shape: InputShape
    config: Any
    params: int
    params_trainable: int
    gmacs: float
    rel_error: float  # (achieved - target) / target in the ``by`` quantity

    def as_dict(self) -> dict[str, Any]:
        from diffbench.models.api import config_dict

        target = int(self.target) if self.by == "params" and self.target.is_integer() else self.target
        return {"family": self.family, "by": self.by, "target": target,
                "input": "x".join(map(str, self.input_shape)), "params": self.params,
                "params_trainable": self.params_trainable, "gmacs": self.gmacs, "rel_error": self.rel_error,
                "config": config_dict(self.config)}


PREFERENCE_SLACK = 0.008


def match(family: str, params: float | None = None, gmacs: float | None = None,
          input_shape: Sequence[int] = (4, 32, 32), cond: Conditioning | None = None,
          patch: int | None = None, tolerance: float = 0.02) -> MatchResult:
    """The config of ``family`` closest to a target parameter count or GMACs for ``input_shape``.

    Raises ``ConfigError`` when no config of the family's rules lands within ``tolerance``.
    """
    from diffbench.models.api import count
    from diffbench.models.families import FAMILIES

    FAMILIES.get(family)  # did-you-mean for unknown families
    if (params is None) == (gmacs is None):
        raise ConfigError("give exactly one target: params or gmacs")
    by, target = ("params", float(params)) if params is not None else ("gmacs", float(gmacs))  # type: ignore[arg-type]
    if not target > 0:
        raise ConfigError(f"the target {by} must be positive, got {target:g}")
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input shape must be CxHxW with positive sizes, got {input_shape}")
    if family not in RULES:
        raise ConfigError(f"the {family} family has no sizing rules of its own; size the pipelines that use it "
                          f"with 'diffbench count PIPELINE --params N' (families with rules: {', '.join(RULES)})")
    structures = RULES[family](shape, cond or Conditioning(), patch)
    scale = 1.0 if by == "params" else 2e9  # gmacs target -> flops
    scored: list[tuple[float, float, Structure, int, int]] = []  # (error, atypicality, structure, w, d)
    lo, hi = math.inf, 0.0
    # Tiers: a later tier's structures are all more atypical than an earlier tier's, so when an
    # earlier tier already has a candidate within the preference slack, the full search would pick
    # from it too; probing the later tiers (the costly part) is skipped.
    for tier in sorted({s.tier for s in structures}):
        for s in (s for s in structures if s.tier == tier):
            model = fit_counts(s, by)
            for w in s.widths:
                for d in s.depths(w):
                    est = model(w, d) / scale
                    lo, hi = min(lo, est), max(hi, est)
                    scored.append((abs(est / target - 1), s.atypicality(w, d), s, w, d))
        if min(c[0] for c in scored) <= PREFERENCE_SLACK:
            break
    best_err = min(c[0] for c in scored)
    # Near-ties (within 0.8%) go to the shape closest to the paper's own proportions.
    pool = [c for c in scored if c[0] <= max(best_err, PREFERENCE_SLACK)]
    _, _, s, w, d = min(pool, key=lambda c: (c[1], c[0]))
    config = s.make(w, d)
    exact = count(config)
    achieved = exact.params if by == "params" else exact.gmacs
    rel = achieved / target - 1
    if abs(rel) > tolerance:
        unit = "params" if by == "params" else "GMACs"
        raise ConfigError(
            f"no {family} config within {tolerance:.0%} of {format_quantity(target)} {unit} for input "
            f"{'x'.join(map(str, shape))}: the closest has {format_quantity(achieved)} ({rel:+.1%}); "
            f"the family's shape rules reach {format_quantity(lo)} to {format_quantity(hi)} {unit}")
    return MatchResult(family, by, target, shape, config, exact.params, exact.params_trainable, exact.gmacs, rel)


_SUFFIX = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "B": 1e9, "T": 1e12}


def parse_quantity(text: str, what: str = "value") -> float:
    """'33M' -> 33e6, '1.5B' -> 1.5e9, '6G' -> 6e9, '675000000' -> 6.75e8."""
    s = text.strip().upper()
    num, suffix = (s[:-1], s[-1]) if s and s[-1] in _SUFFIX and s[-1] != "" else (s, "")
    try:
        value = float(num) * _SUFFIX[suffix]
    except ValueError:
        raise ConfigError(f"{what} {text!r} is not a number with an optional K, M, G, B or T suffix "
                          "(e.g. 33M, 1.5B)") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{what} {text!r} must be a positive number")
    return value


def parse_target(text: str, by: str, what: str = "target") -> float:
    """A params target ('33M' -> 33e6) or a GMACs target ('6G' and a bare '6' both mean 6 GMACs)."""
    value = parse_quantity(text, what)
    return value / 1e9 if by == "gmacs" and value >= 1e6 else value


def format_quantity(v: float) -> str:
    for suffix, f in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(v) >= f:
            return f"{v / f:.4g}{suffix}"
    return f"{v:.4g}"


def parse_input_shape(text: str) -> InputShape:
    """'4x32x32' -> (4, 32, 32)."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ConfigError(f"input shape {text!r} is not CxHxW with positive integers (e.g. 4x32x32)")
    return shape  # type: ignore[return-value]
