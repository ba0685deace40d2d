"""diffbench's Python API: what the CLI does, as functions for notebooks and other tools.

Every ``diffbench`` command is a thin wrapper over one of these; bad input raises
:class:`diffbench.UserError` (the CLI prints it as one line and exits 2).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from diffbench.api_ab import ab  # noqa: F401 - diffbench.ab too
from diffbench.api_data import cache_entries, clear_cache, estimate, latents  # noqa: F401 - diffbench.* too
from diffbench.bench.settings import DEFAULTS, MODULE_MEASURES, SampleJob, TrainJob
from diffbench.core.arguments import checked

if TYPE_CHECKING:
    import pandas as pd
    from torch import nn

    from diffbench.models.api import ModelCounts
    from diffbench.models.sizing import MatchResult


@dataclass
class Run:
    """A run directory as data: its records (one row per record), one row per case, provenance, statuses."""

    run_dir: Path
    records: pd.DataFrame  # long: one row per record (metric, value, unit, status, error, identity columns)
    cases: pd.DataFrame  # wide: one row per case, a column per metric
    provenance: dict[str, Any] = field(default_factory=dict)  # of the last record written
    device: dict[str, Any] = field(default_factory=dict)  # device.json
    problems: list[str] = field(default_factory=list)  # unreadable lines, set aside
    this_call: dict[str, Any] | None = None  # from run(): cases in the suite, already complete, statuses of this call

    @property
    def statuses(self) -> dict[str, int]:
        """case status -> number of cases (``ok``, ``error``, ``oom``, ``timeout``, ...)."""
        return dict(Counter(self.cases["status"]))

    def __repr__(self) -> str:
        parts = ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items()))
        return f"Run({str(self.run_dir)!r}: {len(self.cases)} case(s), {len(self.records)} record(s); {parts})"


def load_run(run_dir: str | Path) -> Run:
    """Read a run directory written by :func:`run` (partial runs too)."""
    from diffbench.reports.load import load_run as _load

    data = _load(run_dir)
    return Run(data.run_dir, data.long, data.wide, data.provenance, data.device, data.problems)


def plan(suite: str | Path, device: str = "auto", only: str | None = None,
         overrides: dict[str, Any] | None = None) -> list[Any]:
    """The cases (``name``, ``case_id``, typed ``spec``) a suite expands to on ``device``, nothing run; ``only``: globs
    over case names; ``overrides``: settings over the suite's (``{"sweeps.dit.train_steps": 100}``)."""
    from diffbench.bench import suites

    return _cases(suites.load(str(suite), overrides), device, only, strict=False)


def _cases(suite: Any, device: str, only: str | None, strict: bool = True, here: bool = True) -> list[Any]:
    """The suite's cases on ``device``, checked on this machine (``here``), else a launcher's jobs' device type."""
    from diffbench.bench.expansion import expand
    from diffbench.bench.runner import select
    from diffbench.metrics.device import resolve_device

    return select(expand(suite, resolve_device(device) if here else device, strict), only)


def default_run_dir(suite: str | Path) -> Path:
    """``runs/NAME-TIMESTAMP``, NAME the suite's own name (a file's ``name =``, else its stem)."""
    from diffbench.bench import suites

    return Path(f"runs/{suites.load(str(suite)).name}-{dt.datetime.now():%Y%m%d-%H%M%S}")


def run(suite: str | Path, out: str | Path | None = None, device: str = "auto", resume: bool = False,
        only: str | None = None, timeout: float | None = None, progress: bool = False,
        keep_failed: bool = False, devices: str | None = None, launcher: str = "local",
        launcher_options: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> Run:
    """Run a suite (a built-in name or a TOML file), each case in its own process; return its records.

    ``out`` defaults to ``runs/SUITE-TIMESTAMP``; ``resume`` keeps complete cases of ``out``;
    ``only`` is a comma-separated list of globs over case names; ``timeout`` is seconds per case.
    A resumed run retries the cases that failed (timeout, error, crash, out of memory, cancelled)
    unless ``keep_failed``. ``devices`` (``"0,1,2,3"`` or ``"cpu,cpu"``) runs one case per device
    concurrently and sets the device. ``launcher`` is ``local`` (this machine), ``submitit`` (a Slurm
    job array, or submitit's local executor where there is no Slurm) or ``ray`` (one task per case);
    ``launcher_options`` are that launcher's (see :mod:`diffbench.bench.launchers`); ``overrides`` as in :func:`plan`.
    """
    from diffbench.bench import suites
    from diffbench.bench.placement import device_of, parse_devices
    from diffbench.bench.runner import Runner
    from diffbench.core.errors import ConfigError

    slots = parse_devices(devices) if devices is not None else None
    if slots is not None:
        chosen = device_of(slots)
        if device != "auto" and device.split(":")[0] != chosen.split(":")[0]:
            raise ConfigError(f"--device {device} and --devices {devices} disagree; --devices alone sets the device")
        device = chosen
    if timeout is not None and not (isinstance(timeout, (int, float)) and 0 < timeout <= 1e7):  # 1e7 s: 115 days
        raise ConfigError(f"timeout must be a positive number of seconds (at most 1e7), got {timeout!r}")
    if resume and out is None:
        raise ConfigError("resume needs out, the run directory to continue")
    s = suites.load(str(suite), overrides)
    if launcher != "local" and device == "auto":  # the jobs' device type, from what they ask of the cluster
        device = "cuda" if (launcher_options or {}).get("gpus_per_case") else "cpu"
    cases = _cases(s, device, only, here=launcher == "local")
    run_dir = Path(out) if out is not None else default_run_dir(suite)
    if launcher == "local":
        summary = Runner(s, cases, run_dir, timeout_s=timeout, progress=progress, devices=slots).run(resume,
                                                                                                   keep_failed)
    else:
        from diffbench.bench.launchers import launch

        if slots is not None:
            raise ConfigError(f"--devices is for the local launcher; with --launcher {launcher} each case gets "
                              "its devices from the cluster (--gpus-per-case)")
        summary = launch(launcher, s, cases, run_dir, timeout, progress, resume, keep_failed,
                         dict(launcher_options or {}))
    result = load_run(run_dir)
    result.this_call = {"total": summary.total, "skipped": summary.skipped, "statuses": dict(summary.statuses)}
    return result


def benchmark_module(model: nn.Module, inputs: Any = None, name: str | None = None, out: str | Path | None = None,
                     batch_sizes: tuple[int, ...] = DEFAULTS.measurement.batch_sizes,
                     precision: str = DEFAULTS.measurement.precisions[0], device: str = "auto",
                     warmup: int = DEFAULTS.measurement.warmup, repeats: int = DEFAULTS.measurement.repeats,
                     min_time_s: float = DEFAULTS.measurement.min_time_s,
                     measure: tuple[str, ...] = MODULE_MEASURES) -> Run:
    """Benchmark your own ``nn.Module`` (the protocol: ``diffbench.bench.module_subject``): called as
    ``model(**inputs(batch_size, device, dtype))``, or with the module's ``diffbench_inputs`` method. One case
    per batch size, recorded in ``out`` (default ``runs/module-NAME-TIMESTAMP``) like a suite's cases, so
    ``report``, ``compare`` and ``load_run`` read it. Runs in this process (no isolation, no timeout).

    This is for a one-off module, timed as it is. A backbone that should be sized to a target (``match``), trained,
    sampled and scored beside DiT in a suite needs a family: a ``diffbench.Family`` named by its module path
    (``families = ["my_pkg.nets:MYNET"]``), see docs/family.md."""
    from diffbench.bench import module_subject

    return load_run(module_subject.benchmark(model, inputs, name, out, batch_sizes, precision, device, warmup,
                                             repeats, min_time_s, measure))


def report(run: Run | str | Path, out: str | Path | None = None,
           formats: tuple[str, ...] = ("md", "html", "csv", "tex"), metric: str = "") -> list[Path]:
    """Write the tables, fits, plots and report of a run (from its records alone); return the files. ``metric``
    (``fid``, ``kid``, ``fid[digits]``) heads the report over the suite's ``[report] metric``."""
    from diffbench.core.errors import ConfigError
    from diffbench.metrics.specs import HEADLINE, is_headline
    from diffbench.reports.report import FORMATS, build

    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"formats {formats!r}: expected a non-empty subset of {', '.join(FORMATS)}")
    if metric and not is_headline(metric):
        raise ConfigError(f"metric {metric!r}: expected {HEADLINE}")
    run_dir = run.run_dir if isinstance(run, Run) else Path(run)
    return build(run_dir, Path(out) if out is not None else run_dir / "report", tuple(formats), metric)


def fid(a: Any, b: Any, detector: str = "inception-v3", mode: str | None = None, weights: str | None = None,
        allow_unverified_weights: bool = False, kid: bool = False, isc: bool = False, sfid: bool = False,
        prc: bool = False, seed: int = 0, batch_size: int = 64, device: str = "cpu",
        progress: bool = False) -> dict[str, Any]:
    """FID between ``a`` and ``b`` (image folders, ``.npz`` batches, statistics files, or uint8 NCHW tensors);
    with ``kid``/``isc``/``sfid``/``prc`` also KID, IS, sFID and precision/recall. The result names the
    detector, its weights' sha256 and whether they are the published ones (``verified``)."""
    from diffbench.core.errors import BadInputError
    from diffbench.metrics.detectors import build_detector, describe
    from diffbench.metrics.device import resolve_device
    from diffbench.metrics.quality import compare, compare_stats_files, extract, load_side
    from diffbench.metrics.stats import is_stats_file

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BadInputError(f"batch size must be a positive integer, got {batch_size!r}")
    for side in (a, b):
        if isinstance(side, (str, Path)) and not Path(side).exists():
            raise BadInputError(f"{side}: no such file or folder")
    if all(isinstance(side, (str, Path)) and is_stats_file(Path(side)) for side in (a, b)):
        return compare_stats_files(Path(a), Path(b), kid, isc, sfid, prc)  # no image read: no detector needed
    device = resolve_device(device)
    det = build_detector(detector, mode, weights, allow_unverified_weights, device)
    keep = kid or prc

    def load(side: Any) -> Any:
        if isinstance(side, (str, Path)):
            return load_side(side, det, keep, batch_size, progress)
        return extract(side, det, keep, batch_size, progress=progress)

    def reference(side: Any) -> Any:  # B, the reference: its features from the cache (metrics/refcache.py)
        from diffbench.metrics.refcache import cached_extract

        if isinstance(side, (str, Path)) and is_stats_file(Path(side)):
            return load(side)
        return cached_extract(side, det, keep, batch_size, progress=progress).side

    return {**compare(load(a), reference(b), kid, isc, sfid, prc, seed), **describe(det)}


def count(spec: Any, **overrides: Any) -> ModelCounts:
    """Params (all, trainable, per module) and GMACs of one evaluation at batch 1 of a preset name
    (``"DiT-XL/2"``), a family name with overrides (``count("dit", depth=12)``) or a config; on ``meta``."""
    from diffbench.models.api import count as _count

    return _count(spec, **overrides)


def count_pipeline(name: str, scale: str = "paper", params: str | float | None = None) -> list[dict[str, Any]]:
    """One row per component of a pipeline preset (``"ldm"``, ``"imagen"``, ...), optionally with its
    denoisers reshaped to ``params`` in total; papers' reported counts beside the measured ones."""
    from diffbench.models.pipelines.counting import component_rows

    return component_rows(name, scale, params)


def match(family: str, params: float | str | None = None, gmacs: float | str | None = None,
          input_shape: str | tuple[int, int, int] = "4x32x32", cond: str = "class", num_classes: int = 1000,
          patch: int | None = None, tolerance: float = 0.02, scaling: str = "free") -> MatchResult:
    """The config of ``family`` closest to a parameter count or GMACs target (``"130M"``, ``6e9``...); ``scaling``
    ``"width"`` searches only the structure :func:`match_many` keeps for a width series (as the CLI's --scaling)."""
    from diffbench.models.quantities import parse_input_shape, parse_target
    from diffbench.models.sizing import Conditioning
    from diffbench.models.sizing import match as _match

    by = "params" if params is not None else "gmacs"
    raw = params if params is not None else gmacs
    if raw is None or (params is not None and gmacs is not None):
        from diffbench.core.errors import ConfigError

        raise ConfigError("give exactly one of params= or gmacs=")
    target = parse_target(raw, by, by) if isinstance(raw, str) else float(raw)
    shape = parse_input_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    if scaling != "free":
        [one] = match_many([family], [target], by, input_shape, cond, num_classes, patch, tolerance, scaling)
        return one
    return _match(family, input_shape=shape, cond=Conditioning(kind=cond, num_classes=num_classes), patch=patch,
                  tolerance=tolerance, **{by: target})


def match_many(families: list[str], targets: list[float], by: str = "params",
               input_shape: str | tuple[int, int, int] = "4x32x32", cond: str = "class", num_classes: int = 1000,
               patch: int | None = None, tolerance: float = 0.02, scaling: str = "free") -> list[MatchResult]:
    """:func:`match` for every family x target (in that order), the families searched in parallel; ``scaling``
    ``"width"``: each family's targets share one structure and depth and differ in width alone."""
    from diffbench.core.errors import ConfigError
    from diffbench.models.quantities import SCALINGS, parse_input_shape
    from diffbench.models.sizing import Conditioning
    from diffbench.models.sizing import match_many as _many

    if by not in ("params", "gmacs"):
        raise ConfigError(f"by must be params or gmacs, got {by!r}")
    if scaling not in SCALINGS:
        raise ConfigError(f"scaling must be one of {', '.join(SCALINGS)}, got {scaling!r}")
    shape = parse_input_shape(input_shape) if isinstance(input_shape, str) else tuple(input_shape)
    c = Conditioning(kind=cond, num_classes=num_classes)
    return _many([(f, {"input_shape": shape, "cond": c, "patch": patch, "tolerance": tolerance, by: float(t)})
                  for f in families for t in targets], series=scaling == "width")


def compare(base: str | Path, new: str | Path, policy: str | Path | None = None, allow_change: tuple[str, ...] = (),
            allow_env_change: bool = False) -> Any:
    """Compare two runs of a suite (run directories, records files or baselines): a ``Comparison`` whose
    ``verdicts`` say per case and metric what moved, and ``failed`` whether anything regressed. Runs from
    different devices, drivers, torch/CUDA versions or dirty trees are refused unless ``allow_env_change``."""
    import dataclasses

    from diffbench.core.errors import ConfigError
    from diffbench.reports import compare as cmp
    from diffbench.reports import policy as pol
    from diffbench.reports.baseline import load_side

    rules = pol.load(policy)
    rules = dataclasses.replace(rules, allow_change=rules.allow_change + tuple(allow_change))
    a, b = load_side(base), load_side(new)
    cmp.shared_cases(a, b)
    diffs = cmp.env_differences(a, b)
    if diffs and not allow_env_change:
        what = "; ".join(f"{k}: {x!r} vs {y!r}" for k, (x, y) in diffs.items())
        raise ConfigError(f"the runs differ in their environment ({what}); compare like with like, or pass "
                          "--allow-env-change")
    return cmp.compare(a, b, rules)


def baseline(run: str | Path, out: str | Path, allow_failed: bool = False) -> Path:
    """Write a run's records as a compact baseline file to commit or keep as a CI artifact; a run with a case that
    did not finish ok is refused unless ``allow_failed``."""
    from diffbench.reports.baseline import write_baseline

    return write_baseline(run, out, allow_failed)


def build(spec: Any, device: str | None = None, **overrides: Any) -> nn.Module:
    """A randomly initialised backbone (preset name, family name with overrides, or config)."""
    from diffbench.models.api import build as _build

    return _build(spec, device, **overrides)


def train(pipeline: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """Train a pipeline part by part to a fixed budget (``steps`` or ``train_flops`` per part; the options are
    :class:`diffbench.bench.settings.TrainJob`'s fields), resuming from its checkpoints in ``out``; writes
    ``pipeline.safetensors`` and ``train.json``. Returns the parts' steps, losses and times."""
    from diffbench.bench import pipeline_jobs

    return pipeline_jobs.train(TrainJob(pipeline, str(out), **options))


def sample(pipeline: str, out: str | Path, **options: Any) -> dict[str, Any]:
    """Sample a pipeline preset or a diffusers pipeline directory into PNGs or one ``.npz`` in ``out`` (image k seeded
    by (seed, k); the options are :class:`diffbench.bench.settings.SampleJob`'s fields). Returns the time per
    image of each component."""
    from diffbench.bench import pipeline_jobs

    return pipeline_jobs.sample(SampleJob(pipeline, str(out), **options))


def stats(source: str | Path, out: str | Path, detector: str = "inception-v3", mode: str | None = None,
          weights: str | None = None, allow_unverified_weights: bool = False, batch_size: int = 64,
          device: str = "cpu", progress: bool = False) -> dict[str, Any]:
    """A detector's feature statistics of images (a folder or an ``.npz`` batch) saved to ``out`` (.npz), through the
    reference cache (which it fills); under torchrun every rank extracts its share and rank 0 writes."""
    from diffbench.core.distributed import current
    from diffbench.core.errors import BadInputError
    from diffbench.core.files import output_file
    from diffbench.metrics.detectors import build_detector, describe
    from diffbench.metrics.device import resolve_device
    from diffbench.metrics.refcache import cached_extract

    if not Path(source).exists():
        raise BadInputError(f"{source}: no such file or folder")
    path = output_file(out, ".npz", "-o")  # np.savez would add .npz to any other name
    det = build_detector(detector, mode, weights, allow_unverified_weights, resolve_device(device))
    side = cached_extract(source, det, keep_features=False, batch_size=batch_size, progress=progress).side
    meta = {k: str(v) for k, v in describe(det).items()}
    if current().is_writer:
        side.stats.save(path, **meta, count=str(side.stats.count))
    return {"images": side.stats.count, "out": str(path), **describe(det)}


def clip_score(images: str | Path, captions: str | Path, model: str = "embedded", arch: str = "ViT-B-32",
               allow_unverified_weights: bool = False) -> dict[str, Any]:
    """CLIP score (100 x max(cos, 0), averaged) of images (a folder or an ``.npz`` batch) against a captions file
    (one per line, or JSONL), image k with caption k; ``model``: a Hugging Face CLIP directory, an open_clip
    checkpoint, or ``embedded`` (the shapes-CLIP)."""
    import torch

    from diffbench.bench.protocols import read_captions
    from diffbench.core.errors import BadInputError
    from diffbench.metrics import clip_score as clip
    from diffbench.metrics import inputs

    cap_path = Path(captions)
    if not cap_path.is_file():
        raise BadInputError(f"{cap_path}: no such captions file")
    texts = read_captions(cap_path)
    if not Path(images).exists():
        raise BadInputError(f"{images}: no such file or folder")
    pixels = torch.cat(list(inputs.batches(images, 256)))
    if len(texts) != len(pixels):
        raise BadInputError(f"{len(pixels)} images but {len(texts)} captions in {cap_path}; "
                            "give exactly one caption per image")
    loaded = clip.load(model, arch, allow_unverified_weights)
    score, _ = clip.clip_score(loaded, pixels, texts)
    return {"clip_score": score, "n": len(pixels), "model": loaded.name, "weights_sha256": loaded.weights_sha256,
            "verified": loaded.verified, "convention": clip.CONVENTION}


def listings(kind: str | None = None) -> list[tuple[Any, list[dict[str, Any]]]]:
    """What diffbench knows, by kind (families, presets, pipelines, metrics, suites, detectors, protocols, and the
    CLI's commands when it is loaded): (listing, rows) for ``kind``, or for every kind."""
    from diffbench.bench.catalog import LISTINGS

    chosen = [LISTINGS.get(kind)] if kind else [LISTINGS.get(k) for k in LISTINGS.names()]  # validated first
    return [(listing, listing.rows()) for listing in chosen]


# every public function checks its plainly annotated arguments (diffbench/core/arguments.py)
for _name in ("load_run", "plan", "default_run_dir", "run", "benchmark_module", "report", "fid", "count",
              "count_pipeline", "match", "match_many", "compare", "baseline", "build", "train", "sample", "stats",
              "clip_score", "listings"):
    globals()[_name] = checked(globals()[_name])
