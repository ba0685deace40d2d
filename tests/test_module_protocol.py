"""A user's own nn.Module through the Python API: counted, timed, recorded like a suite's case, and read by
load_run and report; mistakes in the protocol are one-line user errors."""

import pytest
import torch
from torch import nn

import diffbench


class TinyDenoiser(nn.Module):
    """A research model: not a diffbench family, with the protocol's inputs method."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 32, 3, padding=1), nn.SiLU(), nn.Conv2d(32, 4, 3, padding=1))
        self.t = nn.Linear(1, 32)

    def forward(self, x, t):
        h = self.net[0](x) + self.t(t[:, None].float())[:, :, None, None]
        return self.net[2](self.net[1](h))

    def diffbench_inputs(self, batch, device, dtype):
        return {"x": torch.randn(batch, 4, 16, 16, device=device, dtype=dtype),
                "t": torch.randint(0, 1000, (batch,), device=device)}


def test_a_module_is_counted_timed_and_recorded(tmp_path):
    model = TinyDenoiser()
    run = diffbench.benchmark_module(model, name="tiny-denoiser", out=tmp_path / "run", batch_sizes=(1, 4),
                                     device="cpu", repeats=3)
    assert run.statuses == {"ok": 2}
    cases = run.cases.set_index("batch_size")
    params = sum(p.numel() for p in model.parameters())
    assert set(cases["params"]) == {params}
    conv_macs = 16 * 16 * (4 * 32 * 9 + 32 * 4 * 9) + 32  # two convolutions and the time projection
    assert cases.loc[1, "gmacs"] == pytest.approx(conv_macs / 1e9, rel=1e-6)
    assert cases.loc[4, "latency_ms"] > 0 and cases.loc[4, "throughput_img_s"] > 0
    assert set(run.records["family"]) == {"user"}
    files = diffbench.report(run, formats=("md",))
    assert any(f.suffix == ".md" for f in files)


def test_inputs_can_be_given_and_mistakes_are_user_errors(tmp_path):
    plain = nn.Linear(8, 8)
    run = diffbench.benchmark_module(plain, inputs=lambda b, device, dtype: {"input": torch.randn(b, 8, device=device)},
                                     out=tmp_path / "lin", device="cpu", repeats=2)
    assert run.cases["gmacs"].iloc[0] == pytest.approx(64 / 1e9)
    with pytest.raises(diffbench.UserError, match="no diffbench_inputs"):
        diffbench.benchmark_module(plain, out=tmp_path / "x", device="cpu")
    with pytest.raises(diffbench.UserError, match="must return a dict"):
        diffbench.benchmark_module(plain, inputs=lambda b, d, t: torch.randn(b, 8), out=tmp_path / "y", device="cpu")
    with pytest.raises(diffbench.UserError, match="counts, speed, memory or energy"):
        diffbench.benchmark_module(TinyDenoiser(), out=tmp_path / "z", measure=("train",))
    with pytest.raises(diffbench.UserError, match="already holds records"):
        diffbench.benchmark_module(plain, inputs=lambda b, d, t: {"input": torch.randn(b, 8)}, out=tmp_path / "lin",
                                   device="cpu")


class FastPathEncoder(nn.Module):
    """PyTorch's encoder: in eval mode without autograd it takes a fused kernel the flop counter cannot see."""

    def __init__(self) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(64, 4, 128, dropout=0.1, batch_first=True)
        self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.head = nn.Dropout(0.1)

    def forward(self, x):
        return self.head(self.enc(x))

    def diffbench_inputs(self, batch, device, dtype):
        return {"x": torch.randn(batch, 16, 64, device=device, dtype=dtype)}


def test_a_module_with_a_fused_fast_path_counts_the_same_at_every_batch_size(tmp_path):
    model = FastPathEncoder()
    model.head.eval()  # the caller's own mix of modes, restored after
    run = diffbench.benchmark_module(model, out=tmp_path / "run", batch_sizes=(1, 2, 3), device="cpu", repeats=2,
                                     warmup=0, min_time_s=0.0)
    assert run.statuses == {"ok": 3}
    tokens, dim, ff = 16, 64, 128
    per_layer = tokens * dim * 3 * dim + tokens * dim * dim + 2 * tokens * dim * ff + 2 * tokens * tokens * dim
    # the first case was counted before any evaluation (train mode before the fix), the others after it
    assert list(run.cases.sort_values("batch_size")["gmacs"]) == pytest.approx([2 * per_layer / 1e9] * 3, rel=1e-9)
    assert model.training and model.enc.training and not model.head.training


def test_a_function_for_a_module_and_a_batch_that_cannot_be_allocated(tmp_path):
    """A function is a one-line UserError; a batch too large to allocate is an oom row, as in suites, and the
    other batch sizes are measured."""
    with pytest.raises(diffbench.UserError, match="model must be a torch.nn.Module, got function"):
        diffbench.benchmark_module(lambda x: x, out=tmp_path / "f")

    def inputs(b, device, dtype):
        return {"input": torch.randn(b, 4, device=device) if b < 1000 else torch.empty(b, 10**12, device=device)}

    run = diffbench.benchmark_module(nn.Linear(4, 4), inputs=inputs, out=tmp_path / "run", batch_sizes=(1, 10**6),
                                     device="cpu", repeats=2, warmup=0)
    assert run.statuses == {"ok": 1, "oom": 1}
    row = run.records[run.records["status"] == "oom"].iloc[0]
    assert "out of memory at batch 1000000" in row["error"]
