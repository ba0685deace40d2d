"""Suites: built-ins load and expand; every kind of bad suite is one line naming file and key."""

import dataclasses
from pathlib import Path

import pytest

from diffbench.bench import expansion, suites
from diffbench.core.errors import ConfigError

GOOD = """
name = "t"
[defaults]
batch_sizes = [1, 2]
measure = ["counts"]
[[sweeps]]
presets = ["DiT-S/8", "U-ViT-S/2"]
precisions = ["fp32", "bf16"]
"""


def test_builtin_suites_load():
    names = {s.name for s in suites.builtin_suites()}
    assert {"smoke", "dit-table", "matched", "gpu-check"} <= names
    table = suites.load("dit-table")
    assert len(table.sweeps[0].presets) == 12


def test_expansion_is_the_product_and_ids_are_stable(tmp_path: Path):
    p = tmp_path / "t.toml"
    p.write_text(GOOD)
    cases = expansion.expand(suites.load(str(p)), "cpu")
    assert len(cases) == 2 * 2 * 2
    assert len({c.case_id for c in cases}) == 8
    again = expansion.expand(suites.load(str(p)), "cpu")
    assert [c.case_id for c in cases] == [c.case_id for c in again]
    assert cases[0].name == "DiT-S/8/b1/fp32"
    assert cases[0].config["measure"] == ["counts"] and cases[0].config["device"] == "cpu"
    # the timeout is not part of a case's identity; the batch size is
    spec = cases[0].spec
    assert dataclasses.replace(spec, timeout_s=1).case_id == cases[0].case_id
    assert dataclasses.replace(spec, batch_size=3).case_id != cases[0].case_id


BAD = [
    ("unknown key", GOOD.replace("batch_sizes", "batch_size"), "defaults.batch_size: unknown key"),
    ("wrong type", GOOD.replace("[1, 2]", '"2"'), "defaults.batch_sizes: expected a non-empty list of positive"),
    ("unknown family", '[[sweeps]]\nfamilies = ["ditt"]\nparams = ["1M"]\n',
     "sweeps[0].families: unknown family 'ditt'"),
    ("empty list", GOOD.replace('presets = ["DiT-S/8", "U-ViT-S/2"]', "presets = []"), "sweeps[0].presets: empty list"),
    ("negative batch", GOOD.replace("[1, 2]", "[1, -2]"),
     "defaults.batch_sizes: expected a non-empty list of positive"),
    ("toml syntax", GOOD.replace("[defaults]", "[defaults"), "TOML syntax error"),
    ("unknown preset", GOOD.replace("DiT-S/8", "DiT-S/9"), "did you mean"),
    ("no sweeps", 'name = "x"\n', "sweeps: expected one or more"),
    ("both", '[[sweeps]]\nfamilies = ["dit"]\npresets = ["DiT-S/2"]\nparams = ["1M"]\n',
     "exactly one of families, presets or pipelines"),
    ("bad precision", GOOD.replace('["fp32", "bf16"]', '["fp8"]'), "precisions: expected a non-empty list of fp32"),
]


@pytest.mark.parametrize("label,text,fragment", BAD, ids=[b[0] for b in BAD])
def test_bad_suites_are_one_line_errors(cli, tmp_path: Path, label, text, fragment):
    p = tmp_path / "bad.toml"
    p.write_text(text)
    proc = cli("run", str(p), "--dry-run")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert str(p) in lines[0] and fragment in lines[0], lines[0]


def test_missing_suite_file(cli):
    proc = cli("run", "no/such/suite.toml", "--dry-run")
    assert proc.returncode == 2 and "no suite 'no/such/suite.toml'" in proc.stderr and "smoke" in proc.stderr


def test_toml_syntax_error_names_the_line(tmp_path: Path):
    p = tmp_path / "bad.toml"
    p.write_text("name = 'x'\n[defaults\n")
    with pytest.raises(ConfigError, match=r"line 2"):
        suites.load(str(p))


def test_dry_run_lists_cases(cli):
    proc = cli("run", "dit-table", "--dry-run", "--device", "cpu")
    assert proc.returncode == 0
    assert "DiT-XL/2/b32/bf16" in proc.stdout and "24 case(s) on cpu" in proc.stdout


def test_only_that_matches_nothing(cli):
    proc = cli("run", "dit-table", "--dry-run", "--only", "nothing*")
    assert proc.returncode == 2 and "matches none" in proc.stderr


def test_cuda_device_without_gpu(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    proc = cli("run", "smoke", "--dry-run", "--device", "cuda")
    assert proc.returncode == 2 and "no CUDA device" in proc.stderr


def test_a_training_compute_budget_gives_each_backbone_its_own_steps(tmp_path):
    """train_flops matches training compute across sizes and families: each case trains the steps that spend it."""
    import math

    import diffbench

    p = tmp_path / "flops.toml"
    p.write_text("""
name = "flops"
[defaults]
measure = ["counts", "train"]
train_flops = 1e11
train_batch = 16
[[sweeps]]
families = ["dit", "unet-adm"]
params = ["0.7M", "1.4M"]
input_shapes = ["1x8x8"]
tolerance = 0.1
""")
    cases = diffbench.plan(str(p), "cpu")
    steps = {}
    for c in cases:
        flops = diffbench.count(c.spec.model.family, **c.spec.model.config).flops
        steps[c.name] = c.spec.training.train_steps
        assert steps[c.name] == math.ceil(1e11 / (3 * flops * 16)), c.name
        assert c.config["train_flops"] == 1e11
    assert len(set(steps.values())) == 4  # four models, four budgets of steps
    bad = p.read_text().replace('families = ["dit", "unet-adm"]\nparams = ["0.7M", "1.4M"]\ninput_shapes = ["1x8x8"]\n'
                                'tolerance = 0.1', 'pipelines = ["dit"]\nscale = "tiny"')
    p.write_text(bad)
    with pytest.raises(diffbench.UserError, match="train_flops applies to backbone sweeps"):
        diffbench.plan(str(p), "cpu")
