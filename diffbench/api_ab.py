"""``diffbench.ab``: a change's base and head measured in one job, interleaved, then compared (bench/ab.py)."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any


def _toml(key: str, value: Any) -> str:
    """``KEY=VALUE`` as ``diffbench run --set`` reads it back (JSON's scalars and arrays are TOML's)."""
    from diffbench.core.errors import ConfigError

    def plain(v: Any) -> bool:
        if isinstance(v, float):
            return math.isfinite(v)
        return isinstance(v, (str, int, bool)) or (isinstance(v, list) and all(map(plain, v)))

    if not plain(value):
        raise ConfigError(f"override {key}={value!r}: diffbench ab passes overrides on to each side as --set, which "
                          "takes strings, numbers, booleans and lists of them")
    return f"{key}={json.dumps(value)}"


def ab(base: str, head: str | None = None, suite: str | Path = "ci-cpu", out: str | Path | None = None,
       device: str = "auto", rounds: int | None = None, only: str | None = None,
       overrides: dict[str, Any] | None = None, policy: str | Path | None = None, allow_change: tuple[str, ...] = (),
       keep: bool = False) -> Any:
    """Run ``suite`` at the commit ``base`` and at ``head`` (default: this checkout, uncommitted changes included)
    in this one job, each side in its own checkout and environment, their repetitions interleaved in ABBA rounds,
    then compare them as :func:`compare` does. ``rounds`` (default: the suite's largest ``repetitions``): how many
    times each case is measured a side, each time in a fresh process; ``only`` and ``overrides`` as in :func:`run`,
    applied to both sides; ``keep`` keeps the worktrees and environments made here. Returns an ``ABResult``:
    ``out`` (each side's rounds and merged records, ab.json, compare.md), ``comparison`` and ``failed``."""
    from diffbench import api
    from diffbench.bench import ab as abm
    from diffbench.bench import checkouts
    from diffbench.bench.suites import load
    from diffbench.core.errors import ConfigError
    from diffbench.core.log import logger
    from diffbench.metrics.device import resolve_device
    from diffbench.reports.policy import load as load_policy

    if rounds is not None and (isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 100):
        raise ConfigError(f"rounds must be an integer from 1 to 100, got {rounds!r}")
    least = load_policy(policy).rules.min_repetitions  # the policy read before anything runs
    sets = [_toml(k, v) for k, v in (overrides or {}).items()]
    repo = checkouts.repository()
    for ref in (base, head):
        if ref is not None:
            checkouts.resolve(repo, ref)
    name = load(str(suite)).name
    where = Path(out) if out is not None else Path(f"runs/ab-{name}-{dt.datetime.now():%Y%m%d-%H%M%S}")
    where = where.resolve()
    if where.exists() and (not where.is_dir() or any(where.iterdir())):
        raise ConfigError(f"{where} exists and is not empty; give --out a new directory")
    device = resolve_device(device)
    cases = api.plan(suite, device, only, overrides)
    if not cases:
        raise ConfigError(f"{suite} expands to no case on {device}; nothing to compare")
    schedule = abm.Schedule.of(cases, rounds)
    if schedule.rounds < least:
        logger.warning(f"{schedule.rounds} round(s): fewer than {least} processes a side, so timings are tested on "
                       f"raw samples, not across processes; give rounds >= {least}")
    sides = abm.prepare(repo, base, head, where, logger.info)
    try:
        suites = {n: abm.side_suite(str(suite), s, repo, logger.info) for n, s in sides.items()}
        rounds_done = abm.interleave(sides, schedule, suites, where, device, sets, only, logger.info)
        result = abm.ABResult(where, {n: s.describe() for n, s in sides.items()}, rounds_done)
        for n in abm.SIDES:
            result.warnings += [f"{n}: unreadable line {p}" for p in abm.merge_side(
                [where / n / f"round-{i}" for i in range(1, schedule.rounds + 1)], where / n)]
        result.comparison = api.compare(where / "base", where / "head", policy, tuple(allow_change),
                                        allow_env_change=True)
        abm.write_summary(result, str(suite), device, sets)
        return result
    finally:
        if not keep:
            abm.release(repo, sides)
