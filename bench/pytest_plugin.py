"""pytest plugin (registered by the package): ``pytest --diffbench-suite SUITE`` runs each case of a diffbench
suite as one pytest-benchmark test, so that teams who already gate with pytest-benchmark
(``--benchmark-autosave``, ``--benchmark-compare``, ``--benchmark-compare-fail=median:5%``) gate on diffbench
cases with the same commands. The timed call is the case's main evaluation, synchronised on a GPU; the
case's counts go into the benchmark's ``extra_info``. Importing this module costs nothing until the option
is given."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

CASES_MODULE = Path(__file__).with_name("pytest_cases.py")


def pytest_addoption(parser: Any) -> None:
    group = parser.getgroup("diffbench")
    group.addoption("--diffbench-suite", metavar="SUITE", default=None,
                    help="run each case of this diffbench suite (a built-in name or a TOML file) as a benchmark test")
    group.addoption("--diffbench-device", metavar="DEVICE", default="auto",
                    help="device for --diffbench-suite: auto, cpu or cuda[:N] (default: auto)")
    group.addoption("--diffbench-only", metavar="GLOBS", default=None,
                    help="with --diffbench-suite: only the cases whose names match (comma-separated globs)")


def pytest_configure(config: Any) -> None:
    if not config.getoption("diffbench_suite"):
        return
    import pytest

    if importlib.util.find_spec("pytest_benchmark") is None:  # an extra, not a runtime dependency
        raise pytest.UsageError("--diffbench-suite runs each case as a pytest-benchmark test: pip install "
                                "'diffbench[pytest]' (pytest-benchmark)")

    explicit = getattr(config, "args_source", None) == pytest.Config.ArgsSource.ARGS
    # with no test paths on the command line, the suite's cases are the whole run (not the project's tests too)
    config.args = [*config.args, str(CASES_MODULE)] if explicit else [str(CASES_MODULE)]
