"""The interface a new user meets: one spelling per option, suite settings overridden from the command line,
API mistakes as one-line errors, the API visible to dir(), and counts that say what they counted."""

import json

import pytest

import diffbench
from diffbench.bench import overrides, suites

SUITE = """
name = "two"
[defaults]
measure = ["counts"]
train_steps = 50
[[sweeps]]
name = "small"
families = ["dit"]
params = ["0.2M"]
tolerance = 0.05
{shapes} = ["1x8x8"]
[[sweeps]]
families = ["uvit", "vit"]
params = ["0.2M"]
tolerance = 0.05
input_shapes = ["1x8x8"]
"""


def test_settings_are_overridden_by_name_family_or_default(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(SUITE.format(shapes="input_shapes"))
    s = suites.load(str(path), {"sweeps.small.train_steps": 7, "sweeps.vit.lr": 0.5, "samples": 64})
    small, rest = s.sweeps
    assert small.settings.training.train_steps == 7 and rest.settings.training.train_steps == 50
    assert rest.settings.training.lr == 0.5 and small.settings.training.lr != 0.5  # the sweep holding vit
    assert small.settings.training.samples == rest.settings.training.samples == 64
    assert s.overrides == {"sweeps.small.train_steps": 7, "sweeps.vit.lr": 0.5, "samples": 64}
    every = suites.load(str(path), {"sweeps.*.train_steps": 3})
    assert {sw.settings.training.train_steps for sw in every.sweeps} == {3}
    with pytest.raises(diffbench.UserError, match="no sweep is named 'unet' or includes it"):
        suites.load(str(path), {"sweeps.unet.train_steps": 3})
    with pytest.raises(diffbench.UserError, match="defaults.train_steps: expected a positive integer"):
        suites.load(str(path), {"train_steps": 0})
    assert overrides.parse_assignments(["a=1", "b=ddim", "c=[1, 2]", "d=\"x y\"", "e=0.5"]) == {
        "a": 1, "b": "ddim", "c": [1, 2], "d": "x y", "e": 0.5}
    with pytest.raises(diffbench.UserError, match="expected KEY=VALUE"):
        overrides.parse_assignments(["train_steps"])


def test_set_on_the_command_line_changes_the_cases_and_is_recorded(tmp_path, cli):
    path = tmp_path / "two.toml"
    path.write_text(SUITE.format(shapes="input_shapes"))
    plain = {c.name: c.case_id for c in diffbench.plan(str(path), "cpu")}
    changed = {c.name: c.case_id for c in diffbench.plan(str(path), "cpu", overrides={"batch_sizes": [2]})}
    assert set(plain) != set(changed) and all("/b2/" in n for n in changed)
    proc = cli("run", str(path), "--out", str(tmp_path / "run"), "--set", "batch_sizes=[3]", "--only", "dit*",
               "--no-progress")
    assert proc.returncode == 0, proc.stderr
    resolved = json.loads((tmp_path / "run" / "suite.resolved.json").read_text())
    assert resolved["overrides"] == {"batch_sizes": [3]} and resolved["cases"][0]["config"]["batch_size"] == 3


def test_the_old_spelling_of_input_shapes_still_reads_and_both_at_once_is_refused(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text(SUITE.format(shapes="inputs"))
    assert suites.load(str(path)).sweeps[0].input_shapes == ("1x8x8",)
    path.write_text(SUITE.format(shapes="inputs").replace('inputs = ["1x8x8"]', 'inputs = ["1x8x8"]\n'
                                                                               'input_shapes = ["1x8x8"]'))
    with pytest.raises(diffbench.UserError, match="give input_shapes only"):
        suites.load(str(path))


def test_api_arguments_of_the_wrong_type_are_one_line_errors():
    with pytest.raises(diffbench.UserError, match=r"diffbench.match\(\): family must be str, got list \['dit'\]"):
        diffbench.match(["dit"], params="1M")
    with pytest.raises(diffbench.UserError, match=r"count_pipeline\(\): scale must be str, got int 3"):
        diffbench.count_pipeline("ldm", scale=3)
    with pytest.raises(diffbench.UserError, match=r"diffbench.plan\(\): got an unexpected keyword argument"):
        diffbench.plan("smoke", devic="cpu")
    with pytest.raises(diffbench.UserError, match="tolerance must be float, got bool"):
        diffbench.match("dit", params="1M", tolerance=True)


def test_match_takes_scaling_as_match_many_does():
    one = diffbench.match("dit", params="1M", input_shape="1x8x8", tolerance=0.1, scaling="width")
    [many] = diffbench.match_many(["dit"], [1e6], "params", "1x8x8", tolerance=0.1, scaling="width")
    assert one.config == many.config
    with pytest.raises(diffbench.UserError, match="scaling must be one of free, width"):
        diffbench.match("dit", params="1M", scaling="wide")


def test_dir_shows_the_api():
    names = dir(diffbench)
    assert {"run", "report", "match", "count", "compare", "baseline", "benchmark_module"} <= set(names)


def test_count_says_what_it_counted(cli):
    vit = cli("count", "vit")
    assert vit.returncode == 0 and "note: vit is a family: counted its default config (90.74M params)" in vit.stderr
    dit = cli("count", "dit", "--format", "json")
    assert dit.returncode == 0 and "note: dit names the dit pipeline here" in dit.stderr
    json.loads(dit.stdout)  # the notes stay off stdout: JSON output is still JSON
    assert cli("count", "DiT-S/2").stderr == ""
    old = cli("match", "--families", "dit", "--params", "1M", "--input", "1x8x8", "--tolerance", "0.1")
    new = cli("match", "--families", "dit", "--params", "1M", "--input-shape", "1x8x8", "--tolerance", "0.1")
    assert old.returncode == new.returncode == 0 and old.stdout == new.stdout


def test_run_prints_a_json_summary_and_quiet_and_verbose_set_the_messages(tmp_path, cli):
    path = tmp_path / "two.toml"
    path.write_text(SUITE.format(shapes="input_shapes"))
    proc = cli("run", str(path), "--out", str(tmp_path / "run"), "--only", "dit*", "--format", "json", "-v")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["cases"] == 1 and summary["this_call"] == {"ok": 1} and summary["exit_status"] == 0
    assert "diffbench: debug: dit@0.2M/1x8x8/b1/fp32: ok" in proc.stderr  # --verbose: each case's end
    quiet = cli("-q", "count", "vit")
    assert quiet.returncode == 0 and quiet.stderr == ""  # the note is suppressed
    assert "diffbench: note: vit is a family" in cli("count", "vit").stderr
