"""Pretrained systems: a diffusers pipeline directory as a suite's system and on the command line, a
diffusers-layout U-Net into a pipeline stage, a backbone checkpoint scored by a protocol, and protocols as data.

Everything is built in the test and saved as releases are (``save_pretrained``, official key names); the
Inception is a random stand-in marked unverified: its FIDs only show that the suite and ``diffbench fid`` agree."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.inception_standins import torch_fidelity_standin
from tests.pretrained_fixtures import tiny_sd, tiny_vae


def _save_images(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, a in enumerate(images.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(a).save(folder / f"{k:04d}.png")
    return folder


def _pngs(folder: Path) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f)) for f in sorted(folder.glob("*.png"))])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A tiny SD directory, a reference folder of procedural shapes, captions, and a stand-in Inception."""
    from diffbench.diffusion import datasets

    root = tmp_path_factory.mktemp("pretrained")
    sd = tiny_sd(root / "models")
    _save_images(datasets.shapes(16, 16, seed=5).images, root / "ref")
    (root / "captions.jsonl").write_text("".join(json.dumps({"caption": c}) + "\n"
                                                 for c in datasets.shapes(12, 16, seed=9).captions or []))
    torch_fidelity_standin(root / "inception-standin.pth")
    return root, sd


SUITE = """
name = "pretrained"
[protocols.tiny-captions]
kind = "captions"
samples = 8
captions = "captions.jsonl"
reference = "ref"
detector = "inception-v3"
mode = "torch-fidelity"
weights = "inception-standin.pth"
allow_unverified = true
clip = "embedded"
sample_steps = 3
guidance = 3.0
save_samples = "saved"

[defaults]
batch_sizes = [4]
warmup = 0
repeats = 2
measure = ["counts", "speed", "quality"]

[[sweeps]]
pipelines = ["models/sd"]
protocol = "tiny-captions"
"""


def test_a_diffusers_directory_is_a_system_counted_timed_and_scored_as_diffbench_fid_scores_it(world, cli):
    import diffbench
    from diffbench.models.pretrained import load_dir

    root, sd = world
    (root / "s.toml").write_text(SUITE)
    [case] = diffbench.plan(str(root / "s.toml"), "cpu")
    assert case.config["model"]["config"]["class_name"] == "StableDiffusionPipeline"
    assert case.spec.sampler.scheduler == "own" and case.spec.sampler.sample_steps == 3  # the protocol's settings
    run = diffbench.run(str(root / "s.toml"), root / "run", device="cpu")
    assert run.statuses == {"ok": 1}, run.records[["metric", "status", "error"]].to_string()
    rec = {r["metric"]: r for r in run.records.to_dict("records")}
    got = {r.metric: r for r in diffbench.load_run(root / "run").records.itertuples()}
    assert set(got) == set(rec)

    # counted per component: the parameters of the modules as loaded, MACs that add up
    pipe = load_dir(sd)
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in pipe.components.items()
              if isinstance(m, torch.nn.Module)}
    records = [json.loads(line) for line in (root / "run" / "records.jsonl").read_text().splitlines()]
    by_metric = {r["metric"]: r for r in records}
    by_component = by_metric["params"]["extra"]["by_component"]
    assert {k: v["params"] for k, v in by_component.items()} == params
    assert by_metric["params"]["value"] == params["unet"]
    assert by_metric["params_all"]["value"] == sum(params.values())
    per_image = by_metric["gmacs_per_image"]["value"]
    assert per_image == pytest.approx(sum(v["gmacs_per_image"] for v in by_component.values()))
    # three steps of two passes (guidance 3) of the one-evaluation count, plus the text encoder and the decoder
    unet = by_component["unet"]["gmacs_per_image"]
    assert unet == pytest.approx(by_metric["gmacs"]["value"] * 3 * 2, rel=1e-9)
    # attention counted too (the fused CPU kernel counted as zero: the text encoder read 38% low): the prompt and the
    # empty prompt of guidance, each one call of the text encoder at its full length
    ids = torch.zeros(1, pipe.tokenizer.model_max_length, dtype=torch.long)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH), torch.no_grad(), \
            torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
        pipe.text_encoder(ids)
    assert by_component["text_encoder"]["gmacs_per_image"] == pytest.approx(2 * counter.get_total_flops() / 2e9)
    assert {"component_ms_per_image[unet]", "component_ms_per_image[text_encoder]",
            "component_ms_per_image[vae.decode]", "latency_ms_unguided"} <= set(by_metric)

    # scored by the protocol: its name and the detector's in the metric, the stand-in marked unverified
    fid = by_metric["fid[tiny-captions:inception-v3/torch-fidelity]"]
    assert fid["extra"]["verified"] is False and fid["extra"]["n_generated"] == 8
    assert "kid[tiny-captions:inception-v3/torch-fidelity]" in by_metric
    assert "clip_score[tiny-captions:shapes-clip]" in by_metric
    saved = root / "saved" / case.case_id
    assert len(list(saved.glob("*.png"))) == 8
    out = cli("fid", str(saved), str(root / "ref"), "--mode", "torch-fidelity", "--weights",
              str(root / "inception-standin.pth"), "--allow-unverified-weights", "--format", "json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["fid"] == fid["value"]  # the same images, the same extraction: equal

    # the report keeps the protocol's FID in a column of its own
    diffbench.report(root / "run")
    md = (root / "run" / "report" / "report.md").read_text()
    assert "fid (tiny-captions:inception-v3/torch-fidelity)" in md
    # a pipeline, not a backbone: in the pipelines' table, out of the backbones' scaling fit
    assert diffbench.load_run(root / "run").cases["pipeline"].tolist() == ["sd"]
    pipelines = md.split("## Pipelines", 1)[1].split("\n## ", 1)[0]
    assert "| sd |" in pipelines


def test_diffbench_sample_takes_a_diffusers_directory_with_per_sample_seeds(world, cli, tmp_path):
    root, sd = world
    caps = root / "captions.jsonl"
    one = cli("sample", str(sd), "--num-samples", "3", "--steps", "2", "--guidance", "2", "--batch-size", "1",
              "--captions-file", str(caps), "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    assert {"unet", "text_encoder", "vae.decode"} <= {line.split()[0] for line in one.stdout.splitlines() if line}
    three = cli("sample", str(sd), "--num-samples", "3", "--steps", "2", "--guidance", "2", "--batch-size", "3",
                "--captions-file", str(caps), "--out", str(tmp_path / "three"))
    assert three.returncode == 0, three.stderr
    a, b = _pngs(tmp_path / "one").astype(int), _pngs(tmp_path / "three").astype(int)
    assert a.shape == (3, 16, 16, 3) and np.abs(a - b).max() <= 1  # image k depends on (seed, k), not the batch
    bad = cli("sample", str(sd), "--checkpoint", "x.pt", "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and "brings its own weights" in bad.stderr and "Traceback" not in bad.stderr


def test_a_diffusers_layout_unet_loads_into_a_pipeline_stage(tmp_path, cli):
    from diffbench.diffusion.pipeline_sampling import sample_pipeline
    from diffbench.models.pipelines import Pipeline, load_unet_into_stage, pipeline_spec

    spec = pipeline_spec("ldm", "tiny", None, 0.02)
    torch.manual_seed(0)
    trained = Pipeline(spec)
    trained.stages["unet"].experts[0].save_pretrained(str(tmp_path / "unet"))  # as diffusers writes a U-Net
    torch.manual_seed(1)
    fresh = Pipeline(spec)
    fresh.load_state_dict({k: v for k, v in trained.state_dict().items() if not k.startswith("stages.")},
                          strict=False)
    load_unet_into_stage(fresh, "unet", tmp_path / "unet")
    for k, v in trained.stages.state_dict().items():
        assert torch.equal(fresh.stages.state_dict()[k], v), k
    tokens = torch.randint(1, 8, (2, spec.text_length))
    a = next(sample_pipeline(trained, 2, tokens, steps=2))
    b = next(sample_pipeline(fresh, 2, tokens, steps=2))
    assert torch.equal(a, b)
    # one that does not fit, and one for a stage that is not there: one line each
    wrong = cli("sample", "ldm", "--scale", "tiny", "--params", "3.1M", "--stage-weights", f"unet={tmp_path / 'unet'}",
                "--out", str(tmp_path / "s"))
    assert wrong.returncode == 2 and "config differs from stage unet" in wrong.stderr, wrong.stderr
    missing = cli("sample", "ldm", "--stage-weights", f"sr={tmp_path / 'unet'}", "--out", str(tmp_path / "s"))
    assert missing.returncode == 2 and "no stage 'sr'" in missing.stderr


BACKBONE_SUITE = """
name = "dit-pretrained"
[protocols.digits-class]
kind = "class"
samples = 10
classes = 10
reference = "digits"
detector = "digits"
sample_steps = 4
scheduler = "ddim"
guidance = 1.5
save_samples = "saved"

[defaults]
batch_sizes = [5]
measure = ["quality"]

[[sweeps]]
presets = ["DiT-S/8"]
checkpoint = "dit.pt"
autoencoder = "vae"
protocol = "digits-class"
"""


def test_a_backbone_checkpoint_is_sampled_decoded_and_scored_by_its_protocol(tmp_path):
    import diffbench
    from diffbench.bench.backbone_subject import PretrainedBackbone, _decoder
    from diffbench.diffusion import datasets
    from diffbench.diffusion.sampling import sample
    from diffbench.models.families import FAMILIES
    from tests.test_checkpoints_in_suites import saved_dit

    model, _ = saved_dit(tmp_path)
    tiny_vae().save_pretrained(str(tmp_path / "vae"))
    _save_images(datasets.digits(64).images[:40], tmp_path / "digits")
    (tmp_path / "s.toml").write_text(BACKBONE_SUITE)
    run = diffbench.run(str(tmp_path / "s.toml"), tmp_path / "run", device="cpu")
    assert run.statuses == {"ok": 1}, run.records[["metric", "status", "error"]].to_string()
    assert "fid[digits-class:digits/embedded]" in set(run.records["metric"])
    [case] = diffbench.plan(str(tmp_path / "s.toml"), "cpu")
    saved = _pngs(tmp_path / "saved" / case.case_id)
    # the same numbers by hand: the saved weights, labels k mod 10, DDIM 4 steps at guidance 1.5, the VAE's decoding
    net = PretrainedBackbone(FAMILIES.get("dit"), model, "class", 1000)
    decode = _decoder(str(tmp_path / "vae"), (4, 32, 32), "cpu")
    latents = torch.cat(list(sample(net, 10, (4, 32, 32), torch.arange(10) % 10, "ddim", 4, 1.5, 0, 5, raw=True)))
    assert saved.shape == (10, 64, 64, 3)
    assert np.abs(decode(latents).permute(0, 2, 3, 1).numpy().astype(int) - saved.astype(int)).max() <= 1


def test_a_class_protocol_must_fit_the_backbone_it_scores(tmp_path):
    import diffbench
    from diffbench.core.errors import UserError
    from tests.test_checkpoints_in_suites import saved_dit

    saved_dit(tmp_path)
    tiny_vae().save_pretrained(str(tmp_path / "vae"))
    (tmp_path / "digits").mkdir()
    for old, new, message in [("classes = 10", "classes = 2000", "samples 2000 classes; the sweep's backbone knows"),
                              ('scheduler = "ddim"', 'scheduler = "own"', "scheduler own applies to diffusers")]:
        (tmp_path / "s.toml").write_text(BACKBONE_SUITE.replace(old, new, 1).replace("samples = 10", "samples = 2000"))
        with pytest.raises(UserError, match=message):
            diffbench.plan(str(tmp_path / "s.toml"), "cpu")


@pytest.mark.parametrize("old, new, message", [
    ('protocol = "tiny-captions"', 'protocol = "nope"', "no [protocols.nope] table"),
    ('reference = "ref"', "", "protocols.tiny-captions.reference: give the reference"),
    ("samples = 8", "samples = 50", "holds 12 captions, fewer than samples = 50"),
    ('measure = ["counts", "speed", "quality"]', 'measure = ["counts", "train"]', "a pretrained system is not trained"),
    ('pipelines = ["models/sd"]', 'pipelines = ["ref"]', "not a diffusers pipeline directory"),
    ('pipelines = ["models/sd"]\nprotocol = "tiny-captions"',
     'families = ["dit"]\nparams = ["0.2M"]\nscheduler = "own"', "own applies to diffusers directories"),
    ('pipelines = ["models/sd"]', 'families = ["dit"]\nparams = ["0.2M"]', "protocol: applies to pretrained systems"),
])
def test_mistakes_in_a_pretrained_suite_are_one_line_before_anything_runs(world, old, new, message):
    import diffbench
    from diffbench.core.errors import UserError

    root, _ = world
    assert old in SUITE
    (root / "bad.toml").write_text(SUITE.replace(old, new, 1))
    with pytest.raises(UserError) as e:
        diffbench.plan(str(root / "bad.toml"), "cpu")
    assert message in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_captions_files_are_read_as_lines_or_jsonl(tmp_path):
    from diffbench.bench.protocols import read_captions
    from diffbench.core.errors import BadInputError

    (tmp_path / "a.txt").write_text("a red circle\n\n a blue square \n")
    assert read_captions(tmp_path / "a.txt") == ["a red circle", "a blue square"]
    (tmp_path / "b.jsonl").write_text('{"caption": "one"}\n{"text": "two", "id": 3}\n')
    assert read_captions(tmp_path / "b.jsonl") == ["one", "two"]
    (tmp_path / "c.jsonl").write_text('{"caption": "one"}\n{"image": 4}\n')
    with pytest.raises(BadInputError, match=r"c.jsonl:2: no \"caption\""):
        read_captions(tmp_path / "c.jsonl")


def test_dit_style_guidance_guides_the_first_channels_and_ddpm_reads_a_learned_variance():
    from diffbench.core.errors import ConfigError
    from diffbench.diffusion.process import make_scheduler
    from diffbench.diffusion.sampling import guided, sample

    def fn(x, t, c):  # a conditional and a null pass that differ: 8 channels, eps then the variance interpolation
        return torch.cat([x * 0 + c["c"][:, None, None, None].float(), x * 0 - 1], dim=1)

    x, t = torch.zeros(2, 4, 2, 2), torch.tensor([5.0, 5.0])
    step = guided(fn, {"c": torch.tensor([2, 2])}, {"c": torch.tensor([0, 0])}, 1.5, None, guide_channels=3)
    out = step(x, t)
    assert out.shape == (2, 8, 2, 2)
    assert torch.all(out[:, :3] == 3.0) and torch.all(out[:, 3] == 2.0) and torch.all(out[:, 4:] == -1)
    with pytest.raises(ConfigError, match="sampled with ddpm"):
        make_scheduler("ddim", learned_variance=True)
    assert make_scheduler("ddpm", learned_variance=True).config.variance_type == "learned_range"
    # overrides survive diffusers' from_config (a dict override was reset to the default: Imagen's thresholding)
    assert make_scheduler("ddim", thresholding=True).config.thresholding is True

    class Net(torch.nn.Module):  # predicts zero noise and a variance at the top of the learned range
        def null(self, n, device="cpu"):
            return torch.zeros(n, dtype=torch.long)

        def forward(self, x, t, c=None):
            return torch.cat([torch.zeros_like(x), torch.ones_like(x)], dim=1)

    fixed = next(sample(Net(), 2, (1, 4, 4), None, "ddpm", 5, 1.0, 0, raw=True))
    learned = next(sample(Net(), 2, (1, 4, 4), None, "ddpm", 5, 1.0, 0, raw=True, learned_variance=True))
    assert fixed.shape == learned.shape == (2, 1, 4, 4) and not torch.allclose(fixed, learned)
