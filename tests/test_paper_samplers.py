"""The papers' own samplers: ADM's and DiT's respaced process (diffusion/respaced.py) and U-ViT's DPM-Solver
(diffusion/dpm_solver.py), exactly.

The official code is not part of diffbench. Point these variables at checkouts to compare the loops themselves:
    DIFFBENCH_DIT_REPO=/path/to/facebookresearch/DiT   (needs timm: its models.py is imported for nothing here)
    DIFFBENCH_ADM_REPO=/path/to/openai/guided-diffusion
    DIFFBENCH_UVIT_REPO=/path/to/baofff/U-ViT          (its dpm_solver_pp.py)
With the same network, initial noise and per-step noise, diffbench's DiT 250-step DDPM at guidance 1.5 (on 3 of 4
channels, the learned variance read) and its ADM DDIM-25 (x0 clipped) equal the official p_sample_loop and
ddim_sample_loop to 1e-5, and its uvit-dpm-solver at 50 steps and guidance 1.4 equals U-ViT's DPM_Solver.sample with
cfg scale 0.4. Without the checkouts, the small arrays below (taken from the official code) are checked, and the
DPM-Solver is checked where its answer is known in closed form.
"""

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffbench.diffusion.respaced import Respaced, linear_betas, space_timesteps

DIT_REPO = os.environ.get("DIFFBENCH_DIT_REPO")
ADM_REPO = os.environ.get("DIFFBENCH_ADM_REPO")
UVIT_REPO = os.environ.get("DIFFBENCH_UVIT_REPO")

# space_timesteps(1000, "250") of facebookresearch/DiT (diffusion/respace.py): its first and last kept steps
DIT_250_HEAD, DIT_250_TAIL = [0, 4, 8, 12, 16, 20, 24, 28, 32, 36], [963, 967, 971, 975, 979, 983, 987, 991, 995, 999]
# the respaced betas of those 250 steps (float64), first and last three, printed from the official SpacedDiffusion:
# recomputed from the kept steps' alpha_bar, not the 1000-step betas (1e-4, 1.2e-4, ...) diffusers' DDPM would take
DIT_250_BETAS = [9.999999999998899e-05, 0.0005990655644756426, 0.0009176029928172902]
DIT_250_LAST_BETAS = [0.07691919273416525, 0.07721930545605926, 0.07751934499235003]


def test_the_kept_timesteps_and_betas_are_the_papers():
    kept = space_timesteps(1000, "250")
    assert len(kept) == 250 and kept[:10] == DIT_250_HEAD and kept[-10:] == DIT_250_TAIL
    assert space_timesteps(1000, "ddim25") == list(range(0, 1000, 40))  # ADM's ddimN: the integer stride
    assert space_timesteps(1000, "1000") == list(range(1000))
    s = Respaced("ddpm", clip_denoised=False)
    s.set_timesteps(250)
    betas = 1 - s.tables["ac"] / s.tables["ac_prev"]
    assert np.allclose(betas[:3], DIT_250_BETAS, rtol=1e-12) and np.allclose(betas[-3:], DIT_250_LAST_BETAS, rtol=1e-12)
    assert s.timesteps[0] == 999 and s.timesteps[-1] == 0
    full = Respaced("ddpm", clip_denoised=False)
    full.set_timesteps(1000)  # nothing respaced: the training process itself
    assert np.allclose(1 - full.tables["ac"] / full.tables["ac_prev"], linear_betas(), rtol=0, atol=1e-15)


def test_the_papers_samplers_take_epsilon_and_their_variance_where_they_read_it():
    from diffbench.core.errors import ConfigError
    from diffbench.diffusion.process import make_scheduler

    with pytest.raises(ConfigError, match="take epsilon prediction"):
        make_scheduler("dit-ddpm", "v_prediction")
    with pytest.raises(ConfigError, match="sampled with a DDPM sampler"):
        make_scheduler("adm-ddim", learned_variance=True)
    assert make_scheduler("adm-ddpm", learned_variance=True).learned_variance


def tiny_dit(in_channels: int, seed: int = 0) -> torch.nn.Module:
    """A small class-conditional DiT with a learned variance, its weights random (the official init zeroes the
    output layer, under which any two samplers agree more than they should)."""
    import diffbench

    net = diffbench.build("dit", input_size=8, patch_size=2, in_channels=in_channels, hidden_size=64, depth=2,
                          num_heads=2, num_classes=10).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


def diffbench_loop(net, labels, shape, scheduler, steps, guidance, draws, z, learned, guide_channels=None):
    from diffbench.bench.backbone_subject import PretrainedBackbone
    from diffbench.diffusion.sampling import sample
    from diffbench.models.families import FAMILIES

    model = PretrainedBackbone(FAMILIES.get("dit"), net, "class", 10)
    n = len(labels)

    def noise(k: int) -> torch.Tensor:  # draw 0 the initial noise, then each step's (the official rows 0 .. n-1)
        return z if k == 0 else draws[k - 1][:n]

    [x] = sample(model, n, shape, labels, scheduler, steps, guidance, batch_size=n, raw=True,
                 learned_variance=learned, guide_channels=guide_channels, noise=noise)
    return x


def official_package(name: str, folder: Path):
    """The official repository's sampling package, imported under its own name (diffbench has a ``diffusion``)."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def with_draws(monkeypatch, draws: list[torch.Tensor]):
    """torch.randn_like returns the prepared draws in turn (the official loops draw each step's noise with it)."""
    it = iter(draws)
    monkeypatch.setattr(torch, "randn_like", lambda x, **kw: next(it).to(x.dtype))


@pytest.mark.skipif(not DIT_REPO, reason="set DIFFBENCH_DIT_REPO to a checkout of facebookresearch/DiT")
def test_dit_250_step_ddpm_with_guidance_equals_the_official_loop(monkeypatch):
    official = official_package("official_dit_diffusion", Path(DIT_REPO) / "diffusion")
    torch.manual_seed(1)
    net, n, shape = tiny_dit(4), 3, (4, 8, 8)
    labels = torch.tensor([1, 5, 9])
    z = torch.randn(n, *shape)
    draws = [torch.randn(2 * n, *shape) for _ in range(250)]
    ours = diffbench_loop(net, labels, shape, "dit-ddpm", 250, 1.5, draws, z, learned=True, guide_channels=3)
    diffusion = official.create_diffusion("250")  # as DiT's sample.py: str(num_sampling_steps)
    with_draws(monkeypatch, draws)
    y = torch.cat([labels, torch.full((n,), 10)])  # the null class appended, as sample.py does
    with torch.no_grad():
        ref = diffusion.p_sample_loop(net.forward_with_cfg, (2 * n, *shape), torch.cat([z, z]), clip_denoised=False,
                                      model_kwargs={"y": y, "cfg_scale": 1.5}, device="cpu")[:n]
    err = (ours - ref).abs().max().item()
    assert err < 1e-5, err


@pytest.mark.skipif(not ADM_REPO, reason="set DIFFBENCH_ADM_REPO to a checkout of openai/guided-diffusion")
def test_adm_ddim_25_equals_the_official_loop(monkeypatch):
    official = official_package("official_guided_diffusion", Path(ADM_REPO) / "guided_diffusion")
    import importlib

    gd = importlib.import_module("official_guided_diffusion.gaussian_diffusion")
    respace = importlib.import_module("official_guided_diffusion.respace")
    assert official is not None
    torch.manual_seed(2)
    net, n, shape = tiny_dit(3, seed=3), 4, (3, 8, 8)
    labels = torch.tensor([0, 3, 6, 9])
    z = torch.randn(n, *shape)
    draws = [torch.randn(n, *shape) for _ in range(25)]
    ours = diffbench_loop(net, labels, shape, "adm-ddim", 25, 1.0, draws, z, learned=False)
    diffusion = respace.SpacedDiffusion(  # as script_util.create_gaussian_diffusion(learn_sigma=True, "ddim25")
        use_timesteps=respace.space_timesteps(1000, "ddim25"), betas=gd.get_named_beta_schedule("linear", 1000),
        model_mean_type=gd.ModelMeanType.EPSILON, model_var_type=gd.ModelVarType.LEARNED_RANGE,
        loss_type=gd.LossType.MSE, rescale_timesteps=False)
    with_draws(monkeypatch, draws)
    with torch.no_grad():
        ref = diffusion.ddim_sample_loop(lambda x, t, y: net(x, t, y), (n, *shape), z, clip_denoised=True,
                                         model_kwargs={"y": labels}, device="cpu", eta=0.0)
    err = (ours - ref).abs().max().item()
    assert err < 1e-5, err


@pytest.mark.parametrize("scheduler", ["dit-ddpm", "adm-ddpm", "adm-ddim", "uvit-dpm-solver"])
def test_image_k_is_the_same_whatever_the_batch(scheduler):
    from diffbench.bench.backbone_subject import PretrainedBackbone
    from diffbench.diffusion.sampling import sample
    from diffbench.models.families import FAMILIES

    model = PretrainedBackbone(FAMILIES.get("dit"), tiny_dit(3), "class", 10)
    labels = torch.tensor([2, 4, 6, 8])
    learned = scheduler not in ("adm-ddim", "uvit-dpm-solver")
    whole = next(sample(model, 4, (3, 8, 8), labels, scheduler, 10, 1.5, seed=5, batch_size=4, raw=True,
                        learned_variance=learned))
    part = next(sample(model, 2, (3, 8, 8), labels[2:], scheduler, 10, 1.5, seed=5, batch_size=2, start=2, raw=True,
                       learned_variance=learned))
    assert torch.allclose(whole[2:], part, atol=1e-5)


def test_the_imagenet_protocol_samples_with_dits_own_sampler():
    from diffbench.bench.protocols import BUILTIN

    p = BUILTIN["imagenet-class"]
    assert (p.scheduler, p.sample_steps, p.guidance, p.guide_channels) == ("dit-ddpm", 250, 1.5, 3)


@pytest.mark.parametrize("scheduler", ["dit-ddpm", "adm-ddpm"])
def test_a_single_step_gives_finite_samples(scheduler):
    """One respaced step has no step 1 to take the clipped posterior variance from, and adds no noise."""
    from diffbench.bench.backbone_subject import PretrainedBackbone
    from diffbench.diffusion.sampling import sample
    from diffbench.models.families import FAMILIES

    model = PretrainedBackbone(FAMILIES.get("dit"), tiny_dit(3), "class", 10)
    [x] = sample(model, 2, (3, 8, 8), torch.tensor([1, 2]), scheduler, 1, 1.0, batch_size=2, raw=True,
                 learned_variance=True)
    assert bool(torch.isfinite(x).all())


def test_uvit_dpm_solver_is_exact_where_the_data_is_one_point():
    """With every sample's data one point x*, the exact noise prediction makes the probability-flow ODE's solution
    x_t = alpha_t x* + sigma_t (x_T - alpha_T x*) / sigma_T, and DPM-Solver in its data-prediction form (a constant
    x0) reaches it exactly at every order: the end point at t = 1/N, 50 evaluations, the network at t * N."""
    from diffbench.diffusion.dpm_solver import DiscreteVP, UViTDPMSolver, uvit_betas
    from diffbench.diffusion.sampling import reverse_process

    vp, star = DiscreteVP(uvit_betas()), torch.randn(2, 4, 8, 8)
    z, times = torch.randn(2, 4, 8, 8), []

    def exact(x, t):  # t: the network's time, t * N
        times.append(float(t[0]))
        tc = t[:1] / 1000
        return (x - torch.exp(vp.log_alpha(tc)) * star) / vp.sigma(tc)

    for steps in (50, 7):
        times.clear()
        out = reverse_process(exact, (4, 8, 8), [torch.Generator()] * 2, "uvit-dpm-solver", steps,
                              noise=lambda k: z)
        end, start = torch.tensor([1 / 1000]), torch.tensor([1.0])
        want = torch.exp(vp.log_alpha(end)) * star + vp.sigma(end) * (z - torch.exp(vp.log_alpha(start)) * star) \
            / vp.sigma(start)
        assert (out - want).abs().max().item() < 1e-5 and len(times) == steps
        assert times[0] == 1000.0 and times[1] != round(times[1])  # U-ViT's continuous time input
    s = UViTDPMSolver()
    s.set_timesteps(50)
    assert [b.order for b in s.blocks] == [3] * 16 + [2]


@pytest.mark.skipif(not UVIT_REPO, reason="set DIFFBENCH_UVIT_REPO to a checkout of baofff/U-ViT")
def test_uvit_dpm_solver_50_steps_with_guidance_equals_the_official_solver():
    sys.path.insert(0, UVIT_REPO)
    try:
        import dpm_solver_pp as official  # type: ignore[import-not-found]
    finally:
        sys.path.remove(UVIT_REPO)
    torch.manual_seed(4)
    net, n, shape = tiny_dit(4, seed=5), 3, (4, 8, 8)
    labels = torch.tensor([2, 7, 0])
    z = torch.randn(n, *shape)
    ours = diffbench_loop(net, labels, shape, "uvit-dpm-solver", 50, 1.4, [], z, learned=False)
    betas = (torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2).numpy()  # eval_ldm_discrete
    schedule = official.NoiseScheduleVP(schedule="discrete", betas=torch.tensor(betas).float())

    def cfg_nnet(x, t, y, script):
        null = torch.full_like(y, 10)
        if script:  # eval_ldm_discrete.py's: two batches, cond + s (cond - uncond), config.sample.scale = 0.4
            cond, uncond = net(x, t, y)[:, :4], net(x, t, null)[:, :4]
            return cond + 0.4 * (cond - uncond)
        # the same guidance as diffbench computes it: one doubled batch, uncond + g (cond - uncond)
        cond, uncond = net(torch.cat([x, x]), torch.cat([t, t]), torch.cat([y, null]))[:, :4].chunk(2)
        return uncond + 1.4 * (cond - uncond)

    refs = []
    for script in (False, True):
        solver = official.DPM_Solver(lambda x, tc, s=script: cfg_nnet(x, tc * 1000, labels, s), schedule,
                                     predict_x0=True, thresholding=False)
        with torch.no_grad():
            refs.append(solver.sample(z.clone(), steps=50, eps=1.0 / 1000, T=1.0))
    err = (ours - refs[0]).abs().max().item()
    assert err < 1e-5, err  # measured: 0.0, bit for bit, the network function being the same
    # U-ViT's own two batches and its form of the guidance differ by fp32 rounding only: 2.3e-5 at |x| up to 52 here
    # (a random network, no denoiser: its samples are far from unit scale), under 1e-6 of the samples' scale
    assert (ours - refs[1]).abs().max().item() < 1e-6 * refs[1].abs().max().item()
