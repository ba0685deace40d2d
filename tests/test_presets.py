"""Generated from the preset registry: every preset builds on meta and counts exactly."""

import pytest

from diffbench import models
from diffbench.models.presets import PRESETS

EXACT = [n for n, p in PRESETS.items() if "params" in p.reference]
ABLATION = [n for n, p in PRESETS.items() if "paper_params" in p.reference]


@pytest.mark.parametrize("name", EXACT)
def test_params_equal_reference_exactly_and_gmacs_within_0_1_percent(name):
    ref = PRESETS.get(name).reference
    c = models.count(name)
    assert c.params == ref["params"]
    assert c.params_trainable == ref["params_trainable"]
    assert c.gmacs == pytest.approx(ref["gmacs"], rel=1e-3)
    assert c.flops == pytest.approx(2e9 * c.gmacs)
    assert sum(c.params_by_module.values()) == c.params


@pytest.mark.parametrize("name", ABLATION)
def test_dit_ablation_matches_paper_within_half_a_percent(name):
    ref = PRESETS.get(name).reference
    c = models.count(name)
    assert c.params == pytest.approx(ref["paper_params"], rel=5e-3)
    assert c.gmacs == pytest.approx(ref["paper_gflops"], rel=5e-3)


def test_dit_trainable_excludes_frozen_pos_embed():
    c = models.count("DiT-XL/2")
    assert c.params - c.params_trainable == 256 * 1152  # the fixed sin-cos position embedding
    assert set(c.params_by_module) >= {"x_embedder", "t_embedder", "y_embedder", "blocks", "final_layer", "(own)"}


def test_meta_build_allocates_nothing():
    net = models.build("SDXL", device="meta")
    assert all(p.is_meta for p in net.parameters())


def test_counts_are_independent_of_device_pitfall():
    # On CPU the fused SDPA kernel is invisible to FlopCounterMode; counting forces the math path,
    # so a real CPU forward counts the same as the meta one.
    import torch

    from diffbench.metrics.counting import count_flops
    from diffbench.models.families import FAMILIES

    cfg = models.resolve("DiT-S/8")
    fam = FAMILIES.get("dit")
    net = cfg.build().eval()
    inputs = fam.make_inputs(cfg, 1, torch.device("cpu"), torch.float32)
    with torch.no_grad():
        cpu = count_flops(lambda: fam.denoise(net, inputs))
    assert cpu == models.count("DiT-S/8").flops
