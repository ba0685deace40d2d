"""A diffusers directory's config is untrusted until checked (#29): every field diffbench reads is validated
before diffusers builds anything, and what diffusers itself raises while loading is one line naming the
directory. A fuzzer drives config fields through the directory loader: only UserError escapes."""

import contextlib
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import diffbench
from tests.pretrained_fixtures import tiny_sd


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    return tiny_sd(tmp_path_factory.mktemp("sd") / "sd")


def edited(sd: Path, dest: Path, part: str, **fields) -> Path:
    shutil.copytree(sd, dest)
    cfg_path = dest / part / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(fields)
    cfg_path.write_text(json.dumps(cfg))
    return dest


@pytest.mark.parametrize("part,fields,says", [
    ("unet", {"sample_size": "64"}, "sample_size is '64'"),
    ("unet", {"sample_size": []}, "sample_size is '[]'"),
    ("unet", {"sample_size": None}, "sample_size is 'None'"),
    ("unet", {"sample_size": 10**12}, "sample_size is '1000000000000'"),
    ("unet", {"out_channels": "three"}, "out_channels is 'three'"),
    ("vae", {"block_out_channels": 128}, "block_out_channels is '128'"),
    ("vae", {"block_out_channels": [8] * 20}, "block_out_channels"),
    ("unet", {"sample_size": 4096}, "at most 16384"),  # with the VAE set to 4 levels below: 4096 x 8 px a side
])
def test_config_fields_are_checked_before_anything_is_built(sd, tmp_path, cli, part, fields, says):
    bad = edited(sd, tmp_path / "bad", part, **fields)
    if says == "at most 16384":
        vae = json.loads((bad / "vae" / "config.json").read_text())
        vae["block_out_channels"] = [8] * 4  # a factor of 8: 32768 px a side
        (bad / "vae" / "config.json").write_text(json.dumps(vae))
    proc = cli("sample", str(bad), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
    assert str(bad) in lines[0] and "Traceback" not in proc.stderr


def test_what_diffusers_raises_while_loading_is_one_line_naming_the_directory(sd, tmp_path, cli):
    bad = edited(sd, tmp_path / "bad", "unet", block_out_channels="wide")
    proc = cli("sample", str(bad), "--n", "1", "--steps", "1", "--out", str(tmp_path / "s"))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "not loadable as" in lines[0] and str(bad) in lines[0]


leaf = st.one_of(st.none(), st.booleans(), st.integers(-2, 10**13), st.floats(allow_nan=True), st.text(max_size=4))
values = st.one_of(leaf, st.lists(leaf, max_size=4), st.dictionaries(st.text(max_size=3), leaf, max_size=2))
FIELDS = [("unet", "sample_size"), ("unet", "out_channels"), ("unet", "in_channels"), ("unet", "num_class_embeds"),
          ("vae", "block_out_channels"), ("vae", "out_channels"), ("unet", "_class_name")]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=values)
def test_fuzzed_config_fields_through_the_directory_loader(sd, tmp_path_factory, field, value):
    from diffbench.models.pretrained import inspect_dir

    bad = edited(sd, tmp_path_factory.mktemp("fuzz") / "d", field[0], **{field[1]: value})
    with contextlib.suppress(diffbench.UserError):  # anything else escaping is the failure
        info = inspect_dir(bad)
        assert 1 <= info.output_shape[1] <= 16384 and 1 <= info.output_shape[0] <= 64
