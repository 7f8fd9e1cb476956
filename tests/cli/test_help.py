"""Every command and subcommand answers --help: exit 0, no traceback, and its options named.

The commands are discovered from the parser itself, so a command added later is covered
without touching this test.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from otfuzz.cli import build_parser, main


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    out = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                out += _commands(child, (*path, name))
    return out


COMMANDS = _commands(build_parser())


def test_discovery_finds_nested_commands() -> None:
    paths = {path for path, _ in COMMANDS}
    assert {("run",), ("stress",), ("model", "check"), ("model", "show"), ("schema",)} <= paths
    assert len(paths) > 15


@pytest.mark.parametrize("path,parser", COMMANDS, ids=[" ".join(p) or "otfuzz" for p, _ in COMMANDS])
def test_help_exits_0_and_names_every_option(path: tuple[str, ...], parser: argparse.ArgumentParser,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main([*path, "--help"])
    assert stopped.value.code == 0
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and err == ""
    assert f"usage: otfuzz {' '.join(path)}".rstrip() in " ".join(out.split())
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        for option in action.option_strings:
            if option.startswith("--"):
                assert option in out, f"{' '.join(path)} --help does not name {option}"


def test_stress_help_in_a_real_process_has_no_traceback() -> None:
    # The help text holds default percentages ("1%"), which argparse would try to expand.
    done = subprocess.run([sys.executable, "-m", "otfuzz.cli", "stress", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr and "(default 1%)" in done.stdout
