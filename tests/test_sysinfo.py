import shlex
import sys

from llmcodec import sysinfo


def test_the_printed_command_pastes_back_with_empty_and_spaced_arguments(monkeypatch):
    argv = ["benchmarks/e2e.py", "--profiles", "", "--only", "^llmcodec-vvc default "]
    monkeypatch.setattr(sys, "argv", argv)
    info = sysinfo.describe()
    assert shlex.split(info["command"])[1:] == argv
    assert f"- command: `{info['command']}`" in sysinfo.markdown(info)
