"""Metric names are typed: ``MetricKey(base, qualifier)`` builds and reads ``name[qualifier]`` in the registry
(metrics/specs.py) and nowhere else; reports pick their quality columns by the registry's kind and direction."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

from diffbench.metrics.specs import METRICS, MetricKey, check, is_detector_quality, metric_name

ROOT = Path(__file__).resolve().parent.parent
REGISTRY = "metrics/specs.py"
NAMES = "|".join(sorted(METRICS, key=len, reverse=True))
IN_STRINGS = [
    (re.compile(rf"(?<![A-Za-z0-9_])({NAMES})\["), "a metric name with a [qualifier] written by hand"),
    (re.compile(r"\}\[\{"), "a name and a qualifier joined as {name}[{qualifier}]"),
    (re.compile(r"^[rb]?f[\"']\[\{[^}]*\}\]"), "a qualifier bracketed by hand"),
]
IN_CODE = [
    (re.compile(r"\.(split|rsplit|partition|rpartition|index|find|replace|strip|rstrip|lstrip)\(\s*[\"'][\[\]][\"']"),
     "a metric name split on its brackets"),
    (re.compile(r"[\"']\[[\"']\s+(not\s+)?in\b"), "a test for a [qualifier] by a bracket"),
    (re.compile(r"\.(endswith|startswith)\(\s*\(?[\"'][^\"']*[\[\]][\"']"), "a [qualifier] found by its brackets"),
]


def hand_made_names(path: Path) -> list[str]:
    """Where ``path`` builds or splits a ``name[qualifier]`` with string operations."""
    rel = path.relative_to(ROOT).as_posix()
    out = []
    for tok in tokenize.generate_tokens(io.StringIO(path.read_text()).readline):
        if tok.type == tokenize.STRING and not tok.string.lstrip("rbuf").startswith(('"""', "'''")):  # not docs
            out += [f"{rel}:{tok.start[0]} {why}" for rx, why in IN_STRINGS if rx.search(tok.string)]
    for n, line in enumerate(path.read_text().splitlines(), 1):
        out += [f"{rel}:{n} {why}" for rx, why in IN_CODE if rx.search(line)]
    return out


def test_no_metric_name_is_built_or_split_outside_the_registry():
    files = [p for d in ("bench", "models", "metrics", "reports", "diffusion", "diffbench/core", "scripts")
             for p in (ROOT / d).rglob("*.py")] + [ROOT / "diffbench" / "api.py"]
    bad = [hit for p in files if p.relative_to(ROOT).as_posix() != REGISTRY for hit in hand_made_names(p)]
    assert not bad, "; ".join(bad)


@pytest.mark.parametrize("source", [
    'name = f"fid[{det.name}]"\n',
    'name = "phase_seconds[train]"\n',
    'name = f"{m}[{det}]"\n',
    'q = f"[{part}]"\n',
    'base = metric.split("[", 1)[0]\n',
    'if "[" in name:\n    pass\n',
    'ok = c.startswith(("fid[", "kid["))\n',
])
def test_the_check_finds_a_hand_made_name(source):
    probe = ROOT / "bench" / "_metric_name_probe.py"
    probe.write_text(source)
    try:
        assert hand_made_names(probe), source
    finally:
        probe.unlink()


def test_metric_key_round_trips_and_is_checked():
    assert MetricKey.parse("fid[digits]") == MetricKey("fid", "digits") and str(MetricKey("fid", "digits")) == \
        "fid[digits]" == metric_name("fid", "digits")
    assert MetricKey.parse("params") == MetricKey("params") and metric_name("params") == "params"
    assert MetricKey.parse("clip_score[coco-30k:ViT-B-32]").qualifier == "coco-30k:ViT-B-32"
    assert MetricKey.parse("fid[digits]").with_base("fid_real") == MetricKey("fid_real", "digits")
    assert MetricKey.parse("fid[digits]").header() == "fid (digits)"
    assert MetricKey.parse("fid[digits]").slug() == "fid_digits"
    check("fid[digits]", "1")
    for bad, unit in (("params[x]", "count"), ("fid[x", "1"), ("fid[]", "1"), ("fid[digits]", "ms")):
        with pytest.raises(ValueError):
            check(bad, unit)


def test_the_report_fits_quality_by_the_registrys_kind_and_direction():
    assert is_detector_quality("fid[digits]") and is_detector_quality("kid[inception-v3]")
    assert not is_detector_quality("fid_real[digits]")  # a floor, neither better nor worse
    assert not is_detector_quality("fid")  # no detector named: never fitted against another detector's
    assert not is_detector_quality("clip_score[shapes]")  # better higher
    assert is_detector_quality("clip_score[shapes]", better="higher")
