"""Benchmark: issue 6's budget, a tiny pipeline trained on the embedded digits in at most 2 minutes on a
2-core CPU (the same budget tests/test_pipeline_learning.py checks for quality)."""

import pytest
import torch

from diffbench.diffusion.pipeline_training import train_pipeline, training_data
from diffbench.diffusion.training import TrainConfig
from diffbench.models.pipelines import PIPELINES, Pipeline


@pytest.mark.benchmark
def test_tiny_uvit_pipeline_trains_within_two_minutes(tmp_path, benchmark):
    spec = PIPELINES.get("uvit").spec("tiny")
    data, _ = training_data(spec, "digits", 0)

    def run() -> float:
        torch.manual_seed(0)
        res = train_pipeline(Pipeline(spec), data, TrainConfig(steps=1500, batch_size=32, lr=2e-3,
                                                               checkpoint_every=0), tmp_path / "run",
                             autoencoder_steps=300)
        return sum(r.seconds for r in res.values())

    seconds = benchmark.pedantic(run, rounds=1, iterations=1)
    print(f"\ntiny uvit pipeline training: {seconds:.1f} s")
    assert seconds <= 120
