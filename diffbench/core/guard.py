"""One importable package: the repository's folders (bench/, models/, metrics/, reports/, diffusion/) are
``diffbench.<folder>`` and refuse to load under any other name, so that ``import bench`` from the repository
root cannot load a second copy of the package with its own registries."""

from __future__ import annotations


def only_as_diffbench(name: str, folder: str) -> None:
    """Raise ImportError unless the folder's ``__init__`` runs as ``diffbench.<folder>``."""
    if name != f"diffbench.{folder}":
        raise ImportError(f"{folder}/ is the package diffbench.{folder}: import diffbench.{folder} (not {name}); "
                          "install diffbench with pip install -e . from the repository root")
