"""match(): every family hits the targets; the count polynomials are exact; bad targets are user errors."""

import json

import pytest

from diffbench import models
from diffbench.core.errors import ConfigError, UnknownNameError
from diffbench.models.families import FAMILIES as REGISTRY
from diffbench.models.quantities import parse_quantity
from diffbench.models.sizing import Conditioning, fit_counts, match, probe

FAMILIES = ["dit", "uvit", "vit", "unet-adm", "unet-ldm"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", [33e6, 130e6, 458e6, 675e6])
def test_latent_targets_within_one_percent(family, target):
    r = match(family, params=target, input_shape=(4, 32, 32))
    assert abs(r.params / target - 1) <= 0.01
    assert r.rel_error == pytest.approx(r.params / target - 1)
    assert models.count(r.config).params == r.params  # reported counts are real counts


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("target", [1e6, 4e6, 16e6])
def test_tiny_pixel_targets_within_two_percent(family, target):
    r = match(family, params=target, input_shape=(3, 32, 32))
    assert abs(r.params / target - 1) <= 0.02


@pytest.mark.parametrize("family", ["dit", "uvit", "unet-adm"])
def test_match_by_gmacs_within_two_percent(family):
    r = match(family, gmacs=6.0, input_shape=(4, 32, 32))
    assert abs(r.gmacs / 6.0 - 1) <= 0.02


def test_paper_sizes_are_found_where_the_paper_has_them():
    # 33M at patch 2 is exactly DiT-S/2's shape: the rules prefer the paper's own proportions
    r = match("dit", params=33e6, input_shape=(4, 32, 32))
    assert (r.config.hidden_size, r.config.depth) == (384, 12)


@pytest.mark.parametrize("family", FAMILIES)
def test_count_polynomials_are_exact_off_the_probe_points(family):
    for s in REGISTRY.get(family).sizing((4, 32, 32), Conditioning())[:2]:
        params, flops = fit_counts(s, "params"), fit_counts(s, "gmacs")
        for w in (s.widths[3], s.widths[-5]):
            d = s.depths(w)[-1]
            exact = models.count(s.make(w, d))
            assert params(w, d) == exact.params
            assert flops(w, d) == exact.flops


@pytest.mark.parametrize("family", ["unet-adm", "unet-ldm"])
def test_unet_params_are_affine_in_res_blocks(family):
    """Sizing probes num_res_blocks 1 and 2 and extrapolates the rest: exact for every structure kind."""
    structures = REGISTRY.get(family).sizing((4, 32, 32), Conditioning())
    deep = [s for s in structures if s.make(32, 0).num_res_blocks >= 3]
    assert deep
    for s in deep[:: max(1, len(deep) // 3)]:  # a spread of the structure kinds (probing each costs ~1 s)
        for w in (s.probe_widths[0], s.widths[10]):
            config = s.make(w, 0)
            assert probe(config, False, small=True)[0] == models.count(config).params, (config, w)


def test_text_conditioning_is_sized_for_the_families_that_take_it():
    r = match("uvit", params=45e6, input_shape=(4, 32, 32), cond=Conditioning(kind="text"))
    assert r.config.clip_dim == 768 and abs(r.rel_error) <= 0.02
    with pytest.raises(ConfigError, match="class-conditional or unconditional"):
        match("dit", params=45e6, cond=Conditioning(kind="text"))


def test_unreachable_target_names_the_reachable_range():
    with pytest.raises(ConfigError, match=r"no dit config within 2% of 10T params .* reach .* to .* params"):
        match("dit", params=10e12)


def test_patch_that_does_not_divide_the_input():
    with pytest.raises(ConfigError, match="not divisible by the patch size 4"):
        match("dit", params=33e6, input_shape=(4, 30, 30), patch=4)


def test_unknown_family():
    with pytest.raises(UnknownNameError, match="did you mean 'uvit'"):
        match("uvitt", params=1e6)


@pytest.mark.parametrize("text,value", [("33M", 33e6), ("1.5B", 1.5e9), ("6G", 6e9), ("675000000", 6.75e8),
                                        ("4k", 4e3)])
def test_parse_quantity(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["12Q", "", "M", "-3M", "0", "nan"])
def test_parse_quantity_rejects(text):
    with pytest.raises(ConfigError):
        parse_quantity(text)


def test_cli_match_json(cli):
    proc = cli("match", "--families", "dit,vit", "--params", "33M", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["family"] for r in rows] == ["dit", "vit"]
    for r in rows:
        assert {"family", "target", "by", "params", "gmacs", "rel_error", "config"} <= set(r)
        assert r["target"] == 33_000_000 and abs(r["rel_error"]) <= 0.01


@pytest.mark.parametrize("args,fragment", [
    (["--families", "dit", "--params", "12Q"], "'12Q' is not a number"),
    (["--families", "dit", "--params", "10T"], "no dit config within 2%"),
    (["--families", "ditt", "--params", "1M"], "did you mean 'dit'"),
    (["--families", "dit", "--params", "1M", "--input", "4x32"], "is not CxHxW"),
    (["--families", "dit", "--params", "33M", "--input", "4x30x30", "--patch", "4"], "not divisible by the patch"),
    (["--families", "dit", "--by", "gmacs"], "--by gmacs needs --gmacs"),
])
def test_cli_match_bad_input(cli, args, fragment):
    proc = cli("match", *args)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert fragment in proc.stderr and "Traceback" not in proc.stderr


def test_cli_count_json(cli):
    proc = cli("count", "DiT-XL/2", "U-ViT-H/2", "--format", "json")
    rows = json.loads(proc.stdout)
    assert rows[0]["name"] == "DiT-XL/2" and rows[0]["params"] == 675_129_632
    assert rows[0]["params_trainable"] == 674_834_720 and rows[0]["gmacs"] == pytest.approx(118.621, rel=1e-4)
    assert rows[0]["flops"] == pytest.approx(2e9 * rows[0]["gmacs"])
    assert rows[1]["params"] == 500_832_016


def test_cli_count_unknown_preset(cli):
    proc = cli("count", "DiT-XL/3")
    assert proc.returncode == 2 and "did you mean" in proc.stderr and "'DiT-XL/2'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_unet_norm_groups_keep_at_least_four_channels_and_the_papers_32():
    """gcd(width, 32) gave a 32-wide level one channel per GroupNorm group (an instance norm): a sized U-Net of that
    width scored FID 366 where its neighbours scored 143 and 29 (digits, 8x8, 400 steps); 4 channels a group
    scored 64."""
    from diffbench.models.shapes import groups

    for w in range(4, 1025, 4):
        g = groups(w)
        assert w % g == 0 and 32 % g == 0 and w // g >= 4, w
    assert [groups(w) for w in (128, 192, 256, 320, 384)] == [32] * 5  # guided-diffusion's GroupNorm32 at paper widths
    assert groups(32) == 8 and groups(20) == 4


SHAPE_KEYS = {"dit": ("depth", "patch_size"), "vit": ("depth", "patch_size"),
              "unet-adm": ("channel_mult", "num_res_blocks", "attention_resolutions")}
WIDTH = {"dit": "hidden_size", "vit": "hidden_size", "unet-adm": "model_channels"}


@pytest.mark.parametrize("family", sorted(SHAPE_KEYS))
def test_width_series_share_structure_and_depth_and_grow_in_width(family):
    """Sized one by one, ViT on 3x8x8 lands at depth 4, 12 and 4 for 0.7M, 1.4M and 2.8M; as a series every size
    keeps one structure and depth, widths grow with the target, and each count is exact and within tolerance."""
    from diffbench.models.api import config_dict, count
    from diffbench.models.sizing import match_series

    targets = [0.7e6, 1.4e6, 2.8e6]
    found = match_series(family, targets, "params", (3, 8, 8), Conditioning("class", 10), tolerance=0.1)
    configs = [config_dict(r.config) for r in found]
    for key in SHAPE_KEYS[family]:
        assert len({json.dumps(c[key]) for c in configs}) == 1, key
    widths = [c[WIDTH[family]] for c in configs]
    assert widths == sorted(widths) and len(set(widths)) == 3
    for r, t in zip(found, targets, strict=True):
        assert r.target == t and abs(r.rel_error) <= 0.1
        assert r.params == count(r.config).params and r.rel_error == pytest.approx(r.params / t - 1)


def test_width_series_misses_are_refused_and_suites_take_the_key(tmp_path, cli):
    from diffbench.bench import expansion, suites
    from diffbench.models.sizing import match_series

    with pytest.raises(ConfigError, match="no dit series within 1%"):
        match_series("dit", [0.7e6, 1.4e6], "params", (3, 8, 8), Conditioning("class", 10), tolerance=0.01)
    with pytest.raises(ConfigError, match="no structure with a distinct width for every target"):
        match_series("dit", [1.00e6, 1.01e6], "params", (3, 8, 8), Conditioning("class", 10), tolerance=0.5)
    body = ('[[sweeps]]\nfamilies = ["vit"]\nparams = ["0.7M", "1.4M", "2.8M"]\ninputs = ["3x8x8"]\nclasses = 10\n'
            'tolerance = 0.1\nmeasure = ["counts"]\n')
    (tmp_path / "w.toml").write_text(body + 'scaling = "width"\n')
    (tmp_path / "f.toml").write_text(body)
    depths = {name: {c.spec.model.config["depth"] for c in expansion.expand(suites.load(str(tmp_path / name)), "cpu")}
              for name in ("w.toml", "f.toml")}
    assert len(depths["w.toml"]) == 1 and len(depths["f.toml"]) > 1
    (tmp_path / "p.toml").write_text('[[sweeps]]\npresets = ["DiT-S/2"]\nscaling = "width"\n')
    proc = cli("run", str(tmp_path / "p.toml"), "--dry-run")
    assert proc.returncode == 2 and "scaling: applies to families" in proc.stderr
    proc = cli("match", "--families", "vit", "--params", "0.7M,1.4M,2.8M", "--input", "3x8x8", "--classes", "10",
               "--tolerance", "0.1", "--scaling", "width", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    assert len({r["config"]["depth"] for r in json.loads(proc.stdout)}) == 1
