"""Pipelines: paper-scale counts on the meta device, tiny-scale sampling on CPU, experts, sizing,
checkpoints, and the CLI's count / train / sample with its bad-input paths."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from diffbench.diffusion.pipeline_sampling import sample_pipeline
from diffbench.models.pipelines import (
    PIPELINES,
    Pipeline,
    count_pipeline,
    denoiser_params,
    load_pipeline,
    save_pipeline,
    size_pipeline,
)
from tests.conftest import ROOT
from tests.conftest import call_cli as cli  # in this process: see call_cli

NAMES = PIPELINES.names()


def _counts(name, scale="paper"):
    return {c.name: c for c in count_pipeline(PIPELINES.get(name).spec(scale))}


def test_unclip_counts_are_karlos_exactly():
    c = _counts("unclip")
    assert c["prior"].params == 1_022_030_080
    assert c["decoder"].params == 885_439_686
    assert c["sr256"].params == c["sr1024"].params == 691_579_523
    assert c["prior"].gmacs == pytest.approx(82.2, abs=0.05)
    assert c["decoder"].gmacs == pytest.approx(304.2, abs=0.1)


def test_glide_networks_count_as_released():
    c = _counts("glide")
    assert c["text_encoder"].params + c["base64"].params == 385_030_726
    assert c["up256.text_encoder"].params + c["up256"].params == 398_361_286
    assert c["text_encoder"].gmacs + c["base64"].gmacs == pytest.approx(119.1, abs=0.1)
    assert c["up256.text_encoder"].gmacs + c["up256"].gmacs == pytest.approx(640.5, abs=0.1)


def test_stable_diffusion_components_are_exact():
    c = _counts("ldm")
    assert (c["text_encoder"].params, c["unet"].params, c["autoencoder"].params) == (123_060_480, 859_520_964,
                                                                                       83_653_863)
    assert c["unet"].gmacs == pytest.approx(401.64, abs=0.01)


def test_t5_xxl_encoder_and_expert_counts():
    c = _counts("ediffi")
    assert c["text_encoder"].params == 4_762_310_656
    experts = [k for k in c if k.startswith("base64.expert")]
    assert len(experts) == 3 and len({c[k].params for k in experts}) == 1
    # eDiff-I: one expert runs per step, so per-step compute stays that of one expert
    assert c["base64.expert0"].gmacs == c["base64.expert2"].gmacs


@pytest.mark.parametrize("name", NAMES)
def test_every_preset_counts_at_paper_scale_and_samples_at_tiny_scale(name):
    paper = count_pipeline(PIPELINES.get(name).spec("paper"))
    assert paper and all(c.params > 0 for c in paper)
    assert denoiser_params(paper) > 40e6
    spec = PIPELINES.get(name).spec("tiny")
    torch.manual_seed(0)
    pipe = Pipeline(spec)
    tokens = torch.randint(1, 20, (8, 12))
    labels = torch.arange(8) % max(spec.num_classes, 1)
    one = torch.cat(list(sample_pipeline(pipe, 8, tokens, labels, steps=3, batch_size=1, seed=5)))
    eight = torch.cat(list(sample_pipeline(pipe, 8, tokens, labels, steps=3, batch_size=8, seed=5)))
    assert one.dtype == torch.uint8 and one.shape == (8, *spec.output_shape)
    assert (one.int() - eight.int()).abs().max() <= 1  # float summation order may move a rounding by one level
    assert (one == eight).float().mean() > 0.99
    other = torch.cat(list(sample_pipeline(pipe, 8, tokens, labels, steps=3, batch_size=8, seed=6)))
    assert not torch.equal(one, other)


def test_experts_route_by_timestep():
    spec = PIPELINES.get("ediffi").spec("tiny")
    stage = Pipeline(spec).stages[spec.stages[0].name]
    assert spec.stages[0].boundaries == (500,)
    assert stage.route(torch.tensor([999.0, 500.0, 499.0, 0.0])).tolist() == [0, 0, 1, 1]


def test_budget_sizing_matches_denoiser_params_across_pipelines():
    sizes = {}
    for name in ("glide", "dit", "imagen"):
        spec, n, err = size_pipeline(PIPELINES.get(name).spec("tiny"), 1.5e6)
        assert abs(err) <= 0.03
        assert denoiser_params(count_pipeline(spec)) == n
        sizes[name] = n
    assert max(sizes.values()) / min(sizes.values()) < 1.07


def test_checkpoint_round_trip_and_config_mismatch(tmp_path):
    from diffbench.core.errors import BadInputError

    spec = PIPELINES.get("glide").spec("tiny")
    torch.manual_seed(1)
    a = Pipeline(spec)
    save_pipeline(a, tmp_path / "p.safetensors")
    torch.manual_seed(2)
    b = load_pipeline(Pipeline(spec), tmp_path / "p.safetensors")
    tokens = torch.randint(1, 20, (2, 12))
    assert torch.equal(torch.cat(list(sample_pipeline(a, 2, tokens, steps=2))),
                       torch.cat(list(sample_pipeline(b, 2, tokens, steps=2))))
    with pytest.raises(BadInputError, match="different"):
        load_pipeline(Pipeline(PIPELINES.get("imagen").spec("tiny")), tmp_path / "p.safetensors")
    torch.save(a.state_dict(), tmp_path / "plain.pt")  # a plain state dict loads with weights_only
    load_pipeline(Pipeline(spec), tmp_path / "plain.pt")


def test_cli_count_pipeline_json_lists_components():
    proc = cli("count", "unclip", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["name"] for r in rows} >= {"text_encoder", "prior", "decoder", "sr256", "sr1024"}
    assert all({"name", "component", "params", "gmacs"} <= set(r) for r in rows)
    prior = next(r for r in rows if r["name"] == "prior")
    assert prior["params"] == prior["reported_params"] == 1_022_030_080
    listed = cli("list", "pipelines", "--format", "json")
    assert {r["name"] for r in json.loads(listed.stdout)} == set(NAMES)


def _evil_pickle(path):
    code = ("import torch, os\n"
            "class Evil:\n"
            "    def __reduce__(self):\n"
            f"        return (os.system, ('touch {path.parent}/PWNED',))\n"
            f"torch.save({{'x': Evil()}}, r'{path}')\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli_bad_sampling_input_exits_2_with_one_line(tmp_path):
    evil = tmp_path / "evil.pt"
    _evil_pickle(evil)
    saved = tmp_path / "glide.safetensors"
    save_pipeline(Pipeline(PIPELINES.get("glide").spec("tiny")), saved)
    cases = [
        (["--guidance", "-1"], "guidance"),
        (["--steps", "0"], "must be at least 1"),
        (["--scheduler", "nope"], "unknown scheduler"),
        (["--checkpoint", str(saved)], "different"),
        (["--checkpoint", str(evil)], "weights only"),
    ]
    for extra, needle in cases:
        proc = cli("sample", "dit", "--n", "2", "--out", str(tmp_path / "s"), *extra)
        assert proc.returncode == 2, (extra, proc.stderr)
        assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert not (tmp_path / "PWNED").exists()  # nothing from the checkpoint was executed


def test_cli_train_then_sample_writes_images(tmp_path):
    out = tmp_path / "run"
    proc = cli("train", "glide", "--dataset", "shapes", "--steps", "6", "--batch-size", "8", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads((out / "train.json").read_text())
    assert [p["part"] for p in report["parts"]] == ["base8", "up16"]
    proc = cli("sample", "glide", "--checkpoint", str(out / "pipeline.safetensors"), "--n", "3", "--steps", "2",
               "--format", "npz", "--out", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    with np.load(tmp_path / "s" / "samples.npz") as z:
        assert z["arr_0"].shape == (3, 16, 16, 3) and z["arr_0"].dtype == np.uint8
    assert "base8" in proc.stdout and "up16" in proc.stdout  # per-component time
    proc = cli("train", "glide", "--dataset", "digits", "--steps", "2", "--out", str(tmp_path / "r2"))
    assert proc.returncode == 2 and "shapes" in proc.stderr


@pytest.mark.slow  # 21 s; the same resumable loop is killed and resumed in test_training_sampling.py by default
def test_pipeline_training_resumes_after_sigkill(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "diffbench", "train", "dit", "--dataset", "digits", "--steps", "120",
            "--checkpoint-every", "10", "--autoencoder-steps", "5", "--batch-size", "8", "--out", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = out / "parts" / "denoiser" / "checkpoint.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists(), "no checkpoint before the kill"
    done = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "train.json").read_text())
    part = next(p for p in report["parts"] if p["part"] == "denoiser")
    assert part["steps"] == 120 and 0 < part["resumed_from"] < 120
    assert len(report["losses"]["denoiser"]) == 120  # one loss per step, no gap and no repeat


PIPE_SUITE = """
name = "pipes"
[defaults]
batch_sizes = [2]
warmup = 0
repeats = 2
measure = ["counts", "speed", "memory"]
sample_steps = 2
guidance = 2.0

[[sweeps]]
pipelines = ["unclip", "ediffi"]
scale = "tiny"
params = ["1.5M"]
"""


def test_suite_pipeline_sweep_validates(tmp_path):
    from diffbench.bench.expansion import expand
    from diffbench.bench.suites import parse
    from diffbench.core.errors import ConfigError, UnknownNameError

    suite = parse(PIPE_SUITE, "pipes.toml", "pipes")
    cases = expand(suite, "cpu")
    assert [c.config["model"]["label"] for c in cases] == ["unclip@1.5M", "ediffi@1.5M"]
    assert cases[0].config["model"]["family"] == "pipeline:unclip"
    with pytest.raises(UnknownNameError, match="glide"):
        parse(PIPE_SUITE.replace('"ediffi"', '"glyde"'), "p.toml", "p")
    with pytest.raises(ConfigError, match="not gmacs"):
        parse(PIPE_SUITE.replace('params = ["1.5M"]', 'gmacs = ["1G"]'), "p.toml", "p")
    with pytest.raises(ConfigError, match="cannot reach"):
        expand(parse(PIPE_SUITE.replace('"1.5M"', '"20K"'), "p.toml", "p"), "cpu")


def test_pipeline_cases_record_components_and_guidance(tmp_path):
    from diffbench.core import records

    path = tmp_path / "pipes.toml"
    path.write_text(PIPE_SUITE)
    proc = cli("run", str(path), "--out", str(tmp_path / "run"), timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = records.read(tmp_path / "run" / "records.jsonl").records
    by = {(r.config["model"]["label"], r.metric): r for r in got}
    for label in ("unclip@1.5M", "ediffi@1.5M"):
        assert by[(label, "params")].value == pytest.approx(1.5e6, rel=0.03)
        assert by[(label, "latency_ms")].status == "ok" and by[(label, "latency_ms_unguided")].status == "ok"
        assert by[(label, "gmacs_per_image")].value > by[(label, "gmacs")].value
    assert by[("unclip@1.5M", "component_ms_per_image[prior]")].value > 0
    assert by[("ediffi@1.5M", "component_ms_per_image[base8]")].value > 0
    # eDiff-I runs one expert per step: its per-step GMACs count one expert per stage, not both
    comps = by[("ediffi@1.5M", "params")].extra["by_component"]
    experts = [v["gmacs"] for k, v in comps.items() if k.startswith("base8.expert")]
    sr = comps["sr16"]["gmacs"]
    assert by[("ediffi@1.5M", "gmacs")].value == pytest.approx(max(experts) + sr)
    report = cli("report", str(tmp_path / "run"))
    assert report.returncode == 0, report.stderr
    assert "## Pipelines" in (tmp_path / "run" / "report" / "report.md").read_text()


def test_training_data_from_a_folder_and_an_npz(tmp_path):
    import numpy as np
    from PIL import Image

    from diffbench.diffusion.pipeline_training import training_data

    spec = PIPELINES.get("dit").spec("tiny")
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(3):
            img = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
            Image.fromarray(img).save(tmp_path / "imgs" / cls / f"{k}.png")
    data, captions = training_data(spec, str(tmp_path / "imgs"))
    assert data.images.shape == (6, 3, 16, 16) and captions is None
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.savez(tmp_path / "batch.npz", arr_0=rng.integers(0, 255, (5, 32, 32, 3), dtype=np.uint8),
             arr_1=np.array([3, 1, 4, 1, 5]))
    data, _ = training_data(spec, str(tmp_path / "batch.npz"))
    assert data.images.shape == (5, 3, 16, 16) and data.labels.tolist() == [3, 1, 4, 1, 5]


def _save_local_text_encoder(path, width=32):
    """A tiny CLIP text model and a word-level tokenizer over the embedded vocabulary, saved as a
    Hugging Face directory: the loading path of real text encoders, with no download."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast

    from diffbench.metrics.captions import MAX_WORDS, VOCAB

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", model_max_length=MAX_WORDS)
    cfg = CLIPTextConfig(vocab_size=len(VOCAB), hidden_size=width, intermediate_size=2 * width, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=MAX_WORDS, bos_token_id=0, eos_token_id=0,
                         pad_token_id=0)
    torch.manual_seed(0)
    CLIPTextModel(cfg).save_pretrained(path)
    fast.save_pretrained(path)


def test_local_text_encoder_and_autoencoder_load_from_directories(tmp_path):
    from diffusers import AutoencoderKL

    from diffbench.models.pipelines.presets import TINY_VAE

    _save_local_text_encoder(tmp_path / "text")
    torch.manual_seed(0)
    AutoencoderKL(**TINY_VAE).save_pretrained(tmp_path / "vae")
    out = tmp_path / "s"
    proc = cli("sample", "ldm", "--text-encoder", str(tmp_path / "text"), "--autoencoder", str(tmp_path / "vae"),
               "--captions", "a small red circle at the center", "--n", "2", "--steps", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert len(list(out.glob("*.png"))) == 2
    _save_local_text_encoder(tmp_path / "wide", width=48)
    proc = cli("sample", "ldm", "--text-encoder", str(tmp_path / "wide"), "--n", "1",
               "--out", str(tmp_path / "o-wide"))  # a fresh folder each: samples never mix
    assert proc.returncode == 2 and "width" in proc.stderr
    proc = cli("sample", "ldm", "--text-encoder", str(tmp_path / "nothing"), "--n", "1",
               "--out", str(tmp_path / "o-nothing"))  # a fresh folder each: samples never mix
    assert proc.returncode == 2 and "no such directory" in proc.stderr
    (tmp_path / "empty").mkdir()
    proc = cli("sample", "ldm", "--text-encoder", str(tmp_path / "empty"), "--n", "1",
               "--out", str(tmp_path / "o-empty"))  # a fresh folder each: samples never mix
    assert proc.returncode == 2 and "config.json" in proc.stderr


def test_sample_refuses_a_folder_that_holds_other_images(tmp_path):
    """Samples are never mixed with earlier ones: 'wrote 2 images' into a folder then holding 4 made a later
    'fid DIR' score all 4."""
    out = tmp_path / "s"
    args = ["sample", "dit", "--n", "2", "--steps", "1", "--out", str(out)]
    assert cli(*args).returncode == 0 and sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png"]
    again = cli(*args[:3], "1", *args[4:])
    assert again.returncode == 2 and "holds 2 earlier sample(s)" in again.stderr and "--overwrite" in again.stderr
    fewer = cli("sample", "dit", "--n", "1", "--steps", "1", "--out", str(out), "--overwrite")
    assert fewer.returncode == 0 and sorted(p.name for p in out.iterdir()) == ["000000.png"]
    (out / "mine.png").write_bytes(b"x")
    foreign = cli("sample", "dit", "--n", "1", "--steps", "1", "--out", str(out), "--overwrite")
    assert foreign.returncode == 2 and "other files (mine.png)" in foreign.stderr
    assert (out / "mine.png").exists() and (out / "000000.png").exists()  # nothing touched
