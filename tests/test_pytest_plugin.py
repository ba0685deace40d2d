"""The pytest plugin: diffbench cases as pytest-benchmark tests, saved and compared by pytest-benchmark."""

import os
import subprocess
import sys
from pathlib import Path

import pytest


def run_pytest(cwd: Path, suite: str, only: str, *extra: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--diffbench-suite", suite,
                           "--diffbench-device", "cpu", "--diffbench-only", only, *extra],
                          cwd=cwd, capture_output=True, text=True, timeout=900, env=env)


def check_save_then_compare(tmp_path: Path, suite: str, only: str) -> None:
    first = run_pytest(tmp_path, suite, only, "--benchmark-autosave")
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    saved = list((tmp_path / ".benchmarks").rglob("0001_*.json"))
    assert len(saved) == 1 and "test_diffbench_case[" in saved[0].read_text()
    second = run_pytest(tmp_path, suite, only, "--benchmark-compare", "--benchmark-compare-fail=median:50%")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert "passed" in second.stdout


def test_a_suite_case_runs_as_a_benchmark_and_compares(tmp_path: Path):
    check_save_then_compare(tmp_path, "smoke", "dit@1M/*/b1/*")


@pytest.mark.slow
def test_ci_cpu_suite_under_pytest_benchmark(tmp_path: Path):
    check_save_then_compare(tmp_path, "ci-cpu", "*")
