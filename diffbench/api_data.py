"""The API's data functions (re-exported by :mod:`diffbench.api`): datasets prepared once, before training; the
reference cache; the modelled cost of a plan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from diffbench.core.arguments import checked


@checked
def latents(dataset: str | Path, autoencoder: str | Path, out: str | Path, image_size: int = 256,
            device: str = "cpu", shard_size: int = 1024, encode_batch: int = 64, skip_bad: bool = False
            ) -> dict[str, Any]:
    """Encode ``dataset`` (a class-folder tree, a captioned folder, ``digits``...) at ``image_size`` with the local
    diffusers ``AutoencoderKL`` in ``autoencoder``, both flips of every image, into safetensors shards in ``out``
    (``diffusion/latents.py``). Under torchrun the shards are split over the ranks; run again after a kill, it
    writes only the shards that are missing. A suite trains on them with ``dataset = "OUT"``."""
    from diffbench.core import distributed
    from diffbench.core.errors import ConfigError
    from diffbench.diffusion.latents import Encoder, encode_dataset
    from diffbench.diffusion.resolve import EMBEDDED, dataset_sha256, open_source

    if not isinstance(image_size, int) or image_size < 8 or image_size % 8:
        raise ConfigError(f"image_size must be a multiple of 8 (the autoencoder downsamples by 8), got {image_size!r}")
    if not isinstance(shard_size, int) or not isinstance(encode_batch, int) or shard_size < 1 or encode_batch < 1:
        raise ConfigError("shard_size and encode_batch must be positive integers")
    name = str(dataset) if str(dataset) in EMBEDDED else str(Path(dataset).resolve())
    _, device = distributed.init(device)
    source = open_source(name, image_size, skip_bad=skip_bad)
    if source.latent:
        raise ConfigError(f"{dataset} holds latents already; give the images they came from")
    encoder = Encoder(autoencoder, device)
    return encode_dataset(source, encoder, out, dataset_sha256(name, skip_bad) or name, shard_size, encode_batch)


def estimate(cases: list[Any]) -> tuple[list[float | None], str]:
    """Modelled GPU-hours of each planned case that trains (None for the others), and the assumptions behind them
    (``bench/estimate.py``): a model to size a cluster request, never a measurement."""
    from diffbench.bench.estimate import Assumptions, gpu_hours
    from diffbench.bench.spec import BackboneRef
    from diffbench.models.api import config_from_dict, count
    from diffbench.models.families import FAMILIES

    out: list[float | None] = []
    for case in cases:
        m = case.spec.model
        gmacs: float | None = None
        shape: tuple[int, ...] = ()
        if isinstance(m, BackboneRef) and case.spec.training is not None and not getattr(case, "refused", ""):
            family = FAMILIES.get(m.family)
            config = config_from_dict(family.config_cls, m.config)
            gmacs, shape = count(config).gmacs, family.input_shape(config)
        out.append(gpu_hours(case.spec, gmacs, tuple(shape)))
    return out, Assumptions().describe()


def cache_entries() -> tuple[Path | None, list[dict[str, Any]]]:
    """(the reference cache's folder, or None when DIFFBENCH_CACHE=off; one row per entry)."""
    from diffbench.metrics import refcache

    where = refcache.cache_dir()
    return where, refcache.entries() if where is not None else []


def clear_cache() -> tuple[Path | None, int]:
    """Remove the reference cache's entries: (its folder, or None when off; how many were removed)."""
    from diffbench.metrics import refcache

    where = refcache.cache_dir()
    return where, refcache.clear() if where is not None else 0
