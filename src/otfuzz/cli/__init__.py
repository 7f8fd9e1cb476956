"""The otfuzz command line: one module per command group, each registering its subcommands.

Thin by design: argument parsing and printing live here and nowhere else; the work is done by
the layers below, and nothing below imports this package. Every error a user can cause
surfaces as one line `otfuzz: error: ...` and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from otfuzz import __version__
from otfuzz.cli.common import Parser
from otfuzz.errors import OtfuzzError
from otfuzz.store.runs import EXIT_INTERRUPTED, EXIT_USAGE

# Command groups, in the order `otfuzz --help` lists them; each module has add_commands(sub).
COMMAND_GROUPS = ("campaign", "findings", "evidence", "system", "capture", "agents", "stress", "dashboard", "info")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="otfuzz", description="Protocol robustness testing for industrial control systems, with IEC 62443 evidence.")
    parser.add_argument("--version", action="version", version=f"otfuzz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for group in COMMAND_GROUPS:
        importlib.import_module(f"otfuzz.cli.{group}").add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except OtfuzzError as exc:
        print(f"otfuzz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("otfuzz: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
