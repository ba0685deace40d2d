"""The CLI starts without torch where it needs none: --help, --version and the listings that read no model
(checked with python -X importtime, which names every module a process imports)."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT

LIGHT = [["--help"], ["--version"], ["run", "--help"], ["report", "--help"], ["list", "metrics"], ["list", "suites"],
         ["list", "protocols"], ["list", "detectors"], ["list", "commands"], ["list", "presets"], ["list", "families"]]


def imported(args: list[str]) -> set[str]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "diffbench", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize("args", LIGHT, ids=" ".join)
def test_help_version_and_listings_do_not_import_torch(args):
    mods = imported(args)
    assert "diffbench.cli" in mods  # the import log is read
    heavy = sorted(m for m in mods if m.split(".")[0] in ("torch", "pandas", "scipy", "diffusers", "transformers"))
    assert not heavy, heavy[:5]


def test_the_families_words_are_written_once():
    """list families reads models/about.py; the registrations take their title and description from it."""
    from diffbench.models.about import ABOUT
    from diffbench.models.families import FAMILIES

    assert [(n, f.title, f.description) for n, f in FAMILIES.items()] == [(n, *ABOUT[n]) for n in ABOUT]
