"""Generated from the family registry: a tiny config of every family runs forward and backward on CPU."""

import dataclasses

import pytest
import torch

from diffbench import models
from diffbench.core.errors import BadInputError, ConfigError
from diffbench.models.families import FAMILIES

# conditioning variants beyond each family's tiny default
VARIANTS = {
    "dit": [dict(conditioning=c) for c in ("adaLN", "cross-attention", "in-context")] + [dict(num_classes=0)],
    "uvit": [dict(num_classes=-1), dict(num_classes=-1, clip_dim=24, num_clip_token=7), dict(conv=False)],
    "vit": [dict(num_classes=0), dict(learn_sigma=True)],
    "unet-adm": [dict(num_classes=0), dict(concat_channels=3), dict(resblock_updown=False, use_scale_shift_norm=False)],
    "unet-ldm": [dict(num_classes=10), dict(concat_channels=4)],
    "unet-glide": [dict(class_embed="identity"), dict(class_embed="timestep", concat_channels=3, pooled_text=True),
                   dict(class_embed="none", text_proj_dim=24)],
}
CASES = [(f, {}) for f in FAMILIES.names()] + [(f, v) for f, vs in VARIANTS.items() for v in vs]


def expected_out_channels(cfg) -> int:
    if hasattr(cfg, "out_channels"):  # U-Nets
        return cfg.out_channels
    c = getattr(cfg, "in_channels", None) or cfg.in_chans
    return c * (2 if getattr(cfg, "learn_sigma", False) else 1)


@pytest.mark.parametrize("family,overrides", CASES, ids=[f"{f}-{v}" if v else f for f, v in CASES])
def test_tiny_forward_backward_shapes(family, overrides):
    fam = FAMILIES.get(family)
    cfg = dataclasses.replace(fam.tiny(), **overrides)
    torch.manual_seed(0)
    net = cfg.build().train()
    inputs = fam.make_inputs(cfg, 2, torch.device("cpu"), torch.float32)
    out = fam.denoise(net, inputs)
    c, h, w = fam.input_shape(cfg)
    assert out.shape == (2, expected_out_channels(cfg), h, w)
    assert torch.isfinite(out).all()
    loss = (out * torch.randn_like(out)).sum()  # not out**2: DiT's zero-init output would give zero grads
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    # counting works on the same config and agrees with the real module
    assert models.count(cfg).params == sum(p.numel() for p in net.parameters())


def test_dit_label_dropout_uses_the_null_class():
    cfg = FAMILIES.get("dit").tiny()
    net = cfg.build()
    y = torch.tensor([1, 2, 3])
    dropped = net.y_embedder.token_drop(y, force_drop_ids=torch.tensor([1, 0, 1]))
    assert dropped.tolist() == [cfg.num_classes, 2, cfg.num_classes]
    assert net.y_embedder.embedding_table.num_embeddings == cfg.num_classes + 1


def test_dit_adaln_zero_starts_as_identity_and_outputs_zero():
    cfg = FAMILIES.get("dit").tiny()
    net = cfg.build().eval()
    inputs = FAMILIES.get("dit").make_inputs(cfg, 2, torch.device("cpu"), torch.float32)
    assert torch.count_nonzero(FAMILIES.get("dit").denoise(net, inputs)) == 0  # zeroed final layer
    adaln = dataclasses.replace(cfg, conditioning="adaLN").build()
    assert adaln.blocks[0].adaLN_modulation[-1].weight.abs().sum() > 0  # adaLN: no zero init


def test_uvit_depth_counts_in_and_out_blocks():
    net = models.build("U-ViT-S/2", device="meta")
    assert len(net.in_blocks) == 6 and len(net.out_blocks) == 6  # depth 12 -> 13 blocks
    assert all(b.skip_linear is not None for b in net.out_blocks)
    assert all(b.skip_linear is None for b in net.in_blocks)


def test_vit_has_no_long_skips():
    net = FAMILIES.get("vit").tiny().build()
    assert all(b.skip_linear is None for b in net.blocks)


def test_input_not_divisible_by_patch_is_a_config_error():
    with pytest.raises(ConfigError, match="not divisible by the patch size 4"):
        models.resolve("DiT-S/4", input_size=30)


def test_unknown_override_field():
    with pytest.raises(ConfigError, match="has no field"):
        models.resolve("DiT-S/2", widht=3)


def test_checkpoint_that_does_not_fit(tmp_path):
    small = models.build(FAMILIES.get("dit").tiny())
    path = tmp_path / "small.pt"
    torch.save(small.state_dict(), path)
    other = models.build(dataclasses.replace(FAMILIES.get("dit").tiny(), hidden_size=96, num_heads=3))
    with pytest.raises(BadInputError, match=r"does not fit this model: .*shape mismatch"):
        models.load_checkpoint(other, path)


class Evil:
    def __reduce__(self):
        return (print, ("code executed from a checkpoint",))


def test_pickle_that_needs_code_execution_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"x_embedder.proj.weight": Evil()}, path)
    net = models.build(FAMILIES.get("dit").tiny())
    with pytest.raises(BadInputError, match="refused or unreadable as weights only"):
        models.load_checkpoint(net, path)
    assert "code executed" not in capsys.readouterr().out


def test_safetensors_checkpoint_round_trip(tmp_path):
    from safetensors.torch import save_file

    net = models.build(FAMILIES.get("uvit").tiny())
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "w.safetensors")
    other = models.build(FAMILIES.get("uvit").tiny())
    models.load_checkpoint(other, tmp_path / "w.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values(), strict=True))
