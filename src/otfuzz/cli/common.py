"""What the command groups share: the parser class, option types, live progress and the one-line
end-of-run messages. Only the command line imports this module."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from otfuzz.engine.config import parse_duration
from otfuzz.errors import OtfuzzError
from otfuzz.store.runs import EXIT_INTERRUPTED, EXIT_TARGET_DOWN, exit_code


class Parser(argparse.ArgumentParser):
    """argparse that reports bad options in our one-line format with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise OtfuzzError(f"{self.prog}: {message}")


def duration(text: str) -> float:
    """Option type for durations (30s, 10m, 2h)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def csv(text: str) -> list[str]:
    """Option type for comma-separated lists."""
    return [item.strip() for item in text.split(",") if item.strip()]


def ratio(text: str) -> float:
    """Option type for ratios: '1%' or '0.01' -> 0.01."""
    try:
        value = float(text[:-1]) / 100 if text.strip().endswith("%") else float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad ratio '{text}' (examples: 1%, 0.01)") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"ratio must be from 0% to 100%, got '{text}'")
    return value


def help_text(text: str) -> str:
    """A help string that may contain '%' (argparse expands % in help strings itself)."""
    return text.replace("%", "%%")


def add_tester_options(parser: argparse.ArgumentParser, what: str = "the test") -> None:
    """Who ran it, for the evidence record (IEC 62443-4-1 SVV-5 independence)."""
    parser.add_argument("--operator", help=f"who ran {what} (for the evidence record)")
    parser.add_argument("--organisation", help="organisation of the operator")
    parser.add_argument("--independence", help="tester independence per IEC 62443-4-1 SVV-5 (e.g. 'independent department')")


def add_scope_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scope", action="append", default=[], help="addresses or networks you may test besides loopback")


def report_end(status: str, reason: str, interrupted_note: str) -> int:
    """Print the one-line message of a run that ended with `status`; return the exit status."""
    code = exit_code(status)
    if code == EXIT_TARGET_DOWN:
        print(f"otfuzz: error: {reason}", file=sys.stderr)
    elif code == EXIT_INTERRUPTED:
        print(interrupted_note, file=sys.stderr)
    return code


class Progress:
    """Live progress on stderr: one rewritten line on a terminal, a line every 10 s otherwise.

    `render` turns a layer's snapshot into the line; campaigns and stress runs share the rest.
    """

    def __init__(self, enabled: bool, render: Callable[[Any], str]) -> None:
        self.enabled = enabled
        self.render = render
        self.tty = sys.stderr.isatty()
        self._last_plain = -10.0

    def __call__(self, snap: Any) -> None:
        if not self.enabled:
            return
        line = self.render(snap)
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        elif snap.elapsed - self._last_plain >= 10:
            self._last_plain = snap.elapsed
            print(line, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")
