"""The bad-input corpus, second round (#29): the surface added since the first (baselines and records given to
compare, policies, suites' newer keys, the command-line overrides, the older corners still open). Each entry runs
in-process through the CLI and must end with exit status 2 and one line naming the problem, never a traceback."""

from __future__ import annotations

import contextlib
import json
import shlex
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from diffbench.core import records
from diffbench.core.records import Record
from tests.test_bad_inputs import assert_user_error, run_main

K = "{k}"
CFG = {"model": {"label": "m", "family": "dit"}, "batch_size": 1, "precision": "fp32", "device": "cpu"}
PROV = {"device_name": "cpu", "torch_version": "2", "git_commit": "a", "git_dirty": False}


def good_run(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rows = [("params", 10.0, "count", None), ("latency_ms", 2.0, "ms", [2.0, 2.1, 1.9, 2.0, 2.05])]
    records.append(d / "records.jsonl", [Record("r", "c1", "s", CFG, m, v, u, samples=s, case_size=2,
                                               provenance=PROV) for m, v, u, s in rows])
    return d


def baseline_doc() -> dict:
    return {"format": "diffbench-baseline", "version": 2, "suite": "s", "source": "x", "device": {},
            "cases": [{"case_id": "c1", "run_id": "r", "config": CFG, "provenance": PROV,
                       "metrics": [{"metric": "params", "value": 10.0, "unit": "count", "status": "ok",
                                    "error": None, "samples": None}]}]}


def _set(doc: dict, path: str, value) -> dict:
    """doc with the field at a dotted path (``cases.0.metrics.0.metric``) set to value."""
    target = doc
    parts = path.split(".")
    for p in parts[:-1]:
        target = target[int(p)] if isinstance(target, list) else target[p]
    last = parts[-1]
    if isinstance(target, list):
        target[int(last)] = value
    else:
        target[last] = value
    return doc


BASELINES = {  # name -> (dotted field, value): each a baseline whose one field is wrong
    "config-list": ("cases.0.config", [1, 2]), "provenance-list": ("cases.0.provenance", []),
    "case-id-list": ("cases.0.case_id", ["c1"]), "metric-int": ("cases.0.metrics.0.metric", 3),
    "suite-int": ("suite", 7), "cases-dict": ("cases", {"a": 1}), "metrics-str": ("cases.0.metrics", "x"),
    "value-str": ("cases.0.metrics.0.value", "10"), "value-bool": ("cases.0.metrics.0.value", True),
    "samples-str": ("cases.0.metrics.0.samples", ["a"]), "samples-int": ("cases.0.metrics.0.samples", 5),
    "status-unknown": ("cases.0.metrics.0.status", "fine"), "unit-int": ("cases.0.metrics.0.unit", 1),
    "error-int": ("cases.0.metrics.0.error", 5), "extra-other": ("cases.0.metrics.0.extra", {"curve": []}),
    "extra-list": ("cases.0.metrics.0.extra", [1]), "reps-str": ("cases.0.metrics.0.extra", {"repetitions": ["a"]}),
    "device-list": ("device", [1]), "version-str": ("version", "2"), "version-future": ("version", 99),
    "format-other": ("format", "something"), "run-id-int": ("cases.0.run_id", 4),
    "metric-malformed": ("cases.0.metrics.0.metric", "fid[x"), "metric-unknown": ("cases.0.metrics.0.metric", "nosuch"),
    "value-ok-status-error": ("cases.0.metrics.0.status", "error"), "case-null": ("cases.0", None),
    "metric-null": ("cases.0.metrics.0", None), "config-model-list": ("cases.0.config", {"model": [1]}),
}
RAW_BASELINES = {  # name -> file text
    "not-json": "{", "empty": "", "top-list": "[1, 2]", "deep": "[" * 100_000 + "]" * 100_000,
    "nan-token": json.dumps(baseline_doc()).replace('"value": 10.0', '"value": NaN'),
    "huge-number": json.dumps(baseline_doc()).replace('"value": 10.0', '"value": 1e400'),
    "missing-cases": json.dumps({k: v for k, v in baseline_doc().items() if k != "cases"}),
}
POLICIES = {  # name -> TOML text
    "min-samples-zero": "min_samples = 0", "min-samples-frac": "min_samples = 2.5",
    "min-samples-neg": "min_samples = -1",
    "min-reps-one": "min_repetitions = 1", "alpha-zero": "alpha = 0", "alpha-one": "alpha = 1",
    "threshold-nan": "threshold = nan", "threshold-inf": "threshold = inf", "threshold-str": 'threshold = "x"',
    "threshold-neg": "threshold = -0.1", "unknown-key": "thresh = 0.1", "ignore-str": 'ignore = "x"',
    "allow-change-int": "allow_change = 3", "allow-missing-ints": "allow_missing = [1, 2]",
    "metrics-not-table": "metrics = 3", "metric-key": "[metrics.latency_ms]\nspeed = 1",
    "metric-value": '[metrics.latency_ms]\nthreshold = "x"', "cases-not-list": "cases = 3",
    "cases-no-glob": "[[cases]]\nthreshold = 0.1", "case-unknown-key": '[[cases]]\nglob = "*"\nfoo = 1',
    "spread-below-one": "spread_warning = 0.5", "not-toml": "= = =", "bool-threshold": "threshold = true",
}
SUITE = 'name = "b"\n[defaults]\nmeasure = ["counts"]\n{extra}\n[[sweeps]]\nfamilies = ["dit"]\nparams = ["1M"]\n'
SUITES = {  # name -> (text added to [defaults] or a sweep, fragment)
    "classes-huge": ('[[sweeps]]\nfamilies = ["dit"]\nparams = ["1M"]\nclasses = 1000000000', "classes"),
    "timeout-huge": ("timeout_s = 1e300", "timeout_s"), "report-metric": ('[report]\nmetric = "latency_ms"', "metric"),
    "report-key": ('[report]\ntitle = "x"', "title"), "report-not-table": ("report = 3", "report"),
    "train-flops-neg": ("train_flops = -1.0", "train_flops"), "train-flops-inf": ("train_flops = inf", "train_flops"),
    "band-unknown": ("accept = { fdi = [0, 1] }", "fdi"), "band-interval": ('accept = { "fid[digits] se" = [0, 1] }',
                                                                          "not a metric"),
    "both-shapes": ('[[sweeps]]\nfamilies = ["dit"]\nparams = ["1M"]\ninputs = ["1x8x8"]\ninput_shapes = ["1x8x8"]',
                    "input_shapes only"),
}


def build(k: Path) -> None:
    good_run(k / "good")
    for name, (field, value) in BASELINES.items():
        (k / f"base-{name}.json").write_text(json.dumps(_set(baseline_doc(), field, value)))
    for name, text in RAW_BASELINES.items():
        (k / f"base-{name}.json").write_text(text)
    (k / "base-binary.json").write_bytes(b"\x00\xff\xfe" * 10)
    for name, text in POLICIES.items():
        (k / f"pol-{name}.toml").write_text(text)
    for name, (extra, _) in SUITES.items():
        text = SUITE.format(extra=extra) if not extra.startswith(("[[", "[report")) else \
            SUITE.format(extra="") + extra
        (k / f"suite-{name}.toml").write_text(text)
    bad = good_run(k / "run-config-list")
    lines = (bad / "records.jsonl").read_text().splitlines()
    (bad / "records.jsonl").write_text("\n".join(line.replace('"config":{', '"config":[1],"x":{') for line in lines))
    (k / "not-safetensors.safetensors").write_bytes(b"not weights at all" * 10)
    imgs = k / "imgs"
    imgs.mkdir()
    import numpy as np
    from PIL import Image

    for i in range(3):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(imgs / f"{i}.png")


CORPUS = (
    [(f"compare-base-{n}", f"compare {{k}}/base-{n}.json {{k}}/good", f"base-{n}.json")
     for n in [*BASELINES, *RAW_BASELINES, "binary"]]
    + [(f"compare-policy-{n}", f"compare {{k}}/good {{k}}/good --policy {{k}}/pol-{n}.toml", f"pol-{n}.toml")
       for n in POLICIES]
    + [(f"suite-{n}", f"run {{k}}/suite-{n}.toml --dry-run", frag) for n, (_, frag) in SUITES.items()]
    + [("compare-records-config-list", "compare {k}/run-config-list {k}/good", "run-config-list"),
       ("baseline-records-config-list", "baseline {k}/run-config-list -o {k}/x.json", "run-config-list"),
       ("run-timeout-huge", "run smoke --timeout 1e300 --dry-run", "--timeout"),
       ("run-set-no-equals", "run smoke --set train_steps --dry-run", "KEY=VALUE"),
       ("run-set-unknown-sweep", "run quick --set sweeps.nosuch.lr=1 --dry-run", "nosuch"),
       ("run-set-bad-path", "run smoke --set a.b.c.d=1 --dry-run", "a.b.c.d"),
       ("run-set-bad-value", "run smoke --set train_steps=-5 --dry-run", "train_steps"),
       ("run-set-unknown-key", "run smoke --set trainsteps=5 --dry-run", "trainsteps"),
       ("report-metric-unknown", "report {k}/good --metric latency_ms", "latency_ms"),
       ("fid-weights-not-safetensors", "fid {k}/imgs {k}/imgs --detector digits --weights "
        "{k}/not-safetensors.safetensors --allow-unverified-weights", "not-safetensors.safetensors"),
       ("sample-out-not-empty", "sample dit --n 1 --steps 1 --out {k}/imgs", "other files")]
)


@pytest.fixture(scope="module")
def kit(tmp_path_factory):
    k = tmp_path_factory.mktemp("kit2")
    build(k)
    return k


def test_the_second_corpus_is_large_and_names_are_unique():
    assert len(CORPUS) >= 60
    assert len({c[0] for c in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("line,fragment", [(c[1], c[2]) for c in CORPUS], ids=[c[0] for c in CORPUS])
def test_bad_input_is_one_line_and_exit_2(line, fragment, kit, capsys):
    argv = [a.replace(K, str(kit)) for a in shlex.split(line)]
    code, _, err = run_main(argv, capsys)
    assert_user_error(code, err, fragment, kit)


leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.text(max_size=4))
anything = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                      st.dictionaries(st.text(max_size=6), kids, max_size=3)),
                        max_leaves=6)
FIELDS = ["suite", "version", "device", "cases", "cases.0", "cases.0.case_id", "cases.0.run_id", "cases.0.config",
          "cases.0.provenance", "cases.0.metrics", "cases.0.metrics.0", "cases.0.metrics.0.metric",
          "cases.0.metrics.0.value", "cases.0.metrics.0.unit", "cases.0.metrics.0.status",
          "cases.0.metrics.0.samples", "cases.0.metrics.0.extra", "cases.0.metrics.0.error"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(FIELDS), value=anything, policy=st.dictionaries(
    st.sampled_from(["alpha", "min_samples", "min_repetitions", "threshold", "spread_warning", "ignore",
                     "allow_missing", "calibration_tolerance", "memory_min_mib"]), anything, max_size=3))
def test_fuzzed_baselines_and_policies_through_compare_end_in_a_user_error_at_worst(field, value, policy, kit):
    import diffbench

    base = kit / "fuzz-base.json"
    base.write_text(json.dumps(_set(baseline_doc(), field, value)))
    pol = kit / "fuzz-policy.toml"
    pol.write_text("\n".join(f"{k} = {json.dumps(v)}" for k, v in policy.items() if v is not None
                             and not isinstance(v, dict)))
    with contextlib.suppress(diffbench.UserError):  # anything else escaping is the failure
        diffbench.compare(base, kit / "good", policy=pol)


@pytest.mark.parametrize("tamper", ["step", "losses", "tensor"])
def test_a_tampered_training_checkpoint_is_one_line(tmp_path, capsys, tamper):
    """diffbench train --checkpoint-every 1, then a checkpoint edited by hand: resuming is one line, no traceback."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    args = ["train", "dit", "--dataset", "digits", "--steps", "2", "--checkpoint-every", "1", "--autoencoder-steps",
            "1", "--batch-size", "4", "--out", str(tmp_path / "t")]
    code, _, err = run_main(args, capsys)
    assert code == 0, err
    ckpt = tmp_path / "t" / "parts" / "denoiser" / "checkpoint.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(ckpt))
    if tamper == "step":
        meta["step"] = "two"
    elif tamper == "losses":
        meta["losses"] = "[1, "
    else:
        name = next(k for k in tensors if k.startswith("model."))
        tensors[name] = torch.zeros(3)
    save_file(tensors, str(ckpt), metadata=meta)
    code, _, err = run_main(args, capsys)
    assert_user_error(code, err, "checkpoint.safetensors", tmp_path)
