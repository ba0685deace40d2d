"""Pretrained diffusers pipeline directories: read without loading, loaded from local files only, and their
components counted and timed one call at a time.

diffusers does the loading (``DiffusionPipeline.from_pretrained(dir, local_files_only=True)``); what it does
not do is say, per component, how many parameters and multiply-accumulates one image costs and where the time
goes. :class:`Instrument` wraps each component's entry point (``forward``; ``encode``/``decode`` for an
autoencoder) so that each call is timed (synchronised on a GPU) and, while counting, its FLOPs are counted by
``torch.utils.flop_counter.FlopCounterMode`` — the same counter the backbones are counted with.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from diffbench.core.errors import BadInputError, ConfigError
from diffbench.core.safeload import check_pickles
from diffbench.diffusion.process import make_scheduler

# components that run once per denoising step (the denoisers); every other module runs once per image
DENOISERS = ("unet", "transformer", "prior", "decoder", "super_res_first", "super_res_last", "unet_2")
AUTOENCODERS = ("vae", "vqvae", "movq")


@dataclass(frozen=True)
class PipelineDir:
    path: str
    class_name: str
    components: dict[str, str]  # name -> class, for every component the index names
    cond: str  # text, class or none: what each sample is given
    classes: int  # class pipelines: the number of classes (the denoiser's label table less the null class)
    output_shape: tuple[int, int, int]

    def config(self) -> dict[str, Any]:
        return {"class_name": self.class_name, "components": self.components, "cond": self.cond,
                "classes": self.classes}


def is_pipeline_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "model_index.json").is_file()


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_bytes())
    except RecursionError:
        raise BadInputError(f"{path}: JSON nested too deeply") from None
    except (OSError, ValueError) as e:
        raise BadInputError(f"{path}: not readable JSON ({' '.join(str(e).split())[:80]})") from None
    if not isinstance(data, dict):
        raise BadInputError(f"{path}: expected a JSON object")
    return data


def pipeline_class(name: str) -> Any:
    """A diffusers pipeline class by name; a directory naming anything else (custom code) is refused."""
    import diffusers

    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.isidentifier() else None
    if not (inspect.isclass(cls) and issubclass(cls, diffusers.DiffusionPipeline)):
        raise BadInputError(f"model_index.json names {name!r}, not a pipeline class of diffusers "
                            f"{diffusers.__version__}; custom pipeline code is not run")
    return cls


def inspect_dir(path: str | Path) -> PipelineDir:
    """What a pipeline directory is, from its JSON files only (no weights read)."""
    d = Path(path)
    if not is_pipeline_dir(d):
        raise BadInputError(f"{d}: not a diffusers pipeline directory (no model_index.json); save one with "
                            "pipeline.save_pretrained(DIR)")
    index = _json(d / "model_index.json")
    cls = pipeline_class(index.get("_class_name", ""))
    components = {k: str(v[1]) for k, v in index.items()
                  if not k.startswith("_") and isinstance(v, list) and len(v) == 2 and v[1]}
    params = inspect.signature(cls.__call__).parameters
    cond = "text" if "prompt" in params else "class" if "class_labels" in params else "none"
    denoiser = next((n for n in DENOISERS if n in components), None)
    if denoiser is None:
        raise BadInputError(f"{d}: no denoiser among its components ({', '.join(components)}); expected one of "
                            f"{', '.join(DENOISERS[:2])}")
    den_path = d / denoiser / "config.json"
    den = _json(den_path) if den_path.is_file() else {}
    size = _field(den, "sample_size", 64, den_path, lambda v: _count(v, 4096) or (
        isinstance(v, list) and 1 <= len(v) <= 2 and all(_count(x, 4096) for x in v)), "a size of 1 to 4096",
                  nullable=False)  # the pipeline's default height is read from it: null fails in diffusers
    size = size[0] if isinstance(size, list) else size
    factor = 1
    channels = _field(den, "out_channels", None, den_path, lambda v: _count(v, 64), "a channel count of 1 to 64") \
        or _field(den, "in_channels", 3, den_path, lambda v: _count(v, 64), "a channel count of 1 to 64")
    ae = next((n for n in AUTOENCODERS if n in components), None)
    if ae is not None and (d / ae / "config.json").is_file():
        ae_path = d / ae / "config.json"
        ae_cfg = _json(ae_path)
        blocks = _field(ae_cfg, "block_out_channels", [0], ae_path, lambda v: isinstance(v, list) and 1 <= len(v) <= 8
                        and all(_count(x, 16384) or x == 0 for x in v), "a list of 1 to 8 widths")
        factor = 2 ** (len(blocks) - 1)
        channels = _field(ae_cfg, "out_channels", 3, ae_path, lambda v: _count(v, 64), "a channel count of 1 to 64")
    classes = 0
    if cond == "class":
        for key in ("num_embeds_ada_norm", "num_class_embeds"):
            classes = classes or _field(den, key, 0, den_path, lambda v: v is None or v == 0 or _count(v, 100_000),
                                        "a class count of 1 to 100,000") or 0
    if size * factor > 16384:
        raise BadInputError(f"{d}: images of {size * factor} px a side (sample_size {size} x the autoencoder's "
                            f"{factor}); at most 16384")
    return PipelineDir(str(d), cls.__name__, components, cond, classes, (channels, size * factor, size * factor))


def _count(v: Any, most: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= most


def _field(cfg: dict[str, Any], key: str, default: Any, path: Path, ok: Any, expected: str,
           nullable: bool = True) -> Any:
    """``cfg[key]`` (or ``default`` when absent, or null where ``nullable``), checked before anything is built from
    it: a config that parses is still untrusted (a string sample_size crashed in int(), 10^12 overflowed the
    allocator)."""
    value = cfg.get(key)
    if value is None and (nullable or key not in cfg):
        return default
    if not ok(value):
        raise BadInputError(f"{path}: {key} is {str(value)[:60]!r}; expected {expected}")
    return value


def load_dir(path: str | Path, scheduler: str = "own", device: str = "cpu") -> Any:
    """The pipeline from local files only; its pickles checked first (``core/safeload.py``); ``scheduler`` other
    than ``own`` swaps in that diffusers scheduler class with the pipeline's own scheduler config (its betas)."""
    info = inspect_dir(path)
    pipe = from_local(pipeline_class(info.class_name), path, f"a {info.class_name}")
    if scheduler != "own":
        if getattr(pipe, "scheduler", None) is None:
            raise ConfigError(f"{path}: the pipeline has no scheduler to replace with {scheduler}")
        pipe.scheduler = type(make_scheduler(scheduler)).from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def from_local(cls: Any, path: str | Path, what: str, error: type[Exception] = BadInputError) -> Any:
    """``cls.from_pretrained(path)`` from local files only, the one way diffbench hands a directory to diffusers: its
    pickles checked first (``core/safeload.py``), no loading bars, any failure one line naming ``path`` and ``what``
    it should have been."""
    check_pickles(path)  # diffusers is given the directory only once its pickles are known safe
    quiet_loading()
    try:
        return cls.from_pretrained(str(path), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any loading problem is the same user fix
        raise error(f"{path}: not loadable as {what} ({' '.join(str(e).split())[:160]})") from None


def quiet_loading() -> None:
    """No loading bars or advice (install accelerate) from diffusers and transformers: the output is for results."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def modules(pipe: Any) -> dict[str, torch.nn.Module]:
    return {k: v for k, v in pipe.components.items() if isinstance(v, torch.nn.Module)}


def component_kind(name: str) -> str:
    if name in DENOISERS:
        return "denoiser"
    if name in AUTOENCODERS:
        return "autoencoder"
    return "text_encoder" if "text_encoder" in name else "encoder"


@dataclass
class Instrument:
    """Time (and, while ``counting``, FLOPs) per component call; entry names like ``unet``, ``vae.decode``."""

    device: str = "cpu"
    counting: bool = False
    seconds: dict[str, float] = field(default_factory=dict)
    flops: dict[str, int] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    enabled: bool = True

    def attach(self, pipe: Any) -> Instrument:
        for name, module in modules(pipe).items():
            entries = ("encode", "decode") if name in AUTOENCODERS else ("forward",)
            for entry in entries:
                if hasattr(module, entry):
                    key = name if entry == "forward" else f"{name}.{entry}"
                    setattr(module, entry, self._wrap(key, getattr(module, entry)))
        return self

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize(self.device)

    def _wrap(self, key: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return fn(*args, **kwargs)
            self._sync()
            t0 = time.perf_counter()
            if self.counting:
                with FlopCounterMode(display=False) as counter:
                    out = fn(*args, **kwargs)
                self.flops[key] = self.flops.get(key, 0) + counter.get_total_flops()
            else:
                out = fn(*args, **kwargs)
            self._sync()
            self.seconds[key] = self.seconds.get(key, 0.0) + time.perf_counter() - t0
            self.calls[key] = self.calls.get(key, 0) + 1
            return out
        return timed

    def reset(self) -> None:
        self.seconds.clear()
        self.flops.clear()
        self.calls.clear()


def call_arguments(pipe: Any, info: PipelineDir, n: int, labels: list[int] | None, captions: list[str] | None,
                   steps: int, guidance: float, generators: list[torch.Generator], height: int | None = None
                   ) -> dict[str, Any]:
    """The keyword arguments of one pipeline call for ``n`` images, as its ``__call__`` names them."""
    params = inspect.signature(type(pipe).__call__).parameters
    kw: dict[str, Any] = {"num_inference_steps": steps, "generator": generators, "output_type": "np"}
    if info.cond == "text":
        assert captions is not None and len(captions) == n
        kw["prompt"] = list(captions)
    elif info.cond == "class":
        assert labels is not None and len(labels) == n
        kw["class_labels"] = list(labels)
    else:
        kw["batch_size"] = n
    if "guidance_scale" in params:
        kw["guidance_scale"] = guidance
    elif guidance != 1.0:
        raise ConfigError(f"{info.class_name} takes no guidance scale; set guidance = 1")
    if height is not None and "height" in params:
        kw.update(height=height, width=height)
    return {k: v for k, v in kw.items() if k in params or k == "output_type"}


def call_defaults(class_name: str) -> dict[str, Any]:
    """The defaults a pipeline class's ``__call__`` declares (``num_inference_steps``, ``guidance_scale``, ...)."""
    params = inspect.signature(pipeline_class(class_name).__call__).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def to_uint8(images: Any) -> torch.Tensor:
    """A pipeline's ``output_type="np"`` images (NHWC floats in [0, 1]) as uint8 NCHW, rounded as diffusers'
    own ``numpy_to_pil`` rounds them."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != 4:
        raise BadInputError(f"the pipeline returned images of shape {arr.shape}, not (N, H, W, C)")
    x = torch.from_numpy(np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()
    return x.expand(-1, 3, -1, -1).contiguous() if x.shape[1] == 1 else x
