"""`otfuzz dashboard`: the live browser dashboard over a folder of runs.

Thin: the server lives in `otfuzz.dashboard`; this module parses the options, prints the URL
(with the access token when bound off loopback) and serves until Ctrl-C.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    from otfuzz.dashboard.server import DEFAULT_PORT

    p = sub.add_parser("dashboard", help="serve a live browser dashboard of the runs in a folder",
                       description="Serves a page listing the runs in RUNS_DIR and, per run, live while it runs: cases/s, "
                                   "probe latency, reply classes per test group, findings with reproducers and links "
                                   "to the reports. It reads the evidence stores read-only.")
    p.add_argument("runs_dir", nargs="?", type=Path, default=Path("runs"), metavar="RUNS_DIR",
                   help="folder holding run folders (default runs)")
    add_server_options(p, DEFAULT_PORT)
    p.set_defaults(func=cmd_dashboard)


def add_server_options(p: argparse.ArgumentParser, default_port: int) -> None:
    """--port, --bind and --allow-control, shared with `otfuzz run --dashboard`."""
    p.add_argument("--port", type=int, default=default_port, help=f"TCP port of the dashboard (default {default_port}; 0 picks one)")
    p.add_argument("--bind", default="127.0.0.1", metavar="ADDR",
                   help="address to listen on (default 127.0.0.1); any other than loopback requires the printed token")
    p.add_argument("--allow-control", action="store_true",
                   help="offer a button that stops a campaign this process runs (off by default: the dashboard only reads)")


def cmd_dashboard(args: argparse.Namespace) -> int:
    from otfuzz.dashboard.server import DashboardServer

    server = DashboardServer(args.runs_dir, args.bind, args.port, args.allow_control)
    print(f"dashboard: {server.url} (runs in {args.runs_dir}; Ctrl-C stops it)", flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    return 0
