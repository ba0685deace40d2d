"""Quality metrics end to end: images (or saved statistics) -> detector features -> FID and relatives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from diffbench.core.distributed import current
from diffbench.core.errors import BadInputError
from diffbench.core.progress import progress as bar_for
from diffbench.metrics import inputs
from diffbench.metrics.detectors import Detector, describe
from diffbench.metrics.frechet import frechet_distance
from diffbench.metrics.intervals import BOOTSTRAP, fid_interval, kid_interval
from diffbench.metrics.isc import inception_score
from diffbench.metrics.kid import kernel_inception_distance
from diffbench.metrics.prc import precision_recall
from diffbench.metrics.reading import Reading
from diffbench.metrics.stats import FeatureStats, is_stats_file


@dataclass
class Side:
    """One side of a comparison: running statistics, and raw features where KID / IS / PR need them."""

    source: str
    stats: FeatureStats
    spatial: FeatureStats | None = None
    pool: np.ndarray | None = None
    logits: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return self.stats.count if self.stats.sum is not None else int(self.meta.get("count", 0))


def extract(source: Any, detector: Detector, keep_features: bool = False, batch_size: int = 64,
            value_range: tuple[float, float] | None = None, label: str | None = None, progress: bool = False) -> Side:
    """Features of every image of ``source``; under torchrun each rank extracts its batches and the
    statistics are reduced over the ranks (:mod:`diffbench.metrics.sharded`), equal to one process's.
    ``progress``: images/s and time left on a terminal."""
    world = current()
    if world.is_distributed:
        return _extract_sharded(source, detector, keep_features, batch_size, value_range, label, world)
    stats = spatial = None
    pools, logits = [], []
    bar = bar_for(inputs.count(source), f"features {Path(str(label or source)).name[:30]}", enabled=progress)
    for batch in inputs.batches(source, batch_size, value_range):
        bar.update(len(batch))
        f = detector.features(batch)
        if stats is None:
            stats = FeatureStats(f["pool"].shape[1])
            spatial = FeatureStats(f["spatial"].shape[1]) if "spatial" in f else None
        stats.update(f["pool"])
        if spatial is not None:
            spatial.update(f["spatial"])
        if keep_features:
            pools.append(f["pool"])
        if "logits" in f:
            logits.append(f["logits"])
    bar.close()
    name = label or str(source)
    if stats is None or stats.count == 0:
        raise BadInputError(f"{name}: no images")
    if stats.count < 2:
        raise BadInputError(f"{name}: one image; FID needs at least 2 (and thousands for a stable estimate)")
    return Side(name, stats, spatial, np.concatenate(pools) if keep_features else None,
                np.concatenate(logits) if logits else None, describe(detector))


def _extract_sharded(source: Any, detector: Detector, keep_features: bool, batch_size: int,
                     value_range: tuple[float, float] | None, label: str | None, world: Any) -> Side:
    from diffbench.metrics.sharded import extract_sharded  # torchmetrics: 1.2 s, for torchrun's ranks only

    own = inputs.indexed_batches(source, batch_size, value_range, world.mine)
    got = extract_sharded(own, detector, world, keep_features, None)
    stats = got["stats"]
    name = label or str(source)
    if stats.count == 0:
        raise BadInputError(f"{name}: no images")
    if stats.count < 2:
        raise BadInputError(f"{name}: one image; FID needs at least 2 (and thousands for a stable estimate)")
    return Side(name, stats, got["spatial"], got["pool"], got["logits"], describe(detector))


def load_side(path: str | Path, detector: Detector, keep_features: bool, batch_size: int = 64,
              progress: bool = False) -> Side:
    """A folder of images, an ADM .npz image batch, or a statistics .npz (mu/sigma, e.g. ADM or clean-fid refs)."""
    p = Path(path)
    if not p.exists():
        raise BadInputError(f"{p}: no such file or folder")
    if p.suffix == ".npz" and is_stats_file(p):
        s = FeatureStats.load(p)
        meta = dict(s.meta or {})
        want = describe(detector)
        for key in ("detector", "mode", "weights_sha256"):
            if key in meta and str(meta[key]) != str(want[key]):
                raise BadInputError(f"{p}: statistics were computed with {key}={meta[key]}, not {want[key]}; "
                                    "FIDs from different detectors are not comparable")
        return Side(str(p), s, meta={**meta, "from_stats_file": True})
    return extract(p, detector, keep_features, batch_size, progress=progress)


BOOTSTRAP_MAX_DIM = 512  # a FID bootstrap repeats a sqrtm of the feature dimension: at 2048-d that takes minutes


@dataclass(frozen=True)
class Asked:
    """The quality metrics a case or a command asks for, besides FID (always)."""

    kid: bool = False
    fid_real: bool = False  # the floor: as many real images as were generated, against the reference
    isc: bool = False
    sfid: bool = False
    prc: bool = False
    intervals: bool = False  # 95% intervals over the generated samples: FID bootstrap, KID half-samples


def score(gen: Side, ref: Side, asked: Asked, seed: int = 0) -> dict[str, Reading]:
    """Every quality metric ``asked`` for, ``gen`` against ``ref``, from their detector statistics (and their
    features where a metric needs them), keyed by the registry's base names (``fid``, ``kid``, ``fid_real``,
    ``isc``, ``sfid``, ``precision``, ``recall``). FID is the Frechet distance of the running statistics (what
    ``diffbench fid`` prints and the reference libraries compute); with ``intervals`` its 95% interval is a
    bootstrap of the generated features, KID's a half-sampling one. A metric that cannot be computed from what
    the sides hold is a Reading without a value, and the reason."""
    if gen.stats.dim != ref.stats.dim:
        raise BadInputError(f"feature dimensions differ ({gen.stats.dim} vs {ref.stats.dim}): different detectors")
    out = {"fid": Reading(frechet_distance(gen.stats.mu, gen.stats.sigma, ref.stats.mu, ref.stats.sigma), "1",
                          extra=_fid_interval(gen, ref, seed) if asked.intervals else {})}
    both = gen.pool is not None and ref.pool is not None
    if asked.kid:
        out["kid"] = _kid(gen, ref, asked.intervals, seed) if both else \
            Reading.unavailable("1", "needs images on both sides, not a statistics file")
    if asked.fid_real:
        out["fid_real"] = _floor(gen, ref, seed) if ref.pool is not None else \
            Reading.unavailable("1", "needs the reference's images, not a statistics file")
    if asked.prc:
        if both:
            assert gen.pool is not None and ref.pool is not None
            precision, recall = precision_recall(ref.pool, gen.pool)
            out["precision"], out["recall"] = Reading(precision, "1"), Reading(recall, "1")
        else:
            out["precision"] = Reading.unavailable("1", "needs images on both sides, not a statistics file")
    if asked.isc:
        if gen.logits is None:
            out["isc"] = Reading.unavailable("1", "the detector has no class logits (Inception-v3 torch-fidelity "
                                                  "mode has)")
        else:
            value, std = inception_score(gen.logits, splits=min(10, len(gen.logits)))
            out["isc"] = Reading(value, "1", extra={"std": std})
    if asked.sfid:
        if gen.spatial is None or ref.spatial is None:
            out["sfid"] = Reading.unavailable("1", "needs spatial features on both sides (Inception-v3, "
                                                   "torch-fidelity mode, from images)")
        else:
            a, b = gen.spatial, ref.spatial
            out["sfid"] = Reading(frechet_distance(a.mu, a.sigma, b.mu, b.sigma), "1")
    return out


def _fid_interval(gen: Side, ref: Side, seed: int) -> dict[str, Any]:
    if gen.pool is None:
        return {"ci95": None, "interval": "not computed: the generated side is a statistics file"}
    if gen.pool.shape[1] > BOOTSTRAP_MAX_DIM:
        return {"ci95": None, "interval": f"not computed: a bootstrap of {gen.pool.shape[1]}-d features repeats a "
                                          f"sqrtm of that size {BOOTSTRAP} times"}
    return fid_interval(gen.pool, ref.stats.mu, ref.stats.sigma, seed=seed).extra()


def _kid(gen: Side, ref: Side, intervals: bool, seed: int) -> Reading:
    assert gen.pool is not None and ref.pool is not None
    if intervals:
        k = kid_interval(gen.pool, ref.pool, seed=seed)
        return Reading(k.value, "1", extra=k.extra())
    value, std = kernel_inception_distance(gen.pool, ref.pool, seed=seed)
    return Reading(value, "1", extra={"std": std})


def _floor(gen: Side, ref: Side, seed: int) -> Reading:
    """FID of as many real images as were generated against the whole reference: FID's small-sample floor."""
    assert ref.pool is not None
    rng = np.random.default_rng(seed)
    real = ref.pool[rng.choice(len(ref.pool), min(gen.count, len(ref.pool)), replace=False)]
    floor = frechet_distance(real.mean(0), np.cov(real, rowvar=False), ref.stats.mu, ref.stats.sigma)
    return Reading(floor, "1", extra={"n_real": len(real)})


def compare(a: Side, b: Side, kid: bool = False, isc: bool = False, sfid: bool = False, prc: bool = False,
            seed: int = 0) -> dict[str, Any]:
    """:func:`score` as ``diffbench fid`` prints it: plain numbers (KID's and IS's standard deviations beside them),
    the sample counts, and what was not available with the reason."""
    readings = score(a, b, Asked(kid=kid, isc=isc, sfid=sfid, prc=prc), seed)
    out: dict[str, Any] = {"fid": readings["fid"].value, "n_a": a.count, "n_b": b.count}
    notes = {}
    for name, reading in readings.items():
        if not reading.available:
            notes["prc" if name == "precision" else name] = reading.reason
            continue
        out[name] = reading.value
        if "std" in reading.extra:
            out[f"{name}_std"] = reading.extra["std"]
    if notes:
        out["not_available"] = notes
    return out


IDENTITY = ("detector", "mode", "weights_sha256")


def compare_stats_files(a: Path, b: Path, kid: bool = False, isc: bool = False, sfid: bool = False,
                        prc: bool = False) -> dict[str, Any]:
    """FID between two statistics files, with no detector built: no image is read. Plain ``mu``/``sigma``
    files (as ADM and clean-fid publish them) carry no detector identity, and the result says so; files
    that both carry one must agree."""
    sa, sb = FeatureStats.load(a), FeatureStats.load(b)
    ma, mb = dict(sa.meta or {}), dict(sb.meta or {})
    for key in IDENTITY:
        if key in ma and key in mb and ma[key] != mb[key]:
            raise BadInputError(f"{a} and {b} were computed with different {key}s ({ma[key]} vs {mb[key]}); "
                                "FIDs from different detectors are not comparable")
    out = compare(Side(str(a), sa, meta=ma), Side(str(b), sb, meta=mb), kid, isc, sfid, prc)
    identity: dict[str, Any] = {k: ma.get(k, mb.get(k)) for k in IDENTITY}
    both = all(k in ma and k in mb for k in IDENTITY)
    identity["verified"] = (ma.get("verified") == mb.get("verified") == "True") if both else None
    if not both:
        missing = [str(p) for p, m in ((a, ma), (b, mb)) if not all(k in m for k in IDENTITY)]
        out["note"] = (f"{' and '.join(missing)} carr{'y' if len(missing) > 1 else 'ies'} no detector identity: "
                       "make sure both sides were computed with the same detector and mode")
    return {**out, **identity}
