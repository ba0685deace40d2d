"""How noisy a timing was, and what the comparison could have seen: the spread of the per-process values, and the
smallest change a one-sided Mann-Whitney test at the policy's alpha would detect, given that spread.

The detectable change is the usual normal-approximation power formula applied to the log of the per-process values
(repetitions; one process's raw samples where a run has no repetitions, which hide the between-process noise):
``exp((z[1 - alpha] + z[0.8]) * s * sqrt(1/n + 1/m)) - 1``, where ``s`` is the pooled robust standard deviation
(1.4826 x MAD) of the log values. Where ``n`` against ``m`` values cannot give any p below alpha (3 against 3: the
smallest one-sided p is 1/20), nothing is detectable, whatever the spread.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

from scipy.stats import norm

POWER = 0.8
MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class Noise:
    n: int  # values on this side
    spread: float  # max / min of the values (1.0: none)
    per_process: bool  # values are per-process medians (repetitions), not one process's samples


def values(record: Any) -> tuple[list[float], bool]:
    """(values, per process): a record's per-process values where it has repetitions, else its raw samples."""
    reps = record.extra.get("repetitions") if isinstance(record.extra, dict) else None
    if isinstance(reps, list) and len(reps) >= 2:
        return [float(x) for x in reps], True
    return [float(x) for x in record.samples or []], False


def noise(vals: list[float], per_process: bool) -> Noise | None:
    positive = [v for v in vals if v > 0]
    if len(positive) < 2:
        return None
    return Noise(len(positive), max(positive) / min(positive), per_process)


def _robust_sd(logs: list[float]) -> float:
    med = statistics.median(logs)
    return MAD_TO_SD * statistics.median(abs(x - med) for x in logs)


def detectable(a: list[float], b: list[float], alpha: float) -> float:
    """The smallest relative change of the median the test would find with 80% power (math.inf: none)."""
    a, b = [v for v in a if v > 0], [v for v in b if v > 0]
    n, m = len(a), len(b)
    if n < 2 or m < 2 or 1 / math.comb(n + m, n) >= alpha:
        return math.inf
    la, lb = [math.log(v) for v in a], [math.log(v) for v in b]
    s = math.sqrt(((n - 1) * _robust_sd(la) ** 2 + (m - 1) * _robust_sd(lb) ** 2) / (n + m - 2))
    return math.expm1((norm.ppf(1 - alpha) + norm.ppf(POWER)) * s * math.sqrt(1 / n + 1 / m))


def describe(base: Noise | None, new: Noise | None, change: float) -> str:
    """A verdict's note: where the values came from, their spread on each side, what could have been detected."""
    if base is None or new is None:
        return ""
    kind = "processes" if base.per_process and new.per_process else "samples of one process"
    seen = "any change" if change == 0 else "no change at all" if math.isinf(change) else f"+-{change:.0%}"
    return (f"spread {base.spread:.2g}x / {new.spread:.2g}x over {base.n} vs {new.n} {kind}; smallest change "
            f"detectable: {seen}")


def calibration_drift(base: dict[str, Any], new: dict[str, Any]) -> float | None:
    """new / base - 1 of the machines' matmul calibration (device.json), None where either lacks one."""
    key = "calibration_fp32_matmul_gflops"
    a, b = base.get(key), new.get(key)
    if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or isinstance(a, bool) or isinstance(b, bool):
        return None
    return float(b) / float(a) - 1 if a > 0 and b > 0 else None
