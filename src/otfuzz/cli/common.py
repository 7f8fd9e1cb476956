"""What the command groups share: the parser class, option types, live progress and the one-line
end-of-run messages. Only the command line imports this module."""

from __future__ import annotations

import argparse
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from otfuzz.engine.config import parse_duration
from otfuzz.errors import OtfuzzError
from otfuzz.store.runs import EXIT_INTERRUPTED, EXIT_TARGET_DOWN, exit_code


HISTORY = 60  # probe latencies the sparkline shows


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


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: Sequence[float | None]) -> str:
    """Values as block characters scaled to their own range; a gap (no answer) as a space."""
    known = [v for v in values if v is not None]
    if not known:
        return ""
    lo, hi = min(known), max(known)
    span = (hi - lo) or 1.0
    return "".join(" " if v is None else SPARK[min(len(SPARK) - 1, int((v - lo) / span * len(SPARK)))] for v in values)


class Progress:
    """Live progress: a rich panel on stdout when it is a terminal and the command has a panel;
    otherwise one rewritten line on a terminal stderr, or a plain line every 10 s (CI, pipes).

    `render` turns a layer's snapshot into the line, `panel(snap, history)` into the panel;
    `history` keeps the last probe latencies for a sparkline.
    """

    def __init__(self, enabled: bool, render: Callable[[Any], str],
                 panel: Callable[[Any, Sequence[float | None]], Any] | None = None) -> None:
        self.enabled = enabled
        self.render = render
        self.panel = panel
        self.tty = sys.stderr.isatty()
        self.history: deque[float | None] = deque(maxlen=HISTORY)
        self._last_plain = -10.0
        self._live: Any = None
        if enabled and panel is not None and sys.stdout.isatty():
            from rich.console import Console
            from rich.live import Live

            self._live = Live(console=Console(file=sys.stdout), auto_refresh=False, transient=False)
            self._live.start()

    def __call__(self, snap: Any) -> None:
        if not self.enabled:
            return
        self.history.append(getattr(snap, "probe_ms", None))
        if self._live is not None and self.panel is not None:
            self._live.update(self.panel(snap, list(self.history)), refresh=True)
            return
        line = self.render(snap)
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        elif snap.elapsed - self._last_plain >= 10:
            self._last_plain = snap.elapsed
            print(line, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self._live is not None:
            self._live.stop()  # the last panel stays on screen, the summary follows it
            self._live = None
        elif self.enabled and self.tty:
            sys.stderr.write("\n")
