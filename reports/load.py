"""Records -> pandas. The only module of ``reports`` that knows the record layout.

Failed cases stay in the frames as status rows (``status`` not ``ok``, ``error`` set), so a
report can show them beside the numbers.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from diffbench.core import records
from diffbench.core.errors import BadInputError
from diffbench.metrics.specs import METRICS, metric_name

UNCERTAINTY = ("se", "ci_lo", "ci_hi")  # a metric's interval, from its record's extra (se, ci95)
IDENTITY = ["case_id", "label", "family", "preset", "pipeline", "input", "batch_size", "precision", "device",
            "matched_by", "budget", "train_batch"]


@dataclass
class RunData:
    run_dir: Path
    long: pd.DataFrame  # one row per record
    wide: pd.DataFrame  # one row per case: identity, metric values, status, error
    problems: list[str]  # unreadable lines (a torn last line, ...), reported and skipped
    device: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    choices: dict[str, Any] = field(default_factory=dict)  # the suite's [report] table (suite.resolved.json)


def _matched(target: Any) -> tuple[str, float] | None:
    """(params or gmacs, value): the sizing target a case was matched to, from its config."""
    if isinstance(target, dict) and len(target) == 1:
        [(by, size)] = target.items()
        if isinstance(by, str) and isinstance(size, (int, float)) and not isinstance(size, bool) and _finite(size):
            return by, float(size)
    return None


def _timing_noise(r: records.Record) -> dict[str, Any]:
    """The main latency's raw samples (one process) and per-process values (a run with repetitions)."""
    if r.metric != "latency_ms":
        return {"samples": None, "repetitions": None}
    reps = r.extra.get("repetitions")
    return {"samples": r.samples, "repetitions": reps if isinstance(reps, list) and all(map(_finite, reps)) else None}


def _row(r: records.Record) -> dict[str, Any]:
    model = r.config.get("model") or {}
    if not isinstance(model, dict):
        raise ValueError(f"config.model must be an object, got {type(model).__name__}")
    ref = model.get("reference") or {}
    if not isinstance(ref, dict):
        raise ValueError(f"config.model.reference must be an object, got {type(ref).__name__}")
    for key, kinds in (("label", str), ("family", str), ("preset", str), ("pipeline", str)):
        if model.get(key) is not None and not isinstance(model[key], kinds):
            raise ValueError(f"config.model.{key} must be a string, got {type(model[key]).__name__}")
    shape = model.get("input")
    if shape is not None and not (isinstance(shape, list) and all(isinstance(v, int) for v in shape)):
        raise ValueError("config.model.input must be a list of integers")
    for key, kind in (("batch_size", int), ("precision", str), ("device", str), ("train_batch", int)):
        v = r.config.get(key)
        if v is not None and (not isinstance(v, kind) or isinstance(v, bool)):
            raise ValueError(f"config.{key} must be {'an integer' if kind is int else 'a string'}")
    for key in ("params", "paper_params", "paper_gflops", "gmacs", "paper_fid"):
        v = ref.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise ValueError(f"config.model.reference.{key} must be a number")
    for key in ("detector", "weights_sha256"):
        if r.extra.get(key) is not None and not isinstance(r.extra[key], str):
            raise ValueError(f"extra.{key} must be a string")
    matched = _matched(model.get("target"))
    raw_se, raw_ci = r.extra.get("se"), r.extra.get("ci95")
    se = float(raw_se) if isinstance(raw_se, (int, float)) and _finite(raw_se) else None
    ci: list[Any] = raw_ci if isinstance(raw_ci, list) and len(raw_ci) == 2 and all(map(_finite, raw_ci)) else []
    ok_ci = bool(ci)
    return {
        "case_id": r.case_id, "run_id": r.run_id, "suite": r.suite, "label": model.get("label", r.case_id),
        "family": model.get("family"), "preset": model.get("preset"),
        # a pipeline (built in, or a diffusers directory by its label): kept out of the backbones' scaling fit
        "pipeline": model.get("pipeline") or (model.get("label") if model.get("diffusers") else None),
        "input": "x".join(map(str, model.get("input") or [])) or None,
        "batch_size": r.config.get("batch_size"), "precision": r.config.get("precision"),
        # the size a case was matched to (its sizing target: params or gmacs, and its value), the batch it trained with
        "matched_by": matched[0] if matched else None, "budget": matched[1] if matched else None,
        "train_batch": r.config.get("train_batch"),
        "device": r.config.get("device"), "metric": r.metric, "value": r.value, "unit": r.unit, "status": r.status,
        "error": r.error, "detector": r.extra.get("detector"), "weights_sha256": r.extra.get("weights_sha256"),
        "verified": r.extra.get("verified"), "paper_params": ref.get("params", ref.get("paper_params")),
        "paper_gflops": ref.get("paper_gflops", ref.get("gmacs")), "paper_fid": ref.get("paper_fid"),
        "git_commit": r.provenance.get("git_commit"), "device_name": r.provenance.get("device_name"),
        "se": se, "ci_lo": float(ci[0]) if ok_ci else None, "ci_hi": float(ci[1]) if ok_ci else None,
        "curve": _curve(r.extra.get("curve")),
        **_timing_noise(r),
        "where": where(r.provenance.get("placement")),
    }


def where(placement: Any) -> str:
    """Where a case ran, in a few words, from its provenance's placement (records before it: 'local')."""
    if not isinstance(placement, dict) or not placement:
        return "local"
    p = {k: v for k, v in placement.items() if isinstance(v, (str, int, float)) and not isinstance(v, bool)}
    launcher = str(p.get("launcher", "local"))
    node = str(p.get("node", ""))[:40]
    parts = [launcher]
    if launcher == "devices":
        raw = placement.get("devices")
        devices: list[Any] = raw if isinstance(raw, list) else []
        parts.append(f"worker {p.get('worker', '?')} ({','.join(map(str, devices))[:40]})")
    if "array_job_id" in p:
        parts.append(f"job {str(p['array_job_id'])[:24]}_{str(p.get('array_task_id', '?'))[:8]}")
    elif "job_id" in p:
        parts.append(f"job {str(p['job_id'])[:24]}")
    if "world_size" in p and str(p["world_size"]) not in ("1", "1.0"):
        parts.append(f"rank {p.get('rank', '?')}/{p['world_size']}")
    if node:
        parts.append(f"on {node}")
    return " ".join(parts)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _curve(raw: Any) -> list[tuple[float, float, float | None, float | None]] | None:
    """A quality metric along training (``extra.curve``): (train FLOPs, value, lo, hi) points, or None."""
    if not isinstance(raw, list):
        return None
    out: list[tuple[float, float, float | None, float | None]] = []
    for p in raw:
        if not isinstance(p, dict):
            return None
        x, v, ci = p.get("train_flops"), p.get("value"), p.get("ci95")
        if not (isinstance(x, (int, float)) and isinstance(v, (int, float)) and _finite(x) and _finite(v)):
            return None
        lo, hi = (float(ci[0]), float(ci[1])) if isinstance(ci, list) and len(ci) == 2 and all(map(_finite, ci)) \
            else (None, None)
        out.append((float(x), float(v), lo, hi))
    return out or None


def load_run(run_dir: str | Path) -> RunData:
    d = Path(run_dir)
    if not d.is_dir():
        raise BadInputError(f"{d}: no such run directory; give a directory written by 'diffbench run'")
    path = d / "records.jsonl"
    if not path.is_file():
        raise BadInputError(f"{d}: holds no records.jsonl; give a directory written by 'diffbench run'")
    got = records.read(path)
    rows, kept = [], []
    for r in got.records:  # a record whose case config has the wrong shape is set aside like a torn line
        try:
            rows.append(_row(r))
            kept.append(r)
        except ValueError as e:
            got.problems.append(f"{path}: record of case {r.case_id[:40]!r}, metric {r.metric[:40]!r} skipped: {e}")
    got.records = kept
    if not got.records:
        raise BadInputError(f"{path}: no records{' (' + got.problems[0] + ')' if got.problems else ''}; "
                            "run the suite first")
    long = pd.DataFrame(rows)
    # a detector-qualified metric is written with its detector (fid[digits]); older records named it in extra only
    by_detector = {n for n, m in METRICS.items() if m.qualifier == "detector"}
    long["metric_key"] = [
        metric_name(m, det) if isinstance(det, str) and m in by_detector else m
        for m, det in zip(long["metric"], long["detector"], strict=True)
    ]
    device = _device_facts(d / "device.json", got.problems)
    prov = dict(got.records[-1].provenance)
    return RunData(d, long, _wide(long), got.problems, device, prov, _choices(d / "suite.resolved.json", got.problems))


def _choices(path: Path, problems: list[str]) -> dict[str, Any]:
    """The suite's report choices (its ``[report]`` table, as the runner wrote it), or {}."""
    if not path.is_file():
        return {}
    try:
        got = json.loads(path.read_bytes()).get("report", {})
    except (ValueError, RecursionError, AttributeError):
        problems.append(f"{path}: unreadable, the suite's report choices ignored")
        return {}
    if not isinstance(got, dict) or not all(isinstance(v, str) for v in got.values()):
        problems.append(f"{path}: report is not an object of strings, ignored")
        return {}
    return got


def _device_facts(path: Path, problems: list[str]) -> dict[str, Any]:
    """device.json as written by the runner, or {} with a problem line when it is missing a dict's shape."""
    if not path.is_file():
        return {}
    try:
        facts = json.loads(path.read_bytes())
    except (ValueError, RecursionError) as e:
        problems.append(f"{path}: unreadable, ignored ({' '.join(str(e).split())[:80]})")
        return {}
    if not isinstance(facts, dict) or not all(isinstance(v, (str, int, float, bool, type(None)))
                                              for v in facts.values()):
        problems.append(f"{path}: not an object of plain values, ignored")
        return {}
    return facts


def _wide(long: pd.DataFrame) -> pd.DataFrame:
    ident = long.groupby("case_id", sort=False)[IDENTITY[1:] + ["paper_params", "paper_gflops", "paper_fid"]].first()
    ok = long[long["status"] == "ok"]
    values = ok.pivot_table(index="case_id", columns="metric_key", values="value", aggfunc="first")
    failed = long[long["metric"] == "case"].set_index("case_id")[["status", "error"]]
    wide = ident.join(values, how="left").join(failed, how="left")
    for stat in UNCERTAINTY:  # "fid[digits] se", "fid[digits] ci_lo", ...: where records carry an interval
        if ok[stat].notna().any():
            u = ok.pivot_table(index="case_id", columns="metric_key", values=stat, aggfunc="first")
            u.columns = [f"{c} {stat}" for c in u.columns]
            wide = wide.join(u, how="left")
    wide["status"] = wide["status"].fillna("ok")
    def key(c: str) -> tuple[str, float, str, int, str]:
        params: Any = wide.at[c, "params"] if "params" in wide.columns else None
        size = float(params) if params is not None and pd.notna(params) else float("inf")
        batch: Any = wide.at[c, "batch_size"]
        return (str(wide.at[c, "family"]), size, str(wide.at[c, "label"]), int(batch or 0),
                str(wide.at[c, "precision"]))

    order = sorted(wide.index, key=key)
    return wide.loc[order].reset_index()


def unavailable_reasons(long: pd.DataFrame) -> dict[str, str]:
    """metric -> the reason records give for a null value (first seen), for columns left empty."""
    out: dict[str, str] = {}
    for m, e in long.loc[long["status"] != "ok", ["metric_key", "error"]].itertuples(index=False):
        out.setdefault(m, e)
    return out
