"""Every registry a user can list, by kind: ``diffbench list [KIND]``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from diffbench.core.registry import Registry


@dataclass(frozen=True)
class Listing:
    kind: str
    description: str
    columns: tuple[str, ...]
    rows: Callable[[], list[dict[str, Any]]]
    note: str = ""


def _families() -> list[dict[str, Any]]:
    import importlib.metadata

    from diffbench.models.about import ABOUT, ENTRY_POINTS  # the families' words, without their networks (torch)

    rows = [{"name": n, "title": title, "description": text} for n, (title, text) in ABOUT.items()]
    return rows + [{"name": ep.name, "title": "(installed)", "description": f"from {ep.value}, imported when used"}
                   for ep in importlib.metadata.entry_points(group=ENTRY_POINTS)]


def _presets() -> list[dict[str, Any]]:
    from diffbench.models.presets import PRESETS

    rows = []
    for n, p in PRESETS.items():
        ref = p.reference
        rows.append({"name": n, "family": p.family, "params": ref.get("params", ref.get("paper_params")),
                     "gmacs": ref.get("gmacs", ref.get("paper_gflops")), "source": p.source})
    return rows


def _pipelines() -> list[dict[str, Any]]:
    from diffbench.models.pipelines import PIPELINES

    rows = []
    for n, p in PIPELINES.items():
        spec = p.spec("paper")
        stages = " -> ".join(s.name + (f" (x{len(s.backbones)} experts)" if len(s.backbones) > 1 else "")
                             for s in spec.stages)
        text = " + ".join(t.name or t.kind for t in spec.text_encoders) or ("class labels" if spec.num_classes
                                                                            else "-")
        rows.append({"name": n, "title": p.title, "condition": text, "stages": stages,
                     "autoencoder": "KL" if spec.autoencoder else "-", "prior": "yes" if spec.prior else "-",
                     "description": p.description})
    return rows


def _metrics() -> list[dict[str, Any]]:
    from diffbench.metrics.specs import METRICS

    return [m.as_dict() for m in METRICS.values()]


def _suites() -> list[dict[str, Any]]:
    """Name and description of each built-in suite, read from its TOML without validating it (validation builds
    the families, which imports torch; tests/test_suites.py validates every built-in suite)."""
    from pathlib import Path

    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    out = []
    for path in sorted((Path(__file__).resolve().parent / "suites").glob("*.toml")):  # bench.suites.BUILTIN_DIR
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        out.append({"name": str(data.get("name", path.stem)), "description": str(data.get("description", ""))})
    return out


def _detectors() -> list[dict[str, Any]]:
    from diffbench.metrics.detectors import DETECTORS

    return [{"name": n, "modes": ", ".join(d.modes), "outputs": ", ".join(d.outputs), "description": d.description}
            for n, d in DETECTORS.items()]


def _protocols() -> list[dict[str, Any]]:
    from diffbench.bench.protocols import BUILTIN

    return [{"name": p.name, "kind": p.kind, "samples": p.samples, "sampler": f"{p.scheduler or 'own'} "
             f"{p.sample_steps} steps, guidance {p.guidance}", "detector": f"{p.detector}/{p.mode}",
             "source": p.source} for p in BUILTIN.values()]


LISTINGS: Registry[Listing] = Registry("kind", "what 'diffbench list' can show")
LISTINGS.add("families", Listing("families", "backbone families that sizing can scale",
                                 ("name", "title", "description"), _families,
                                 note="a family of your own: name it as package.module:NAME, or install it under the "
                                      "entry point group diffbench.families (docs/family.md)"))
LISTINGS.add("presets", Listing(
    "presets", "paper configurations", ("name", "family", "params", "gmacs", "source"), _presets,
    note="params and GMACs are the official code's exact counts from docs/reference.md (the DiT ablation rows: the "
         "paper's rounded figures); tests check that 'diffbench count NAME' reproduces them"))
LISTINGS.add("pipelines", Listing(
    "pipelines", "the canon's systems, each at paper and tiny scale",
    ("name", "title", "condition", "stages", "autoencoder", "prior"), _pipelines,
    note="'diffbench count PIPELINE' counts every component on the meta device; --scale tiny for the CPU-sized "
         "version; --params N reshapes the denoisers to a common budget"))
LISTINGS.add("metrics", Listing("metrics", "quantities records carry: unit, kind (how runs compare), which way is "
                               "better, qualifier (name[...])", ("name", "unit", "kind", "better", "qualifier",
                                                                 "description"), _metrics))
LISTINGS.add("suites", Listing("suites", "built-in suites for 'diffbench run' (bench/suites/)",
                               ("name", "description"), _suites))
LISTINGS.add("detectors", Listing("detectors", "feature networks for FID and relatives",
                                  ("name", "modes", "outputs", "description"), _detectors))
LISTINGS.add("protocols", Listing(
    "protocols", "evaluation protocols for pretrained systems; a suite's [protocols.NAME] names its files",
    ("name", "kind", "samples", "sampler", "detector", "source"), _protocols,
    note="a suite table of the same name starts from these settings; reference (and captions) are the user's files"))
