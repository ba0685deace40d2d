"""The Python API's arguments checked against their annotations: a list where a string belongs (``match(["dit"],
...)``) is a one-line ``ConfigError`` naming the argument, not a TypeError from deep inside.

Only plain annotations are checked, read from their text (``str``, ``Path``, ``int``, ``float``, ``bool``, ``None``,
their unions, and lists or tuples of ``str``, ``int`` or ``float``); anything else (``Any``, a module, a run) is the
function's own to check.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import PurePath
from typing import Any, TypeVar

from diffbench.core.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
SCALARS: dict[str, tuple[type, ...]] = {"str": (str,), "Path": (str, PurePath), "int": (int,), "float": (int, float),
                                        "bool": (bool,), "None": (type(None),)}
# "list[str]", "tuple[str, ...]", ... -> (outer, inner): annotation texts, spelled out
SEQUENCES = {outer.__name__ + "[" + inner + (", ..." if outer is tuple else "") + "]": (outer.__name__, inner)
             for outer in (list, tuple) for inner in ("str", "int", "float")}


def _accepts(annotation: str) -> Callable[[Any], bool] | None:
    """A check for a plain annotation's text, None for anything else."""
    parts = [p.strip() for p in annotation.split("|")]
    if not all(p in SCALARS or p in SEQUENCES for p in parts):
        return None

    def ok(value: Any) -> bool:
        for p in parts:
            if p in SCALARS:
                kinds = SCALARS[p]
                if isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds and p != "bool"):
                    return True
            elif isinstance(value, (list, tuple)):
                inner = SCALARS[SEQUENCES[p][1]]
                if all(isinstance(v, inner) and not isinstance(v, bool) for v in value):
                    return True
        return False

    return ok


def checked(fn: F) -> F:
    """``fn`` with its plainly annotated arguments checked on every call."""
    signature = inspect.signature(fn)
    checks = {n: (p.annotation, c) for n, p in signature.parameters.items()
              if isinstance(p.annotation, str) and (c := _accepts(p.annotation)) is not None}

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as e:
            raise ConfigError(f"diffbench.{fn.__name__}(): {e}") from None
        for name, value in bound.arguments.items():
            if name in checks and not checks[name][1](value):
                shown = repr(value)
                shown = shown if len(shown) <= 60 else shown[:57] + "..."
                raise ConfigError(f"diffbench.{fn.__name__}(): {name} must be {checks[name][0]}, got "
                                  f"{type(value).__name__} {shown}")
        return fn(*args, **kwargs)

    return call  # type: ignore[return-value]
