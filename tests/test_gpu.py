"""GPU-marked tests (``tox -e gpu``): CUDA timing, NVML memory and energy, real-size forwards."""

import pytest
import torch

from diffbench import models
from diffbench.metrics import energy, memory
from diffbench.metrics.timing import time_calls
from diffbench.models.families import FAMILIES

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_cuda_event_timing_sees_device_work():
    a = torch.randn(4096, 4096, device="cuda")
    t = time_calls(lambda: a @ a, warmup=3, repeats=10, device="cuda")
    # 2 * 4096^3 FLOPs: on any data-centre GPU well above 0.05 ms and below 500 ms
    assert 0.05 < t.median_ms < 500 and t.n == 10


def test_nvml_memory_and_energy_are_read():
    memory.reset_allocator_peak("cuda")
    with memory.NvmlSampler("cuda", interval_s=0.005) as sampler, energy.EnergyMeter("cuda") as meter:
        a = torch.randn(8192, 8192, device="cuda")
        for _ in range(200):
            a = (a @ a).clamp_(-1, 1)
        torch.cuda.synchronize()
    mem = sampler.readings()
    assert mem["nvml_peak_used_bytes"].value >= 8192 * 8192 * 4
    assert memory.allocator_peaks("cuda")["peak_mem_allocated_bytes"].value >= 8192 * 8192 * 4
    e = meter.readings(images=1)
    assert e["energy_j_per_image"].value is None or e["energy_j_per_image"].value > 0
    assert e["mean_power_w"].value is None or 10 < e["mean_power_w"].value < 2000


@pytest.mark.parametrize("name", ["DiT-XL/2", "SD-1.5"])
def test_real_size_forward_in_bf16(name):
    cfg = models.resolve(name)
    fam = FAMILIES.get(models.count(cfg).family)
    net = cfg.build().cuda().eval()
    inputs = fam.make_inputs(cfg, 2, torch.device("cuda"), torch.float32)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = fam.denoise(net, inputs)
    c, h, w = fam.input_shape(cfg)
    assert out.shape[0] == 2 and out.shape[-2:] == (h, w) and torch.isfinite(out.float()).all()


@pytest.mark.parametrize("scheduler", ["ddim", "ddpm"])
def test_sampling_on_the_device_matches_the_cpu(scheduler):
    """The one sampling loop keeps the latent and the scheduler on the GPU; per-sample noise still comes from
    CPU generators, so the images agree with the CPU's up to float rounding."""
    from diffbench.diffusion.sampling import sample
    from diffbench.models.denoiser import Denoiser

    fam = FAMILIES.get("dit")
    torch.manual_seed(0)
    model = Denoiser("dit", fam.tiny(), "class", num_classes=10)
    shape, conds = fam.input_shape(model.config), torch.arange(4) % 10
    cpu = torch.cat(list(sample(model, 4, shape, conds, scheduler, 5, 2.0, seed=3, device="cpu")))
    gpu = torch.cat(list(sample(model, 4, shape, conds, scheduler, 5, 2.0, seed=3, device="cuda")))
    assert gpu.device.type == "cpu" and gpu.dtype == torch.uint8  # one copy to the host, at the end
    assert (cpu.int() - gpu.int()).abs().max() <= 3
