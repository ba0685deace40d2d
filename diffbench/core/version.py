"""diffbench's own version, from the installed distribution's metadata (no heavy import: ``--version`` reads it)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def diffbench_version() -> str:
    try:
        return version("diffbench")
    except PackageNotFoundError:
        return "0+unknown"
