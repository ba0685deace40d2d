"""docs/scale.md's model is the output of scripts/scale_model.py: the two stay in step."""

import importlib.util
import sys

from tests.conftest import ROOT


def load():
    spec = importlib.util.spec_from_file_location("scale_model", ROOT / "scripts" / "scale_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_makespan_schedules_longest_first():
    m = load()
    assert m.makespan([5, 4, 3, 3, 3], 2) == 10  # longest first, each to the least loaded: 5+3 | 4+3+3
    assert m.makespan([10, 1, 1], 8) == 10


def test_the_documented_table_is_the_scripts_output(monkeypatch, capsys):
    m = load()
    monkeypatch.setattr(sys, "argv", ["scale_model.py"])
    m.main()
    printed = capsys.readouterr().out
    doc = (ROOT / "docs" / "scale.md").read_text()
    for line in printed.strip().splitlines():
        assert line in doc, line
