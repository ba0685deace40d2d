"""One case contract: a typed spec whose id is unchanged by the redesign, one measurement path for
backbones and pipelines, and a metric registry that holds every metric a case writes."""

import json
import math
from pathlib import Path

import pytest

from diffbench.bench.spec import CaseSpec
from diffbench.core import records
from diffbench.metrics.specs import METRICS, base_name

ROOT = Path(__file__).resolve().parent.parent
BEFORE = json.loads((ROOT / "tests" / "data" / "case_ids_before_redesign.json").read_text())
# The ids as they are now. They change only when what a case measures changes: the redesign (#11) kept every
# one; #14 changed how cases that train do it (the EMA, warm-up, eval_every are in the training spec), so the
# ids of training cases moved then and the file was regenerated; the others (smoke) are still those of before.
CURRENT = json.loads((ROOT / "tests" / "data" / "case_ids.json").read_text())

SUITE = """
name = "contract"
[defaults]
batch_sizes = [2]
warmup = 0
repeats = 2
measure = ["counts", "speed", "memory", "energy", "train", "quality"]
train_steps = 2
train_batch = 4
samples = 16
sample_steps = 2
autoencoder_steps = 2

[[sweeps]]
families = ["dit"]
params = ["0.7M"]
inputs = ["3x16x16"]
classes = 10

[[sweeps]]
pipelines = ["dit"]
scale = "tiny"
"""


@pytest.mark.parametrize("suite", ["smoke", "gpu-check", pytest.param("quick", marks=pytest.mark.slow)])
def test_case_ids_are_stable(suite):
    from diffbench.bench import expansion, suites

    ids = {c.name: c.case_id for c in expansion.expand(suites.load(suite), "cpu")}
    assert ids == CURRENT[suite]
    if suite == "smoke":  # cases that do not train: unchanged since before the redesign, but for the U-Nets whose
        # config changed when narrow widths got at least 4 channels per GroupNorm group (models/shapes.groups)
        regrouped = {"unet-adm@1M/3x32x32/b1/fp32", "unet-adm@1M/3x32x32/b2/fp32"}
        assert {k: v for k, v in ids.items() if k not in regrouped} == \
            {k: v for k, v in BEFORE[suite].items() if k not in regrouped}


def test_spec_round_trips_through_json():
    from diffbench.bench import expansion, suites

    for case in expansion.expand(suites.load("gpu-check"), "cpu"):
        again = CaseSpec.from_json(json.loads(json.dumps(case.spec.to_json())))
        assert again == case.spec and again.case_id == case.case_id


@pytest.fixture(scope="module")
def contract_run(tmp_path_factory) -> list[records.Record]:
    from tests.conftest import run_cli

    d = tmp_path_factory.mktemp("contract")
    (d / "contract.toml").write_text(SUITE)
    p = run_cli("run", str(d / "contract.toml"), "--out", str(d / "run"), "--devices", "cpu,cpu", "--no-progress",
                timeout=600)
    assert p.returncode == 0, p.stderr
    got = records.read(d / "run" / "records.jsonl")
    assert not got.problems
    assert {r.status for r in got.records} <= {"ok", "unsupported"}, [r.error for r in got.records]
    return got.records


def test_every_metric_written_is_in_the_registry_and_listed(contract_run, cli):
    listed = {m["name"]: m for m in json.loads(cli("list", "metrics", "--format", "json").stdout)}
    assert set(listed) == set(METRICS.names())
    for r in contract_run:
        spec = listed[base_name(r.metric)]
        assert r.unit == spec["unit"], r.metric
        assert ("[" in r.metric) <= bool(spec["qualifier"]), r.metric


def test_backbones_and_pipelines_are_measured_alike(contract_run):
    by_kind: dict[bool, dict[str, records.Record]] = {False: {}, True: {}}
    for r in contract_run:
        by_kind["pipeline" in r.config["model"]][r.metric] = r
    backbone, pipeline = by_kind[False], by_kind[True]
    measured = {"timing", "memory", "energy", "efficiency"}

    def measurement(recs: dict[str, records.Record]) -> set[str]:
        return {m for m in recs if METRICS.get(base_name(m)).kind in measured}

    # the pipeline adds its unguided variant and its per-component breakdown, nothing else
    extra = {m for m in measurement(pipeline) if m.endswith("_unguided") or m.startswith("component_ms_per_image[")}
    assert extra and measurement(pipeline) - extra == measurement(backbone)
    for metric in ("mfu", "energy_j_per_image", "mean_power_w", "peak_mem_allocated_bytes", "nvml_peak_used_bytes"):
        assert backbone[metric].status == pipeline[metric].status
        assert backbone[metric].error == pipeline[metric].error, metric  # the same reason, word for word
    for recs in (backbone, pipeline):
        assert recs["latency_ms"].samples and len(recs["latency_ms"].samples) == 2
        assert recs["cpu_peak_rss_bytes"].value > 0
        assert math.isfinite(recs["train_loss_last"].value if "train_loss_last" in recs else
                             next(r.value for m, r in recs.items() if m.startswith("train_loss_last[")))
        assert any(m.startswith("fid[") for m in recs)


def test_records_from_before_the_redesign_load_and_report(tmp_path):
    """Two quick-suite cases (a backbone and a pipeline) recorded by the last version before the redesign:
    the same case ids as now, every metric in the registry, and a full report from them."""
    import shutil

    import diffbench

    old = ROOT / "tests" / "data" / "quick_before_redesign"
    run_dir = tmp_path / "old"
    shutil.copytree(old, run_dir)
    run = diffbench.load_run(run_dir)
    assert run.statuses == {"ok": 2} and not run.problems
    assert set(run.records["case_id"]) <= set(BEFORE["quick"].values())
    assert all(base_name(m) in METRICS for m in run.records["metric"])
    files = diffbench.report(run, tmp_path / "report")
    assert any(f.name == "report.md" for f in files)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "dit@0.7M" in text and "dit@1.5M" in text
