"""Captions files: one caption per line, where a line ends at \\n (or \\r\\n) and nowhere else (issue #30)."""

from __future__ import annotations

import json
from pathlib import Path

from diffbench.bench.protocols import read_captions

CAPTIONS = ["a red circle", "a blue\u2028square", "a green\u0085triangle", "two\x0cstars", "a small cat",
            "a large dog", "an empty field"]


def test_unicode_line_breaks_stay_inside_their_caption(tmp_path: Path):
    path = tmp_path / "captions.txt"
    path.write_bytes(("\n".join(CAPTIONS) + "\n").encode())
    assert read_captions(path) == CAPTIONS  # 7 lines, 7 captions (str.splitlines made 10)


def test_crlf_and_a_byte_order_mark(tmp_path: Path):
    path = tmp_path / "captions.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(["first", "second", "", "third"]).encode() + b"\r\n")
    assert read_captions(path) == ["first", "second", "third"]


def test_jsonl_strings_may_hold_u2028(tmp_path: Path):
    path = tmp_path / "captions.jsonl"
    rows = [json.dumps({"caption": c}, ensure_ascii=False) for c in CAPTIONS]
    path.write_bytes(("\ufeff" + "\n".join(rows) + "\n").encode())
    assert read_captions(path) == CAPTIONS
