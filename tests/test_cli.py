import pytest

from diffbench.cli import COMMANDS, build_parser


def assert_one_line_error(proc, *fragments: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("diffbench: error: ")
    assert "Traceback" not in proc.stderr
    for f in fragments:
        assert f in lines[0]


def test_unknown_kind(cli):
    assert_one_line_error(cli("list", "nosuchkind"), "unknown kind 'nosuchkind'", "presets")


def test_unknown_command_suggests(cli):
    assert_one_line_error(cli("nosuchcommand"), "unknown command 'nosuchcommand'")
    assert_one_line_error(cli("lst"), "did you mean 'list'")


def test_bad_option(cli):
    assert_one_line_error(cli("list", "--format", "yaml"), "invalid choice")


def test_version_and_help(cli):
    v = cli("--version")
    assert v.returncode == 0 and v.stdout.startswith("diffbench ")
    h = cli("--help")
    assert h.returncode == 0 and "examples:" in h.stdout


def test_every_command_help_ends_with_examples():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in COMMANDS:
        text = sub.choices[name].format_help().rstrip()
        tail = text.split("examples:")[-1]
        assert "examples:" in text and f"diffbench {name}" in tail, name


def test_list_shows_every_registry(cli):
    out = cli("list").stdout
    for kind in ("families", "presets", "metrics", "commands"):
        assert f"# {kind}:" in out
    assert "DiT-XL/2" in out and "SDXL" in out and "unet-ldm" in out


def test_list_presets_json(cli):
    import json

    rows = json.loads(cli("list", "presets", "--format", "json").stdout)
    by_name = {r["name"]: r for r in rows}
    assert by_name["U-ViT-H/2"]["params"] == 500_832_016
    assert by_name["ADM-256"]["source"].startswith("Dhariwal & Nichol")


def test_unexpected_exceptions_keep_their_traceback(monkeypatch, capsys):
    from diffbench.cli import app as cli_mod

    def boom(args):
        raise RuntimeError("a bug")

    parser = build_parser()
    parser.set_defaults(_run=boom)
    monkeypatch.setattr(cli_mod, "build_parser", lambda: parser)
    with pytest.raises(RuntimeError, match="a bug"):
        cli_mod.main([])
