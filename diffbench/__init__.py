"""diffbench: benchmark and evaluate diffusion backbones and pipelines at matched size.

The Python API (the CLI is a thin wrapper over it)::

    import diffbench
    diffbench.count("DiT-XL/2").params                  # 675,129,632
    diffbench.match("uvit", params="130M").config       # the U-ViT closest to 130M params
    run = diffbench.run("smoke", out="runs/smoke", resume=True)
    run.cases                                           # one row per case (pandas)
    diffbench.report(run)                               # tables, fits, plots from the records
    diffbench.fid("samples/", "ref.npz", detector="digits")
    diffbench.Family(name="mynet", ...)                 # a backbone family of your own (docs/family.md)

Subpackages: ``diffbench.core`` (errors, registry, records schema), ``diffbench.models``,
``diffbench.metrics``, ``diffbench.bench`` (suites, runner, cases, CLI), ``diffbench.reports``.
Importing ``diffbench`` is cheap: torch loads with the first function that needs it.
"""

from __future__ import annotations

from typing import Any

from diffbench.core.errors import UserError

__all__ = ["Family", "Run", "UserError", "ab", "baseline", "benchmark_module", "build", "cache_entries",
           "clear_cache", "clip_score", "compare", "count", "count_pipeline", "default_run_dir", "estimate", "fid",
           "latents", "listings", "load_run", "match", "match_many", "plan", "report", "run", "sample", "stats",
           "train", "__version__"]

_API = set(__all__) - {"UserError", "__version__", "Family"}


def __getattr__(name: str) -> Any:
    if name in _API:
        from diffbench import api

        return getattr(api, name)
    if name == "Family":  # the backbone family contract (docs/family.md)
        from diffbench.models.family import Family

        return Family
    if name == "__version__":
        from diffbench.core.version import diffbench_version

        return diffbench_version()
    raise AttributeError(f"module 'diffbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The API as well as what is loaded: tab completion and dir(diffbench) show every function."""
    return sorted(set(globals()) | set(__all__))
