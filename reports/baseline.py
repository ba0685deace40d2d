"""The two sides of a comparison: a run directory, its ``records.jsonl``, or a baseline file.

A baseline is a run's records made compact enough to commit: per case its identity, config and
one provenance, per metric its value, unit, status, error, raw samples and whatever of ``extra`` the
gate tests with (KEPT_EXTRA: the per-process values of a run with repetitions, without which a
baseline-vs-run comparison pooled one process's samples and reached another verdict than run-vs-run
on the same data); and the run's device facts (its calibration, for the noise warning).
``diffbench baseline RUN -o baselines/NAME.json`` writes one; ``compare`` reads any of the three.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from diffbench.core import records
from diffbench.core.errors import BadInputError
from diffbench.core.files import write_text_atomic
from diffbench.metrics.specs import METRICS, MetricKey

FORMAT = "diffbench-baseline"
VERSION = 2  # 2: extra.repetitions and the device facts kept (1 is still read)
KEPT_EXTRA = ("repetitions",)


@dataclass
class Case:
    case_id: str
    label: str
    config: dict[str, Any]
    provenance: dict[str, Any]
    metrics: dict[str, records.Record] = field(default_factory=dict)

    @property
    def status(self) -> str:
        """``inaccurate`` when a value fell outside its accuracy band; ``ok`` when any metric was measured; else the
        status of its failure row (``error``, ``timeout``, ...)."""
        statuses = {r.status for r in self.metrics.values()}
        failed = self.metrics.get("case")
        if failed is not None and failed.status == "inaccurate":
            return "inaccurate"  # measured, but outside its accuracy band: a broken case for compare
        if "ok" in statuses:
            return "ok"
        return failed.status if failed is not None else (statuses.pop() if statuses else "skipped")


@dataclass
class Side:
    source: str
    suite: str
    cases: dict[str, Case]  # case_id -> case
    device: dict[str, Any] = field(default_factory=dict)  # device.json of the run (its calibration), if known
    problems: list[str] = field(default_factory=list)  # unreadable lines of its records, set aside

    def not_ok(self) -> dict[str, str]:
        """label -> status of each case that did not finish ok."""
        return {c.label: c.status for c in self.cases.values() if c.status != "ok"}


def _label(config: dict[str, Any], case_id: str) -> str:
    model = config.get("model", {}) if isinstance(config.get("model"), dict) else {}
    parts = [str(model.get("label", case_id)), f"b{config.get('batch_size')}", str(config.get("precision", ""))]
    return "/".join(p for p in parts if p and p != "bNone")


def _checked(r: records.Record) -> records.Record:
    """A record whose metric the registry names and whose config's model is an object: what compare relies on."""
    key = MetricKey.read(r.metric)
    if r.metric != "case" and (key is None or key.base not in METRICS):
        raise ValueError(f"case {r.case_id[:40]}: {r.metric[:40]!r} is not a metric this diffbench knows")
    if not isinstance(r.config.get("model", {}), dict):
        raise ValueError(f"case {r.case_id[:40]}: config.model must be an object")
    return r


def _from_records(recs: list[records.Record], source: str) -> Side:
    try:
        recs = [_checked(r) for r in recs]
    except ValueError as e:
        raise BadInputError(f"{source}: {e}; give a run or baseline written by diffbench") from None
    if not recs:
        raise BadInputError(f"{source}: no records; give a run directory written by 'diffbench run' or a baseline")
    latest: dict[str, str] = {}
    for r in recs:  # a resumed run can hold several run ids for one case: the last complete one counts
        latest[r.case_id] = r.run_id
    cases: dict[str, Case] = {}
    for r in recs:
        if latest[r.case_id] != r.run_id:
            continue
        case = cases.setdefault(r.case_id, Case(r.case_id, _label(r.config, r.case_id), r.config, r.provenance))
        case.metrics[r.metric] = r
    suites = sorted({r.suite for r in recs})
    return Side(source, ", ".join(suites), cases)


def load_side(path: str | os.PathLike[str]) -> Side:
    """A run directory, a ``records.jsonl`` or a baseline ``.json``."""
    p = Path(path)
    if p.is_dir():
        p = p / "records.jsonl"
        if not p.is_file():
            raise BadInputError(f"{path}: holds no records.jsonl; give a run directory, its records.jsonl or a "
                                "baseline file")
    if not p.is_file():
        raise BadInputError(f"{path}: no such run directory, records file or baseline")
    if p.suffix == ".json":
        return _read_baseline(p)
    got = records.read(p)
    side = _from_records(got.records, str(path))
    side.device, side.problems = _device(p.parent / "device.json"), list(got.problems)
    return side


def _device(path: Path) -> dict[str, Any]:
    try:
        facts = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return facts if isinstance(facts, dict) else {}


def _extra(m: dict[str, Any], where: str) -> dict[str, Any]:
    extra = m.get("extra", {})
    if not isinstance(extra, dict) or set(extra) - set(KEPT_EXTRA):
        raise ValueError(f"{where}: extra may hold only {', '.join(KEPT_EXTRA)}")
    reps = extra.get("repetitions")
    if reps is not None and not (isinstance(reps, list) and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                and math.isfinite(x) for x in reps)):
        raise ValueError(f"{where}: extra.repetitions must be a list of finite numbers")
    return extra


def _read_baseline(p: Path) -> Side:
    try:
        d = json.loads(p.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise BadInputError(f"{p}: not a baseline file ({str(e)[:80]})") from None
    except RecursionError:
        raise BadInputError(f"{p}: not a baseline file (JSON nested too deeply)") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise BadInputError(f"{p}: not a diffbench baseline (write one with 'diffbench baseline RUN -o FILE')")
    if not isinstance(d.get("version"), int) or d["version"] > VERSION:
        raise BadInputError(f"{p}: baseline version {d.get('version')!r} is newer than this diffbench reads")
    recs = []
    try:
        for c in d["cases"]:
            for m in c["metrics"]:
                # every field checked as a records.jsonl line is (types, finite numbers): the same validation
                recs.append(records.Record.from_dict({
                    "run_id": c["run_id"], "case_id": c["case_id"], "suite": d["suite"], "config": c["config"],
                    "metric": m["metric"], "value": m["value"], "unit": m["unit"], "status": m["status"],
                    "error": m.get("error"), "samples": m.get("samples"),
                    "extra": _extra(m, f"case {str(c['case_id'])[:40]}, {str(m['metric'])[:40]}"),
                    "provenance": c["provenance"], "case_size": len(c["metrics"])}))
        device = d.get("device", {})
        if not isinstance(device, dict):
            raise ValueError("device must be an object")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise BadInputError(f"{p}: malformed baseline ({type(e).__name__}: {str(e)[:80]})") from None
    side = _from_records(recs, str(p))
    side.device = device
    return side


def write_baseline(run: str | os.PathLike[str], out: str | os.PathLike[str], allow_failed: bool = False) -> Path:
    """Write the run's latest records of every case as a compact baseline; returns the file. A run with a case that
    did not finish ok is refused unless ``allow_failed``: a broken main must not become the reference."""
    side = load_side(run)
    if side.problems and not allow_failed:
        raise BadInputError(f"{run}: {len(side.problems)} unreadable record line(s) ({side.problems[0][:160]}); a "
                            "baseline of what remains would miss them: rerun, or pass --allow-failed to keep the rest")
    failed = side.not_ok()
    if failed and not allow_failed:
        first = next(iter(failed.items()))
        raise BadInputError(f"{run}: {len(failed)} of {len(side.cases)} case(s) did not finish ok ({first[0]}: "
                            f"{first[1]}); fix and rerun them, or pass --allow-failed to keep them as failed")
    cases = []
    for c in side.cases.values():
        any_rec = next(iter(c.metrics.values()))
        cases.append({"case_id": c.case_id, "run_id": any_rec.run_id, "config": c.config,
                      "provenance": c.provenance,
                      "metrics": [{"metric": r.metric, "value": r.value, "unit": r.unit, "status": r.status,
                                   "error": r.error, "samples": r.samples,
                                   **({"extra": kept} if (kept := {k: r.extra[k] for k in KEPT_EXTRA if k in r.extra})
                                      else {})} for r in c.metrics.values()]})
    doc = {"format": FORMAT, "version": VERSION, "suite": side.suite, "source": str(run), "device": side.device,
           "cases": cases}
    return write_text_atomic(out, json.dumps(doc, separators=(",", ":")) + "\n")
