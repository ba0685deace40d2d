import contextlib
import io
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m diffbench ARGS`` as a user would, in a new process; returns the completed process."""
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "diffbench", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env=env)


def call_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``diffbench ARGS`` through the CLI's own entry point (``main``), in this process: the same parsing, exit
    status and output as a new process, without the 3-5 s a new Python spends importing torch. An exception
    that ``main`` lets through reaches the test as the traceback a user would have seen."""
    from diffbench.cli import main

    out, err = io.StringIO(), io.StringIO()
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                code = main(list(args))
            except SystemExit as e:  # argparse's --help and --version
                code = e.code if isinstance(e.code, int) else 0
    finally:
        os.chdir(cwd)
    return subprocess.CompletedProcess(["diffbench", *args], code, out.getvalue(), err.getvalue())


@pytest.fixture(autouse=True, scope="session")
def _reference_cache(tmp_path_factory):
    """The tests' reference-feature cache is theirs alone (not ~/.cache), shared by the session's processes."""
    os.environ["DIFFBENCH_CACHE"] = str(tmp_path_factory.mktemp("diffbench-cache"))
    yield


@pytest.fixture
def cli():
    """The CLI in this process (see call_cli); tests about processes (signals, imports, the environment) use
    run_cli."""
    return call_cli
