"""Every setting's default is written once: in its concern's dataclass (bench/settings.py) or, for what the
training loop also takes, in diffusion's TrainConfig and AUTOENCODER_STEPS (diffusion/config.py).

The check reads the source of every module: a literal default for a name that is a setting — a dataclass
field, a function parameter, a CLI option's ``default=``, a ``.get(name, fallback)`` — is a second
definition, unless it is on the short list below of same-named quantities that are not the setting.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from diffbench.bench import settings
from diffbench.bench.settings import DEFAULTS, SETTING_KEYS, Settings
from diffbench.core.errors import ConfigError
from diffbench.diffusion.config import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
OWNERS = {"bench/settings.py", "diffusion/config.py"}
SETTINGS = {f.name for c in settings.CONCERNS for f in dataclasses.fields(c)} | \
    {f.name for f in dataclasses.fields(TrainConfig)}
# (module, name): why the literal there is not a default of the setting of that name
NOT_THE_SETTING = {
    ("models/pipelines/spec.py", "guidance"): "a pipeline preset's own guidance scale, from its paper",
    ("models/pipelines/spec.py", "steps"): "a pipeline preset's own sampling steps, from its paper",
    ("models/pipelines/spec.py", "prediction"): "what a pipeline stage predicts, from its paper",
    ("diffbench/cli/commands/quality.py", "seed"): "the seed of KID's random subsets",
    ("diffbench/cli/commands/quality.py", "batch_size"): "images per detector batch",
    ("bench/settings.py", "batch_size"): "SampleJob: images per sampling batch of 'diffbench sample'",
    ("diffbench/api.py", "seed"): "fid(): the seed of KID's random subsets",
    ("diffbench/api.py", "batch_size"): "fid(): images per detector batch",
}
# library functions below the harness take their own arguments (the harness always passes the setting's value)
LIBRARIES = ("models", "metrics", "diffusion", "reports")


def _literal(node: ast.AST | None) -> bool:
    if isinstance(node, ast.UnaryOp):
        node = node.operand
    if isinstance(node, (ast.Tuple, ast.List)):
        return all(_literal(e) for e in node.elts)
    return isinstance(node, ast.Constant) and node.value is not None  # None: "not given", looked up elsewhere


def second_definitions(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).as_posix()
    library = rel.startswith(LIBRARIES)
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not library:
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults, strict=True))
            pairs += [(x, d) for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
            found += [(node.lineno, x.arg) for x, d in pairs if x.arg in SETTINGS and _literal(d)]
        elif isinstance(node, ast.ClassDef):
            found += [(b.lineno, b.target.id) for b in node.body if isinstance(b, ast.AnnAssign)
                      and isinstance(b.target, ast.Name) and b.target.id in SETTINGS and _literal(b.value)]
        elif isinstance(node, ast.Call):
            f = node.func
            if isinstance(f, ast.Attribute) and f.attr in ("get", "setdefault", "pop") and len(node.args) == 2 \
                    and isinstance(node.args[0], ast.Constant) and node.args[0].value in SETTINGS \
                    and _literal(node.args[1]):
                found.append((node.lineno, node.args[0].value))
            flags = [a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("--")]
            name = flags[0][2:].replace("-", "_") if flags else None
            found += [(node.lineno, name) for k in node.keywords
                      if k.arg == "default" and name in SETTINGS and _literal(k.value)]
    return [f"{rel}:{line} {name}" for line, name in found if (rel, name) not in NOT_THE_SETTING]


def test_no_setting_has_a_second_default():
    files = [p for d in ("bench", "models", "metrics", "reports", "diffusion", "diffbench/core", "diffbench/cli")
             for p in (ROOT / d).rglob("*.py")] + [ROOT / "diffbench" / "api.py"]
    bad = [hit for p in files if p.relative_to(ROOT).as_posix() not in OWNERS for hit in second_definitions(p)]
    assert not bad, "a setting's default written outside bench/settings.py or diffusion/config.py: " + "; ".join(bad)


def test_the_check_finds_a_second_default(tmp_path):
    """The scan is not vacuous: a module that writes lr_warmup's default again is caught."""
    fake = ROOT / "bench" / "_second_default_probe.py"
    fake.write_text("def f(lr_warmup: int = 0):\n    return lr_warmup\n\n\nx = {}.get('ema_decay', 0.9999)\n")
    try:
        assert second_definitions(fake) == ["bench/_second_default_probe.py:1 lr_warmup",
                                            "bench/_second_default_probe.py:5 ema_decay"]
    finally:
        fake.unlink()


def test_every_default_passes_its_own_check():
    for c in settings.CONCERNS:
        for f in dataclasses.fields(c):
            check, expected = SETTING_KEYS[f.name]
            value = list(f.default) if isinstance(f.default, tuple) else f.default
            if value is None:  # optional (accept): absent unless given
                continue
            assert check(value), f"{c.__name__}.{f.name} = {f.default!r} is not {expected}"


def test_training_settings_share_the_training_loops_defaults():
    cfg = DEFAULTS.training.train_config(seed=DEFAULTS.measurement.seed)
    for name in ("lr", "ema", "ema_std", "ema_decay", "lr_warmup", "prediction", "seed"):
        assert getattr(cfg, name) == TrainConfig.__dataclass_fields__[name].default, name
    assert cfg.batch_size == TrainConfig.__dataclass_fields__["batch_size"].default


def test_flat_keys_reach_their_concern():
    s = Settings().updated({"lr": 0.5, "batch_sizes": [1, 2], "devices_per_case": 2, "scheduler": "ddpm", "x": 1})
    assert s.training.lr == 0.5 and s.measurement.batch_sizes == (1, 2) and s.placement.devices_per_case == 2
    assert s.sampling.scheduler == "ddpm" and s.get("lr") == 0.5
    assert s.training.ema == DEFAULTS.training.ema  # untouched keys keep their defaults
    assert set(SETTING_KEYS) == {f.name for c in settings.CONCERNS for f in dataclasses.fields(c)}


def test_a_bad_setting_names_the_key_and_what_is_expected(tmp_path):
    from diffbench.bench import suites

    with pytest.raises(ConfigError, match=r"defaults\.lr_warmup: expected a non-negative integer, got -1"):
        suites.parse("[defaults]\nlr_warmup = -1\n[[sweeps]]\npresets = ['DiT-S/8']\n", "s.toml", "s")
