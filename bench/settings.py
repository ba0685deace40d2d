"""Every setting a suite, a case or a command takes, with its default, its check and its message, once.

Each concern is a frozen dataclass whose fields carry their check and what a valid value is as
metadata (:func:`setting`): what a case measures and how (:class:`Measurement`), where it runs
(:class:`Placement`), how it trains and scores (:class:`TrainingSettings`, whose defaults for what
the training loop also takes come from ``diffusion``'s :class:`TrainConfig`) and how it samples
(:class:`SamplingSettings`). The suite schema (:data:`SETTING_KEYS`), a suite's flat ``[defaults]``
(:class:`Settings`), the case spec's training and sampler parts, the CLI's options and
``benchmark_module``'s keywords all derive from these fields; ``tests/test_settings.py`` fails when
a default is written anywhere else.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from diffbench.bench.accuracy import check_bands
from diffbench.bench.precision import ATTENTION_BACKENDS, PRECISIONS
from diffbench.core.errors import ConfigError
from diffbench.diffusion.config import AUTOENCODER_STEPS, Loop, TrainConfig

# a suite's name names its run directory (runs/NAME-TIMESTAMP), as a protocol's names its metrics: a plain file
# name, never a path
SUITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MEASURES = ("counts", "speed", "memory", "energy", "train", "quality")
# own: a diffusers directory's own scheduler; adm-ddpm, adm-ddim, dit-ddpm: the papers' respaced samplers;
# uvit-dpm-solver: U-ViT's DPM-Solver settings
SCHEDULER_NAMES = ("own", "ddpm", "ddim", "dpm-solver++", "euler", "adm-ddpm", "adm-ddim", "dit-ddpm",
                   "uvit-dpm-solver")
MODULE_MEASURES = ("counts", "speed", "memory")  # what benchmark_module measures a user's module for unless told
DATASETS = ("digits", "shapes")  # embedded; any other value is a path (diffusion/sources.py)
PREDICTIONS = ("epsilon", "v_prediction")
EMAS = ("power", "constant")

Check = Callable[[Any], bool]


# --- checks ----------------------------------------------------------------------------------------

MAX_TIMEOUT_S = 1e7  # 115 days
MAX_CLASSES = 100_000  # ImageNet-21k has 21,841; more is a typo, and a class table that size is gigabytes


def pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v > 0


def nonneg_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def number(v: Any) -> bool:
    """A finite non-negative number (TOML has ``nan`` and ``inf``, and ``nan >= 0`` is False but ``inf`` passes)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


def dataset_path(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip()) and "\0" not in v


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


def choices(options: tuple[str, ...] | list[str]) -> Check:
    return lambda v: isinstance(v, str) and v in options


def list_of(check: Check) -> Check:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def setting(default: Any, check: Check, expected: str) -> Any:
    """A dataclass field that is a setting: its default, its check, and what a valid value is (the message)."""
    return dataclasses.field(default=default, metadata={"check": check, "expected": expected})


def train_default(name: str) -> Any:
    """The training loop's own default for ``name``: the harness has no second one."""
    return TrainConfig.__dataclass_fields__[name].default


# --- the concerns ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Measurement:
    """What a case measures and how: batch sizes and precisions (one case each), timing, seeds, gates."""

    batch_sizes: tuple[int, ...] = setting((1,), list_of(pos_int), "a non-empty list of positive integers")
    precisions: tuple[str, ...] = setting(("fp32",), list_of(choices(PRECISIONS)),
                                          f"a non-empty list of {', '.join(PRECISIONS)}")
    warmup: int = setting(2, nonneg_int, "a non-negative integer")
    repeats: int = setting(10, pos_int, "a positive integer")
    # each case run this many times, each in its own process (the regression gate's unit)
    repetitions: int = setting(1, lambda v: pos_int(v) and v <= 100, "a positive integer (at most 100)")
    # accuracy bands: metric -> [low, high] (bench/accuracy.py)
    accept: dict[str, list[float]] | None = setting(None, lambda v: check_bands(v) is None,
                                                    "a table of metric = [low, high] (finite, low <= high)")
    min_time_s: float = setting(0.0, number, "a non-negative number")
    # at most MAX_TIMEOUT_S: a deadline beyond it overflows the clock (1e300 s did: OverflowError)
    timeout_s: float = setting(600.0, lambda v: number(v) and 0 < v <= MAX_TIMEOUT_S,
                               "a positive number of seconds (at most 1e7)")
    seed: int = setting(train_default("seed"), lambda v: nonneg_int(v) and v < 2 ** 32,
                        "a non-negative integer below 2**32")
    compile: bool = setting(False, boolean, "true or false")
    channels_last: bool = setting(False, boolean, "true or false")
    attention: str = setting("auto", choices(tuple(ATTENTION_BACKENDS)), f"one of {', '.join(ATTENTION_BACKENDS)}")
    measure: tuple[str, ...] = setting(MEASURES, list_of(choices(MEASURES)),
                                       f"a non-empty list of {', '.join(MEASURES)}")
    # on GPU, retry an out-of-memory case at half the batch size
    oom_retry: bool = setting(True, boolean, "true or false")
    # how often the background thread samples NVML memory
    nvml_interval_s: float = setting(0.01, lambda v: number(v) and v > 0, "a positive number of seconds")


@dataclass(frozen=True)
class Placement:
    """Where a case runs: the devices it holds under ``--devices`` (all visible to its process; it starts
    when that many are free), on how many machines, and how its training loop reads data and checkpoints.
    What it measures is :class:`Measurement`'s."""

    @property
    def world_size(self) -> int:
        """The case's ranks: one per device, on every node."""
        return self.devices_per_case * self.nodes


    devices_per_case: int = setting(1, lambda v: pos_int(v) and v <= 64, "a positive integer (at most 64)")
    # > 1: a case's ranks span that many machines, devices_per_case on each (--launcher submitit: one Slurm task per
    # rank, started by srun); its world size is devices_per_case x nodes
    nodes: int = setting(1, lambda v: pos_int(v) and v <= 1024, "a positive integer (at most 1024)")
    # DataLoader worker processes decoding a dataset on disk ahead of the training loop (0: in the loop's process)
    data_workers: int = setting(Loop.workers, lambda v: nonneg_int(v) and v <= 64,
                                "a non-negative integer (at most 64)")
    # > 0: each rank's share of the global batch in chunks of this many, gradients accumulated (a device that cannot
    # hold its share); the global batch, and so the loss curve, is the same
    micro_batch: int = setting(Loop.micro_batch, nonneg_int, "a non-negative integer (0: a rank's whole share at once)")
    # a training checkpoint every that many steps (0: at evaluations and the end only), in RUN_DIR/cases/CASE_ID:
    # a killed or preempted case continues from the last one under --resume
    checkpoint_every: int = setting(0, nonneg_int, "a non-negative integer (0: at evaluations and the end)")


@dataclass(frozen=True)
class TrainingSettings:
    """How a case trains and scores (measure ``train`` / ``quality``), on an embedded dataset. The fields the
    training loop shares take :class:`TrainConfig`'s defaults; :meth:`train_config` is the one mapping."""

    dataset: str = setting("digits", dataset_path, "digits, shapes or the path of a dataset (a class-folder "
                           "tree, a captioned folder with metadata.jsonl, latents from 'diffbench latents', an .npz)")
    # a dataset on disk: images decoded at this resolution (0: the backbone's input resolution)
    data_resolution: int = setting(0, nonneg_int, "a non-negative integer (0: the backbone's input resolution)")
    skip_bad: bool = setting(False, boolean, "true or false")  # an undecodable image skipped and counted, not fatal
    flip: bool = setting(True, boolean, "true or false")  # random horizontal flips, where the dataset allows them
    fid_detector: str = setting("", lambda v: isinstance(v, str), "a detector name ('': the dataset's own)")
    train_steps: int = setting(200, pos_int, "a positive integer")
    # > 0: a training-compute budget (3 x forward FLOPs x images seen) for every backbone of the sweep, matched
    # compute across sizes and families (DiT's Figure 9); each case's train_steps is derived from it at expansion
    train_flops: float = setting(0.0, lambda v: number(v) and v >= 0, "a non-negative number of FLOPs (0: none)")
    train_batch: int = setting(train_default("batch_size"), pos_int, "a positive integer")
    lr: float = setting(train_default("lr"), lambda v: number(v) and v > 0, "a positive number")
    samples: int = setting(256, lambda v: pos_int(v) and v >= 2, "an integer of at least 2")  # scored images
    # pipelines with an autoencoder: its training steps, before the stages
    autoencoder_steps: int = setting(AUTOENCODER_STEPS, pos_int, "a positive integer")
    # the scored weights' average (diffusion/ema.py): EDM2's power-function EMA (width ema_std of the training
    # length), or "constant" with ema_decay (paper-faithful long runs: DiT's 0.9999)
    ema: str = setting(train_default("ema"), choices(EMAS), "power or constant")
    ema_std: float = setting(train_default("ema_std"), lambda v: number(v) and 0 < v < 0.28,
                             "a number between 0 and 0.28")
    ema_decay: float = setting(train_default("ema_decay"), lambda v: number(v) and v < 1, "a number in [0, 1)")
    lr_warmup: int = setting(train_default("lr_warmup"), nonneg_int, "a non-negative integer")
    # > 0: quality also every that many steps during training (DiT's Figure 9 curves)
    eval_every: int = setting(0, nonneg_int, "a non-negative integer (0: score at the end only)")
    # backbones: what the network is trained to predict, then sampled so
    prediction: str = setting(train_default("prediction"), choices(PREDICTIONS), "epsilon or v_prediction")

    def train_config(self, seed: int, checkpoint_every: int = 0) -> TrainConfig:
        """The training loop's config for these settings (a checkpoint every ``checkpoint_every`` steps, and at
        each evaluation, where training resumes)."""
        return TrainConfig(steps=self.train_steps, batch_size=self.train_batch, lr=self.lr, seed=seed,
                           checkpoint_every=checkpoint_every, ema=self.ema, ema_std=self.ema_std,
                           ema_decay=self.ema_decay, lr_warmup=self.lr_warmup, prediction=self.prediction)


@dataclass(frozen=True)
class SamplingSettings:
    """How samples are drawn (scored samples, and a pipeline's end-to-end timing)."""

    sample_steps: int = setting(20, pos_int, "a positive integer")
    scheduler: str = setting("ddim", choices(SCHEDULER_NAMES),
                             "own (a diffusers directory's), ddpm, ddim, dpm-solver++, euler, or the papers' "
                             "adm-ddpm, adm-ddim, dit-ddpm, uvit-dpm-solver")
    guidance: float = setting(1.0, number, "a non-negative number (1 = no guidance)")


def keys_of(concern: type) -> dict[str, tuple[Check, str]]:
    """{key: (check, expected)} of a concern's settings."""
    return {f.name: (f.metadata["check"], f.metadata["expected"]) for f in dataclasses.fields(concern)}


@dataclass(frozen=True)
class Settings:
    """A suite's per-case settings, flat in TOML (``[defaults]``, overridable in each sweep), one concern each."""

    measurement: Measurement = Measurement()
    placement: Placement = Placement()
    training: TrainingSettings = TrainingSettings()
    sampling: SamplingSettings = SamplingSettings()

    def get(self, key: str) -> Any:
        return getattr(getattr(self, _CONCERN_OF[key]), key)

    def updated(self, raw: Mapping[str, Any]) -> Settings:
        """These settings with the flat keys of ``raw`` replaced, each checked (a NaN ``min_time_s`` from the API is
        refused here, as a suite's is); keys that are not settings are ignored."""
        parts: dict[str, dict[str, Any]] = {}
        for key, value in raw.items():
            if key in _CONCERN_OF:
                check, expected = SETTING_KEYS[key]
                if not check(list(value) if isinstance(value, tuple) else value):
                    raise ConfigError(f"{key}: expected {expected}, got {value!r}")
                parts.setdefault(_CONCERN_OF[key], {})[key] = tuple(value) if isinstance(value, list) else value
        return dataclasses.replace(self, **{part: dataclasses.replace(getattr(self, part), **values)
                                            for part, values in parts.items()})


# derived from Settings' own fields: each concern, and which of them a flat key belongs to
_PARTS = {f.name: type(f.default) for f in dataclasses.fields(Settings)}
CONCERNS: tuple[type, ...] = tuple(_PARTS.values())
SETTING_KEYS: dict[str, tuple[Check, str]] = {k: v for c in CONCERNS for k, v in keys_of(c).items()}
_CONCERN_OF: dict[str, str] = {key: part for part, c in _PARTS.items() for key in keys_of(c)}
DEFAULTS = Settings()


# --- the jobs of 'diffbench train' and 'diffbench sample' (bench/pipeline_jobs.py runs them) ------------------

@dataclass
class PipelineJob:
    """What to build: a pipeline preset (or, to sample, a diffusers directory) and where its parts come from."""

    pipeline: str
    out: str
    scale: str = "tiny"
    params: str | None = None  # reshape the denoisers to this many params
    device: str = "cpu"
    seed: int = DEFAULTS.measurement.seed
    text_encoder: str | None = None  # a local Hugging Face directory for the first text encoder
    autoencoder: str | None = None  # a local diffusers AutoencoderKL directory


@dataclass
class TrainJob(PipelineJob):
    dataset: str = DEFAULTS.training.dataset
    steps: int = train_default("steps")
    train_flops: float = train_default("train_flops")
    batch_size: int = train_default("batch_size")
    lr: float = train_default("lr")
    checkpoint_every: int = train_default("checkpoint_every")
    autoencoder_steps: int = DEFAULTS.training.autoencoder_steps


@dataclass
class SampleJob(PipelineJob):
    checkpoint: str | None = None
    n: int = 16
    steps: int | None = None  # None: the pipeline's own
    guidance: float | None = None  # None: the pipeline's own
    scheduler: str | None = None  # None: ddim (a diffusers directory: its own)
    stage_weights: list[str] | None = None  # STAGE=DIR
    captions: list[str] | None = None
    captions_file: str | None = None
    labels: str | None = None  # comma-separated
    batch_size: int = 64  # images per sampling batch
    format: str = "png"
    overwrite: bool = False  # replace the samples diffbench wrote before in out (nothing else there is touched)
