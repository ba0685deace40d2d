"""The models package's front door: resolve a name or config, build it, count it, load weights."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from diffbench.core.errors import BadInputError, ConfigError, FamilyError, UnknownNameError, UserError
from diffbench.core.files import sha256_file
from diffbench.core.safeload import load_weights, read_state_dict
from diffbench.metrics.counting import count_flops, count_params, flops_to_gmacs
from diffbench.models import external
from diffbench.models.families import FAMILIES, Family, family_of
from diffbench.models.presets import PRESETS


def resolve(spec: Any, **overrides: Any) -> Any:
    """A preset name (``DiT-XL/2``), a family name (its default config) or a config -> a config.

    ``overrides`` replace config fields (``input_size=64``); an unknown field is a ``ConfigError``.
    """
    if isinstance(spec, str):
        if spec in PRESETS:
            config = PRESETS.get(spec).config
        else:
            try:  # a family's name, or the module path of one from outside (models/external.py)
                config = FAMILIES.get(spec).config_cls()
            except UnknownNameError:
                raise UnknownNameError(PRESETS.unknown_message(spec) + f"; families: {', '.join(FAMILIES.names())}"
                                       + FAMILIES.hint) from None
    elif dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        config = spec
    else:
        raise ConfigError(f"expected a preset name, family name or config, got {type(spec).__name__}")
    if overrides:
        fields = {f.name for f in dataclasses.fields(config)}
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise ConfigError(f"{type(config).__name__} has no field(s) {', '.join(unknown)}; "
                              f"fields are {', '.join(sorted(fields))}")
        config = dataclasses.replace(config, **overrides)
    return config


def build(spec: Any, device: str | torch.device | None = None, **overrides: Any) -> nn.Module:
    """Build the backbone for a preset name, family name or config; ``device="meta"`` allocates nothing."""
    config = resolve(spec, **overrides)
    with torch.device(device or "cpu"):
        return config.build()


@dataclass(frozen=True)
class ModelCounts:
    name: str
    family: str
    params: int
    params_trainable: int
    params_by_module: dict[str, int]
    flops: int  # one network evaluation, batch 1 (2 FLOPs per MAC)
    gmacs: float  # flops / 2 / 1e9
    config: dict[str, Any]
    weights_bytes: int = 0  # parameters and buffers as built (fp32)
    counted_on: str = "meta"  # "cpu": the network cannot run on meta, so it was built for real
    fallback_reason: str = ""  # why it was (the meta error)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def count(spec: Any, name: str | None = None, **overrides: Any) -> ModelCounts:
    """Params and GMACs of one network evaluation at batch 1, counted on the meta device."""
    config = resolve(spec, **overrides)
    family = family_of(config)
    try:
        params, flops = _counted(family, config, torch.device("meta"))
        where, why = "meta", ""
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's network meta cannot run (.item(), numpy): built for real
        if family.name not in external.ORIGINS:  # a built-in family runs on meta: anything else is a bug
            raise
        where, why = "cpu", f"meta failed: {_one_line(e)}"
        try:
            params, flops = _counted(family, config, torch.device("cpu"))
        except Exception as e2:  # noqa: BLE001 - the family's own code, on the CPU too
            raise FamilyError(f"family {family.name}: counting {type(config).__name__} failed on meta ({_one_line(e)}) "
                              f"and on the CPU ({_one_line(e2)})") from None
    label = name or (spec if isinstance(spec, str) else family.name)
    return ModelCounts(label, family.name, params.total, params.trainable, params.by_module, flops,
                       flops_to_gmacs(flops), config_dict(config), params.bytes, where, why)


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"


def _counted(family: Family, config: Any, device: torch.device) -> tuple[Any, int]:
    """(params, FLOPs of one evaluation at batch 1) of ``config`` built on ``device``."""
    with device:
        model = config.build().eval()
        inputs = family.make_inputs(config, 1, device, torch.float32)
    params = count_params(model)
    with torch.no_grad():
        flops = count_flops(lambda: family.denoise(model, inputs))
    return params, flops


def config_dict(config: Any) -> dict[str, Any]:
    d = dataclasses.asdict(config)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def config_from_dict(config_cls: type, d: dict[str, Any]) -> Any:
    """The inverse of :func:`config_dict`: JSON lists become tuples where the field is a tuple (by its type
    hint, not its printed name); an unknown field is a ``ConfigError``."""
    hints = typing.get_type_hints(config_cls)

    def is_tuple(hint: Any) -> bool:
        return hint is tuple or typing.get_origin(hint) is tuple or any(is_tuple(a) for a in typing.get_args(hint)
                                                                           if typing.get_origin(hint) is not tuple)

    unknown = sorted(set(d) - set(hints))
    if unknown:
        raise ConfigError(f"{config_cls.__name__} has no field(s) {', '.join(unknown)}")
    return config_cls(**{k: tuple(v) if isinstance(v, list) and is_tuple(hints[k]) else v for k, v in d.items()})


def family(name: str) -> Family:
    return FAMILIES.get(name)


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write atomically (a kill mid-write leaves the previous file intact); tied weights (T5's shared
    token embedding) are stored once and the other names recorded as aliases in the metadata."""
    seen: dict[Any, str] = {}
    kept: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for k, v in tensors.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape))
        if v.numel() and key in seen:
            aliases[k] = seen[key]
        else:
            seen[key] = k
            kept[k] = v.detach().contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(kept, str(tmp), metadata={**metadata, "aliases": json.dumps(aliases)})
    os.replace(tmp, path)


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors with aliases restored, metadata); an unreadable file is a one-line ``BadInputError``."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as e:
        raise BadInputError(f"{path}: not a readable safetensors file ({str(e)[:80]})") from None
    try:
        aliases = json.loads(meta.get("aliases", "{}"))
    except (ValueError, RecursionError):
        aliases = None
    if not isinstance(aliases, dict) or not all(isinstance(a, str) and isinstance(k, str) and k in tensors
                                                for a, k in aliases.items()):
        raise BadInputError(f"{path}: its 'aliases' metadata is not a JSON object mapping names to stored tensors; "
                            "write the file again with 'diffbench train' or save a plain state dict")
    for alias, kept in aliases.items():
        tensors[alias] = tensors[kept]
    return tensors, meta


def load_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors or a plain torch file, never executing code from the file.

    Accepts a bare state dict (DiT releases) or one nested under ``model`` / ``state_dict`` / ``ema``.
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"no checkpoint at {path}: give the path of a .pt/.pth/.safetensors file")

    return read_state_dict(path)  # weights_only: a pickle that needs code execution is refused


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load weights with ``strict=True``; a key or shape mismatch is one line naming the first problems."""
    return load_into(model, load_state_dict(path), path, "build the config the checkpoint was trained with")


def file_sha256(path: str | Path) -> str:
    return sha256_file(path)


def check_fits(config: Any, path: str | Path) -> None:
    """Raise one line unless the checkpoint's keys and shapes are those of ``config``'s network (the weights are
    mapped, not read: cheap for a multi-GB file); the values are checked when a case loads them."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            with safe_open(str(path), framework="pt") as f:
                names = f.keys()  # safe_open is not a mapping
                shapes = {k: tuple(f.get_slice(k).get_shape()) for k in names}
        except Exception as e:  # noqa: BLE001 - not a safetensors file
            raise BadInputError(f"{path}: not a readable safetensors file ({' '.join(str(e).split())[:80]})") from None
    else:
        raw = load_weights(path, mmap=True)
        for key in ("model", "state_dict", "ema"):
            if isinstance(raw, dict) and isinstance(raw.get(key), dict):
                raw = raw[key]
                break
        if not isinstance(raw, dict) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
            raise BadInputError(f"{path}: not a state dict of tensors")
        shapes = {k: tuple(v.shape) for k, v in raw.items()}
    with torch.device("meta"):
        own = {k: tuple(v.shape) for k, v in config.build().state_dict().items()}
    missing = [k for k in own if k not in shapes]
    unexpected = [k for k in shapes if k not in own]
    wrong = [f"{k} {shapes[k]} vs {own[k]}" for k in own if k in shapes and shapes[k] != own[k]]
    if missing or unexpected or wrong:
        parts = [f"{len(wrong)} shape mismatch(es), e.g. {wrong[0]}"] if wrong else []
        parts += [f"{len(missing)} missing key(s), e.g. {missing[0]}"] if missing else []
        parts += [f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}"] if unexpected else []
        raise BadInputError(f"{path} does not fit {type(config).__name__}: {'; '.join(parts)}; use the preset or "
                            "config the checkpoint was trained with")


def load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path, fix: str) -> nn.Module:
    """``model.load_state_dict(state, strict=True)``, with any key or shape mismatch as one line that names
    the first problems and ``fix``."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es), e.g. {shapes[0]}")
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[0]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[0]}")
        raise BadInputError(f"{source} does not fit this model: {'; '.join(parts)}; {fix}")
    # load_state_dict would silently cast int8 into float weights (constant images, exit 0): refuse it
    kinds = [f"{k} is {state[k].dtype}, the model's {own[k].dtype}" for k in own
             if own[k].is_floating_point() != state[k].is_floating_point() or state[k].is_complex()]
    if kinds:
        raise BadInputError(f"{source}: {len(kinds)} tensor(s) of the wrong kind, e.g. {kinds[0]}; "
                            "save the checkpoint in floating point")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise BadInputError(f"{source}: {len(bad)} tensor(s) hold NaN or inf, e.g. {bad[0]}; the training that "
                            "wrote it diverged: use an earlier checkpoint")
    model.load_state_dict(state, strict=True)
    return model
