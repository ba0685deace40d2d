"""Quantities as written on the command line and in suites: '33M' params, '6G' GMACs, '4x32x32' input shapes, the
scaling modes. No torch here: the CLI parses these before any model is built."""

from __future__ import annotations

import math

from diffbench.core.errors import ConfigError
from diffbench.models.shapes import InputShape

SCALINGS = ("free", "width")
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
