"""A package's names loaded on first use (PEP 562): importing one of its light modules does not import the heavy
ones (torch, through the models' API), and ``dir()`` still shows every name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def names(package: str, where: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable[[str], Any],
                                                                                  Callable[[], list[str]]]:
    """(``__getattr__``, ``__dir__``) for ``package``, whose name N lives in module ``package.where[N]``."""

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{where[name]}"), name)

    def dir_() -> list[str]:
        return sorted(set(namespace) | set(where))

    return getattr_, dir_
