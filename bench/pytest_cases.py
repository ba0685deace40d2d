"""The tests ``pytest --diffbench-suite SUITE`` collects: one per case (see ``bench/pytest_plugin.py``)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

import diffbench
from diffbench.bench import precision
from diffbench.bench.accuracy import case_status, gate
from diffbench.bench.cases import records, subject_for
from diffbench.core.records import utc_now
from diffbench.metrics.reading import Reading


def pytest_generate_tests(metafunc: Any) -> None:
    if "diffbench_case" not in metafunc.fixturenames:
        return

    config = metafunc.config
    cases = diffbench.plan(config.getoption("diffbench_suite"), config.getoption("diffbench_device"),
                           config.getoption("diffbench_only"))
    metafunc.parametrize("diffbench_case", cases, ids=[c.name for c in cases])


def test_diffbench_case(benchmark: Any, diffbench_case: Any) -> None:
    spec = diffbench_case.spec
    if not spec.measures("speed"):
        pytest.skip("the case does not measure speed")
    subject = subject_for(spec)
    counts = subject.counts() if spec.measures("counts") else {}
    main = subject.evaluations()[0]
    cuda = spec.device.startswith("cuda")

    def timed() -> None:
        main.run()
        if cuda:
            torch.cuda.synchronize(spec.device)  # the device's time, not the launch's

    benchmark.extra_info.update({"case_id": diffbench_case.case_id, "images_per_call": main.images,
                                 **{k: r.value for k, r in counts.items()}})
    with torch.no_grad(), precision.precision(spec.precision, spec.device, spec.attention):
        benchmark.pedantic(timed, rounds=spec.repeats, warmup_rounds=spec.warmup, iterations=1)
    if spec.accept:  # the suite's accuracy bands hold here too; one this test cannot check fails, as in a run
        median_ms = benchmark.stats.stats.median * 1e3
        measured = {**counts, "latency_ms": Reading(median_ms, "ms"),
                    "latency_per_image_ms": Reading(median_ms / main.images, "ms"),
                    "throughput_img_s": Reading(main.images / (median_ms / 1e3), "images/s")}
        gated = gate(spec.accept, records(spec, "pytest", "pytest", diffbench_case.case_id, utc_now(), measured))
        if case_status(gated) == "inaccurate":
            pytest.fail(f"accuracy bands: {gated[-1].error} (this test measures counts and speed; run the suite "
                        "with 'diffbench run' for the quality its bands name)", pytrace=False)
