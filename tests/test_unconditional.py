"""Unconditional systems (#28): diffusers DDPMPipeline and LDMPipeline directories, saved here as releases are, are
counted, timed and scored by an ``unconditional`` protocol against a digits reference, in a suite, with accuracy
bands applied; a conditioned pipeline, or a checkpoint sized with a condition, is refused by such a protocol in one
line, and an unconditional backbone checkpoint is scored by it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.test_pretrained import _pngs, _save_images

SUITE = """
name = "uncond"
[protocols.digits-uncond]
kind = "unconditional"
samples = 16
reference = "digits"
detector = "digits"
sample_steps = 5
save_samples = "saved"

[defaults]
batch_sizes = [8]
warmup = 0
repeats = 2
measure = ["counts", "speed", "quality"]
{accept}

[[sweeps]]
pipelines = [{pipelines}]
protocol = "digits-uncond"
"""


def tiny_ldm(path: Path) -> Path:
    """An LDMPipeline (LDM's unconditional pipeline, as CompVis/ldm-celebahq-256 ships): VQ autoencoder, U-Net, DDIM."""
    from diffusers import DDIMScheduler, LDMPipeline, UNet2DModel, VQModel

    torch.manual_seed(1)
    vq = VQModel(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                 up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16), layers_per_block=1,
                 latent_channels=3, norm_num_groups=8, num_vq_embeddings=16, vq_embed_dim=3, sample_size=8)
    unet = UNet2DModel(sample_size=4, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    LDMPipeline(vqvae=vq, unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000)).save_pretrained(str(path))
    return path


def tiny_ddpm(path: Path) -> Path:
    """A DDPMPipeline (DDPM's own pipeline class, as google/ddpm-cifar10-32 ships) of a 16-channel U-Net on 8x8."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(16, 32),
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       norm_num_groups=8)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000)).save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from diffbench.diffusion import datasets

    root = tmp_path_factory.mktemp("uncond")
    tiny_ddpm(root / "ddpm-tiny")
    tiny_ldm(root / "ldm-tiny")
    _save_images(datasets.digits(64).images[:32], root / "digits")
    return root


def test_ddpm_and_ldm_pipelines_are_counted_timed_and_scored_by_an_unconditional_protocol(world):
    import diffbench

    suite = world / "s.toml"
    suite.write_text(SUITE.format(accept="accept = { fid = [0, 1000] }", pipelines='"ddpm-tiny", "ldm-tiny"'))
    run = diffbench.run(str(suite), world / "run", device="cpu")
    assert run.statuses == {"ok": 2}, run.records[["metric", "status", "error"]].to_string()
    assert set(run.records["family"]) == {"diffusers:DDPMPipeline", "diffusers:LDMPipeline"}
    metrics = set(run.records["metric"])
    assert {"fid[digits-uncond:digits/embedded]", "latency_ms", "params"} <= metrics
    fid = run.records[run.records["metric"] == "fid[digits-uncond:digits/embedded]"].iloc[0]
    assert fid["status"] == "ok" and fid["value"] > 0
    case = diffbench.plan(str(suite), "cpu")[0]
    saved = _pngs(world / "saved" / case.case_id)
    assert saved.shape == (16, 8, 8, 3)
    # the same images by hand: the pipeline, image k seeded by (seed, k), batches of 8
    from diffbench.diffusion.sampling import generators
    from diffbench.models.pretrained import call_arguments, inspect_dir, load_dir, to_uint8

    info = inspect_dir(world / "ddpm-tiny")
    pipe = load_dir(str(world / "ddpm-tiny"), "own", "cpu")
    first = to_uint8(pipe(**call_arguments(pipe, info, 8, None, None, 5, 1.0, generators(0, list(range(8))))).images)
    assert (first.permute(0, 2, 3, 1).numpy().astype(int) - saved[:8].astype(int)).__abs__().max() <= 1


def test_an_accuracy_band_gates_the_unconditional_fid(world):
    import diffbench

    suite = world / "gated.toml"
    suite.write_text(SUITE.format(accept="accept = { fid = [0, 0.001] }", pipelines='"ddpm-tiny"'))  # out of reach
    run = diffbench.run(str(suite), world / "gated", device="cpu")
    assert run.statuses == {"inaccurate": 1}
    [row] = run.records[run.records["metric"] == "case"].itertuples()
    assert row.status == "inaccurate" and "fid[digits-uncond:digits/embedded]" in row.error


def test_an_unconditional_protocol_refuses_a_conditioned_system_in_one_line(world, tmp_path):
    import diffbench
    from diffbench.core.errors import UserError
    from tests.pretrained_fixtures import tiny_sd

    tiny_sd(world / "models")
    text = SUITE.format(accept="", pipelines='"models/sd"')
    (world / "sd.toml").write_text(text)
    with pytest.raises(UserError, match="is conditioned on text; protocol digits-uncond is unconditional"):
        diffbench.plan(str(world / "sd.toml"), "cpu")
    bad = SUITE.format(accept="", pipelines='"ddpm-tiny"').replace('kind = "unconditional"',
                                                                'kind = "unconditional"\nclasses = 10')
    (world / "bad.toml").write_text(bad)
    with pytest.raises(UserError, match="classes and guide_channels apply to a class protocol"):
        diffbench.plan(str(world / "bad.toml"), "cpu")


BACKBONE = """
name = "uncond-backbone"
[protocols.digits-uncond]
kind = "unconditional"
samples = 8
reference = "digits"
detector = "digits"
sample_steps = 4
scheduler = "adm-ddim"

[defaults]
batch_sizes = [4]
measure = ["quality"]

[[sweeps]]
families = ["dit"]
params = ["0.35M"]
input_shapes = ["3x8x8"]
cond = "{cond}"
tolerance = 0.1
checkpoint = "dit.pt"
protocol = "digits-uncond"
"""


def test_an_unconditional_backbone_checkpoint_is_scored_and_a_conditioned_one_refused(world):
    import diffbench
    from diffbench.core.errors import UserError

    config = diffbench.match("dit", params="0.35M", input_shape="3x8x8", cond="none", tolerance=0.1).config
    assert config.num_classes == 0
    torch.manual_seed(0)
    torch.save(config.build().state_dict(), world / "dit.pt")
    (world / "b.toml").write_text(BACKBONE.format(cond="none"))
    run = diffbench.run(str(world / "b.toml"), world / "b-run", device="cpu")
    assert run.statuses == {"ok": 1}, run.records[["metric", "status", "error"]].to_string()
    assert "fid[digits-uncond:digits/embedded]" in set(run.records["metric"])
    (world / "c.toml").write_text(BACKBONE.format(cond="class"))
    with pytest.raises(UserError, match='protocol digits-uncond is unconditional; a checkpoint it scores is sized'):
        diffbench.plan(str(world / "c.toml"), "cpu")
