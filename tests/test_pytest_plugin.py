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


@pytest.mark.slow  # 38 s: two pytest processes; the plugin's own code runs in the fast test below by default
def test_a_suite_case_runs_as_a_benchmark_and_compares(tmp_path: Path):
    check_save_then_compare(tmp_path, "smoke", "dit@1M/*/b1/*")


class FakeBenchmark:
    """pytest-benchmark's fixture as the plugin's test uses it: extra_info, and pedantic calling the target."""

    def __init__(self) -> None:
        self.extra_info: dict = {}
        self.calls = 0

    def pedantic(self, target, rounds, warmup_rounds, iterations):
        import time
        from types import SimpleNamespace

        assert iterations == 1 and rounds >= 1
        times = []
        for _ in range(rounds + warmup_rounds):
            t0 = time.perf_counter()
            target()
            times.append(time.perf_counter() - t0)
            self.calls += 1
        self.stats = SimpleNamespace(stats=SimpleNamespace(median=sorted(times)[len(times) // 2]))


def test_the_plugin_parametrizes_a_suites_cases_and_times_the_main_call(tmp_path: Path):
    """The plugin in this process: one test per case of the suite (ids are the case names), and each times the
    case's main evaluation with its counts in extra_info."""
    from types import SimpleNamespace

    from diffbench.bench import pytest_cases

    suite = tmp_path / "one.toml"
    suite.write_text('name = "one"\n[defaults]\nbatch_sizes = [1, 2]\nwarmup = 1\nrepeats = 2\n'
                     'measure = ["counts", "speed"]\n[[sweeps]]\npresets = ["DiT-S/8"]\n')
    options = {"diffbench_suite": str(suite), "diffbench_device": "cpu", "diffbench_only": "*/b1/*"}
    got: dict = {}
    metafunc = SimpleNamespace(fixturenames=["benchmark", "diffbench_case"],
                               config=SimpleNamespace(getoption=options.__getitem__),
                               parametrize=lambda name, values, ids: got.update(name=name, values=values, ids=ids))
    pytest_cases.pytest_generate_tests(metafunc)
    assert got["name"] == "diffbench_case" and len(got["values"]) == 1 and got["ids"] == [got["values"][0].name]
    bench = FakeBenchmark()
    pytest_cases.test_diffbench_case(bench, got["values"][0])
    spec = got["values"][0].spec
    assert bench.calls == spec.repeats + spec.warmup
    assert bench.extra_info["case_id"] == got["values"][0].case_id and bench.extra_info["params"] > 0


@pytest.mark.slow
def test_ci_cpu_suite_under_pytest_benchmark(tmp_path: Path):
    check_save_then_compare(tmp_path, "ci-cpu", "*")


def test_the_plugin_holds_a_suites_accuracy_bands(tmp_path: Path):
    """A band the case misses fails its test (the plugin ignored bands); one it cannot check (a FID: the test
    measures counts and speed) fails too, as in a run."""
    from types import SimpleNamespace

    from diffbench.bench import pytest_cases

    def case(accept: str):
        suite = tmp_path / "one.toml"
        suite.write_text('name = "one"\n[defaults]\nbatch_sizes = [1]\nwarmup = 0\nrepeats = 1\n'
                         f'measure = ["counts", "speed"]\naccept = {{{accept}}}\n[[sweeps]]\npresets = ["DiT-S/8"]\n')
        got: dict = {}
        options = {"diffbench_suite": str(suite), "diffbench_device": "cpu", "diffbench_only": None}
        pytest_cases.pytest_generate_tests(SimpleNamespace(
            fixturenames=["diffbench_case"], config=SimpleNamespace(getoption=options.__getitem__),
            parametrize=lambda name, values, ids: got.update(values=values)))
        return got["values"][0]

    pytest_cases.test_diffbench_case(FakeBenchmark(), case("gmacs = [0.3, 0.4]"))  # DiT-S/8: 0.36 GMACs
    with pytest.raises(pytest.fail.Exception, match="gmacs 0.3[0-9]* outside its band"):
        pytest_cases.test_diffbench_case(FakeBenchmark(), case("gmacs = [0, 0.1]"))
    with pytest.raises(pytest.fail.Exception, match="fid has no value"):
        pytest_cases.test_diffbench_case(FakeBenchmark(), case("fid = [0, 100]"))
