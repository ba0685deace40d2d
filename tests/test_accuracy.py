"""Accuracy gates: a case outside its band is 'inaccurate' (its values kept), shown as such in the report, and
a regression for compare; bad bands are refused when the suite is read."""

import pytest

from diffbench.bench.accuracy import bands, case_status, check_bands, gate
from diffbench.bench.run_dir import RECORDS, complete_cases
from diffbench.core import records
from diffbench.core.records import Record

SUITE = """
name = "acc"
[defaults]
batch_sizes = [1]
measure = ["counts"]
{accept}
[[sweeps]]
presets = ["DiT-S/8", "DiT-B/8"]
"""


def recs(**values):
    return [Record("r", "c", "s", {}, m, v, "1", case_size=len(values)) for m, v in values.items()]


def test_the_gate_marks_bands_and_adds_one_inaccurate_row():
    ok = gate(bands({"fid": [23.01, 23.95], "clip_score": [31.68, 31.81]}),
              recs(**{"fid[inception-v3]": 23.5, "clip_score": 31.7, "params": 1.0}))
    assert case_status(ok) == "ok" and len(ok) == 3
    assert ok[0].extra == {"accept": [23.01, 23.95], "accepted": True}
    bad = gate(bands({"fid": [23.01, 23.95], "clip_score": [31.68, 31.81]}),
               recs(**{"fid[inception-v3]": 25.0, "clip_score": 31.7}))
    assert case_status(bad) == "inaccurate" and len(bad) == 3 and {r.case_size for r in bad} == {3}
    assert bad[-1].metric == "case" and "fid[inception-v3] 25 outside its band [23.01, 23.95]" in bad[-1].error
    assert bad[0].value == 25.0  # the measured value is kept, not dropped
    missing = gate(bands({"kid": [0, 1]}), recs(params=1.0))
    assert case_status(missing) == "inaccurate" and "not measured" in missing[-1].error
    ambiguous = gate(bands({"fid": [0, 100]}), recs(**{"fid[a]": 1.0, "fid[b]": 2.0}))
    assert "name one of them" in ambiguous[-1].error
    assert gate((), recs(params=1.0)) == recs(params=1.0)


def test_an_inaccurate_case_is_complete_for_resume(tmp_path):
    bad = gate(bands({"params": [0, 1]}), recs(params=2.0, gmacs=1.0))
    records.append(tmp_path / RECORDS, bad)
    done, keep, partial, retried = complete_cases(tmp_path / RECORDS, retry_failed=True)
    assert done == {"c"} and len(keep) == 3 and not partial and not retried


@pytest.mark.parametrize("raw, says", [
    ({"fid": [2, 1]}, "low 2 above high 1"),
    ({"fid": [1]}, "two finite numbers"),
    ({"fid": ["a", 1]}, "two finite numbers"),
    ({"fid": [1, float("nan")]}, "two finite numbers"),
    ({"fid": [True, 2]}, "two finite numbers"),
    (3, "a table of metric"),
    ({}, "a table of metric"),
])
def test_bad_bands_are_refused(raw, says):
    assert says in check_bands(raw)
    assert check_bands({"fid": [1, 2], "clip_score": [31.68, 31.81]}) is None


def test_a_suite_with_a_bad_band_is_refused_when_read(tmp_path):
    from diffbench.bench import suites
    from diffbench.core.errors import ConfigError

    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(accept="accept = { fid = [2, 1] }"))
    with pytest.raises(ConfigError, match=r"defaults.accept: fid: low 2 above high 1"):
        suites.load(str(path))


def test_a_run_outside_its_band_is_inaccurate_in_the_report_and_broken_for_compare(tmp_path):
    import diffbench

    plain, gated = tmp_path / "plain.toml", tmp_path / "gated.toml"
    plain.write_text(SUITE.format(accept=""))
    gated.write_text(SUITE.format(accept="accept = { params = [33000000, 34000000] }"))
    a = diffbench.run(str(plain), tmp_path / "a", only="DiT-B/8*")
    b = diffbench.run(str(gated), tmp_path / "b", only="DiT-B/8*")
    assert a.statuses == {"ok": 1}
    assert b.statuses == {"inaccurate": 1}  # DiT-B/8 has 131M params
    assert set(a.cases["case_id"]) == set(b.cases["case_id"])  # the band is not part of a case's identity
    report = (tmp_path / "b" / "report" / "report.md")
    diffbench.report(b)
    text = report.read_text()
    assert "| inaccurate |" in text and "outside its band [3.3e+07, 3.4e+07]" in text
    result = diffbench.compare(tmp_path / "a", tmp_path / "b", allow_env_change=True)
    broken = [v for v in result.verdicts if v.verdict == "broken"]
    assert result.failed and len(broken) == 1 and "now inaccurate" in broken[0].note


def test_a_band_on_an_unknown_metric_and_a_bad_protocol_mode_are_refused_when_read(tmp_path):
    from diffbench.bench import suites
    from diffbench.core.errors import ConfigError

    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(accept="accept = { fdi = [0, 10] }"))
    with pytest.raises(ConfigError, match="fdi: not a metric"):
        suites.load(str(path))
    ref = tmp_path / "ref"
    ref.mkdir()
    path.write_text('name = "p"\n[protocols.mine]\nkind = "class"\nclasses = 2\nsamples = 4\nreference = "ref"\n'
                    'detector = "digits"\nmode = "clean"\n[[sweeps]]\npresets = ["DiT-S/8"]\nprotocol = "mine"\n')
    with pytest.raises(ConfigError, match="mode: detector digits has modes embedded, not 'clean'"):
        suites.load(str(path))
    (tmp_path / "file").write_text("x")
    path.write_text(path.read_text().replace('mode = "clean"', 'save_samples = "file"'))
    with pytest.raises(ConfigError, match="save_samples: .* is not a folder"):
        suites.load(str(path))


def test_a_band_added_before_resume_is_applied_to_the_kept_cases(tmp_path):
    import diffbench

    path = tmp_path / "s.toml"
    path.write_text(SUITE.format(accept=""))
    run = diffbench.run(str(path), tmp_path / "run")
    assert run.statuses == {"ok": 2}
    path.write_text(SUITE.format(accept="accept = { params = [33000000, 34000000] }"))  # DiT-S/8 only inside
    again = diffbench.run(str(path), tmp_path / "run", resume=True)
    assert again.this_call == {"total": 2, "skipped": 2, "statuses": {}}  # nothing measured again
    assert again.statuses == {"ok": 1, "inaccurate": 1}
    got = records.read(tmp_path / "run" / RECORDS).records
    rows = [r for r in got if r.metric == "case"]
    assert len(rows) == 1 and "params 1.3" in rows[0].error and rows[0].config["accept"] == {"params": [33e6, 34e6]}
    assert all(r.case_size == len([x for x in got if x.case_id == r.case_id]) for r in got)
    done, _, partial, _ = complete_cases(tmp_path / "run" / RECORDS)
    assert len(done) == 2 and not partial  # still two complete cases for the next resume
