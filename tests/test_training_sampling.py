"""Training to a budget with resumable checkpoints, and sampling that does not depend on the batch size."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from diffbench.core.errors import BadInputError, ConfigError
from diffbench.diffusion import datasets
from diffbench.diffusion.sampling import sample
from diffbench.diffusion.training import CHECKPOINT, TrainConfig, train
from diffbench.models.denoiser import Denoiser
from diffbench.models.families import FAMILIES
from tests.conftest import ROOT


def tiny(family="dit", cond="class"):
    torch.manual_seed(0)
    cfg = FAMILIES.get(family).tiny()
    return Denoiser(family, cfg, cond, num_classes=10, vocab=20)


@pytest.mark.parametrize("family", ["dit", "uvit", "vit", "unet-adm", "unet-ldm"])
def test_same_seeds_same_images_whatever_the_batch_size(family):
    model = tiny(family)
    conds = torch.arange(8) % 10
    one = torch.cat(list(sample(model, 8, (3, 8, 8) if family != "unet-ldm" else (4, 8, 8), conds, steps=4,
                                batch_size=1, seed=3)))
    eight = torch.cat(list(sample(model, 8, (3, 8, 8) if family != "unet-ldm" else (4, 8, 8), conds, steps=4,
                                  batch_size=8, seed=3)))
    assert one.dtype == torch.uint8 and one.shape[0] == 8
    assert (one.int() - eight.int()).abs().max() <= 1  # float summation order may move a rounding by one level
    assert (one == eight).float().mean() > 0.99


def test_stochastic_sampler_is_seeded_per_sample():
    model = tiny()
    conds = torch.zeros(4, dtype=torch.long)
    a = torch.cat(list(sample(model, 4, (3, 8, 8), conds, scheduler="ddpm", steps=5, batch_size=4, seed=1)))
    b = torch.cat(list(sample(model, 2, (3, 8, 8), conds[2:], scheduler="ddpm", steps=5, batch_size=2, seed=1,
                              start=2)))
    assert (a[2:].int() - b.int()).abs().max() <= 1
    c = torch.cat(list(sample(model, 4, (3, 8, 8), conds, scheduler="ddpm", steps=5, batch_size=4, seed=2)))
    assert not torch.equal(a, c)


@pytest.mark.parametrize("kwargs,fragment", [(dict(guidance=-1.0), "guidance scale must be >= 0"),
                                             (dict(steps=0), "at least 1 step")])
def test_sampling_bad_input(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        next(sample(tiny(), 2, (3, 8, 8), torch.zeros(2, dtype=torch.long), **kwargs))


def test_unknown_scheduler():
    from diffbench.core.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'ddim'"):
        next(sample(tiny(), 2, (3, 8, 8), torch.zeros(2, dtype=torch.long), scheduler="ddimm"))


def test_training_lowers_the_loss_and_checkpoint_config_is_checked(tmp_path):
    d = datasets.digits(8)
    ema, res = train(tiny(), d.images, d.labels, TrainConfig(steps=60, batch_size=32, lr=2e-3, checkpoint_every=20),
                     tmp_path, model_config={"family": "dit"})
    assert res.steps == 60 and len(res.losses) == 60
    assert sum(res.losses[-10:]) / 10 < 0.7 * sum(res.losses[:10]) / 10
    assert (tmp_path / CHECKPOINT).is_file()
    with pytest.raises(BadInputError, match="different train config"):
        train(tiny(), d.images, d.labels, TrainConfig(steps=61, batch_size=32, lr=2e-3), tmp_path,
              model_config={"family": "dit"})


def test_training_budget_in_flops():
    cfg = TrainConfig(train_flops=3 * 1e6 * 32 * 10, batch_size=32)
    assert cfg.total_steps(flops_per_image=int(1e6)) == 10
    with pytest.raises(ConfigError, match="exactly one training budget"):
        TrainConfig(steps=10, train_flops=1e9)


TRAIN_SCRIPT = """
import sys, torch
from diffbench.diffusion import datasets
from diffbench.diffusion.training import TrainConfig, train
from diffbench.models.denoiser import Denoiser
from diffbench.models.families import FAMILIES
torch.manual_seed(0)
torch.set_num_threads(1)
m = Denoiser("dit", FAMILIES.get("dit").tiny(), "class", num_classes=10)
d = datasets.digits(8)
ema, res = train(m, d.images, d.labels, TrainConfig(steps=80, batch_size=16, checkpoint_every=5, lr_warmup=10),
                 sys.argv[1])
print("DONE", res.steps, ",".join(f"{x:.6f}" for x in res.losses),
      f"{sum(float(p.double().sum()) for p in ema.parameters()):.9e}")
"""


def test_training_resumes_after_sigkill_without_a_gap(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    clean = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path / "clean")], capture_output=True,
                           text=True, cwd=ROOT, env=env, timeout=300)
    ref = clean.stdout.split("DONE ")[1].split()
    p = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path / "killed")], cwd=ROOT, env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not (tmp_path / "killed" / CHECKPOINT).exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    p.send_signal(signal.SIGKILL)
    p.wait()
    resumed = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(tmp_path / "killed")], capture_output=True,
                             text=True, cwd=ROOT, env=env, timeout=300)
    got = resumed.stdout.split("DONE ")[1].split()
    assert got[0] == ref[0] == "80"
    ref_losses, got_losses = [float(x) for x in ref[1].split(",")], [float(x) for x in got[1].split(",")]
    assert len(got_losses) == 80  # the curve has every step once: no gap, no repeat
    assert got_losses == pytest.approx(ref_losses, rel=1e-4, abs=1e-6)
    assert float(got[2]) == pytest.approx(float(ref[2]), rel=1e-6)  # the scored average too (EMA and warm-up)


def test_power_ema_leaves_nothing_of_the_initialisation(tmp_path):
    from diffbench.diffusion.ema import Ema, std_to_exponent

    assert std_to_exponent(0.05) == pytest.approx(16.97, abs=0.01)  # EDM2's published pairs
    assert std_to_exponent(0.10) == pytest.approx(6.94, abs=0.01)
    for ema, left in ((Ema("power", 0.10), 0.0), (Ema("constant", decay=0.995), 0.995 ** 150)):
        share = [torch.ones(1)]  # the initialisation's share: 1 at step 0, then only new iterates (0) come in
        for step in range(1, 151):
            ema.update(share, [torch.zeros(1)], step)
        assert float(share[0]) == pytest.approx(left, abs=1e-6) and ema.init_weight(150) == pytest.approx(left)
    assert Ema("constant", decay=0.995).init_weight(150) > 0.4  # the old default: 47% of the scored weights
    # in a real run: after one step the average is exactly the trained weights, nothing of the init
    d = datasets.digits(8)
    model = tiny()
    init = [p.detach().clone() for p in model.parameters()]
    ema, res = train(model, d.images, d.labels, TrainConfig(steps=1, batch_size=8, lr=1e-2), tmp_path / "one")
    assert all(torch.equal(a, b) for a, b in zip(ema.parameters(), model.parameters(), strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(ema.parameters(), init, strict=True))
    _, res = train(tiny(), d.images, d.labels, TrainConfig(steps=150, batch_size=8), tmp_path / "long")
    assert res.extra["ema"] == "power" and res.extra["ema_init_weight"] < 0.01
    assert TrainConfig(steps=10, lr=1.0, lr_warmup=4).lr_at(0) == 0.25
    assert TrainConfig(steps=10, lr=1.0, lr_warmup=4).lr_at(3) == 1.0


def test_a_short_training_already_lowers_fid(tmp_path):
    """Learning, in seconds: a tiny DiT trained for 200 steps on 8x8 digits scores a lower FID than untrained
    (the pipelines' longer learning tests are marked slow)."""
    from diffbench.metrics.detectors import build_detector
    from diffbench.metrics.quality import compare, extract

    d = datasets.digits(8)
    det = build_detector("digits")
    ref = extract(d.images, det)
    labels = torch.arange(128) % 10

    def fid(model):
        imgs = torch.cat(list(sample(model, 128, (3, 8, 8), labels, "ddim", 10, 1.0, 0, batch_size=128)))
        return compare(extract(imgs, det), ref)["fid"]

    untrained = fid(tiny().eval())
    ema, _ = train(tiny(), d.images, d.labels, TrainConfig(steps=200, batch_size=32, lr=2e-3, checkpoint_every=0),
                   tmp_path)
    assert fid(ema) < 0.8 * untrained


def test_v_prediction_on_grey_digits_learns_and_a_suite_case_trains_so(tmp_path):
    """v-prediction (the quick suite's: on 1x8x8 digits a DiT of 1.9M trained 400 steps scored FID 70 with it and
    151 with epsilon) trained and sampled on one grey channel lowers FID; a suite's ``prediction`` reaches the
    case, a 1-channel input trains on grey digits and is scored by the detector (grey repeated to three)."""
    import dataclasses

    import diffbench
    from diffbench.metrics.detectors import build_detector
    from diffbench.metrics.quality import compare, extract

    d = datasets.digits(8)
    grey = d.images[:, :1].contiguous()
    det = build_detector("digits")
    ref = extract(d.images, det)
    labels = torch.arange(128) % 10

    def model():
        torch.manual_seed(0)
        return Denoiser("dit", dataclasses.replace(FAMILIES.get("dit").tiny(), in_channels=1), "class", num_classes=10)

    def fid(m):
        imgs = torch.cat(list(sample(m, 128, (1, 8, 8), labels, "ddim", 10, 1.0, 0, batch_size=128,
                                     prediction="v_prediction")))
        assert imgs.shape[1] == 1
        return compare(extract(imgs, det), ref)["fid"]

    ema, _ = train(model(), grey, d.labels, TrainConfig(steps=200, batch_size=32, lr=2e-3, checkpoint_every=0,
                                                        prediction="v_prediction"), tmp_path / "v")
    assert fid(ema) < 0.8 * fid(model().eval())
    # the trained model uses its labels; DiT at initialisation (adaLN-Zero) cannot
    from diffbench.diffusion.conditioning import condition_gain

    trained, init = (condition_gain(m, grey, d.labels, "v_prediction") for m in (ema, model()))
    assert trained.lo > 0.005 and trained.loss_condition < trained.loss_null and trained.n == 512
    assert init.gain == 0.0 and init.lo == init.hi == 0.0

    suite = tmp_path / "grey.toml"
    suite.write_text('[defaults]\nmeasure = ["train", "quality"]\ntrain_steps = 20\nsamples = 32\nsample_steps = 3\n'
                     'prediction = "v_prediction"\n[[sweeps]]\nfamilies = ["dit"]\nparams = ["0.1M"]\n'
                     'inputs = ["1x8x8"]\nclasses = 10\ntolerance = 0.5\n')
    (case,) = diffbench.plan(suite, device="cpu")
    assert case.spec.training.prediction == "v_prediction" and case.spec.model.config["in_channels"] == 1
    run = diffbench.run(suite, out=tmp_path / "run", device="cpu")
    row = run.cases.iloc[0]
    assert row["status"] == "ok" and row["fid[digits]"] > 0 and row["kid[digits]"] is not None
    assert -1 < row["cond_gain"] < 1
    pipes = tmp_path / "pipes.toml"
    pipes.write_text('[defaults]\nprediction = "v_prediction"\n[[sweeps]]\npipelines = ["ldm"]\nparams = ["1.5M"]\n')
    with pytest.raises(ConfigError, match="prediction applies to backbone sweeps"):
        diffbench.plan(pipes, device="cpu")
