"""The benchmark scripts' report writer (benchmarks/common.py)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import write_markdown  # noqa: E402


def test_a_redrawn_report_keeps_the_block_of_the_run_that_measured(tmp_path):
    path = tmp_path / "R.md"
    write_markdown(path, ["# R", "", "a"], {"machine": "first", "command": "measure"})
    assert path.read_text().endswith("Measured on:\n\n- machine: `first`\n- command: `measure`\n")
    write_markdown(path, ["# R", "", "b"], {"machine": "second", "command": "redraw"}, measured=False)
    text = path.read_text()
    assert "\nb\n" in text and "`first`" in text and "second" not in text and "redraw" not in text
    write_markdown(path, ["# R", "", "c"], {"machine": "third", "command": "measure"})  # new points
    assert "`third`" in path.read_text() and "first" not in path.read_text()
    # nothing to keep yet: the redraw says where it ran
    fresh = tmp_path / "S.md"
    write_markdown(fresh, ["# S"], {"machine": "here"}, measured=False)
    assert "`here`" in fresh.read_text()
    assert not list(tmp_path.glob("*.tmp"))
