"""One small registry type for every named concept (backbones, presets, pipelines, ...).

Each concept registers each thing in exactly one place; an unknown name raises a
``UnknownNameError`` that lists close matches and what is available.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from diffbench.core.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object mapping for one concept (``kind``), with did-you-mean lookups."""

    def __init__(self, kind: str, description: str = "") -> None:
        self.kind = kind
        self.description = description
        self._items: dict[str, T] = {}
        # a name no item is registered under: asked of this first (it may register one; None: unknown after all)
        self.fallback: Callable[[str], T | None] | None = None
        self.hint = ""  # added to the unknown-name message: what else a name may be

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def deco(item: T) -> T:
            return self.add(name, item)

        return deco

    def get(self, name: str) -> T:
        item = self._items.get(name)
        if item is None and self.fallback is not None:
            item = self.fallback(name)
        if item is None:
            raise UnknownNameError(self.unknown_message(name))
        return item

    def unknown_message(self, name: str) -> str:
        names = list(self._items)
        # Case-insensitive closeness, so "dit-xl/2" suggests "DiT-XL/2".
        lowered = {n.lower(): n for n in names}
        close = [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=3, cutoff=0.5)]
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(names[:40]) + (", ..." if len(names) > 40 else "")
        return f"unknown {self.kind} {name!r}{hint} (available: {shown or 'none'}){self.hint}"

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> Iterator[tuple[str, T]]:
        return iter(self._items.items())

    def values(self) -> Iterator[T]:
        return iter(self._items.values())

    def names(self) -> list[str]:
        return list(self._items)
