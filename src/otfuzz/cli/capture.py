"""`otfuzz capture import` and `otfuzz capture audit`: learning from, and auditing, recorded traffic."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_commands(sub: Any) -> None:
    capture = sub.add_parser("capture", help="learn seeds from a pcap/pcapng capture, or audit its flows against the conduits")
    inner = capture.add_subparsers(dest="capture_command", metavar="COMMAND", parser_class=type(capture))
    inner.required = True
    imp = inner.add_parser("import", help="write a seed file: request types with real values and observed sessions per server")
    imp.add_argument("file", type=Path, help="pcap or pcapng capture")
    imp.add_argument("--out", type=Path, required=True, help="folder for the seed file (<capture>.seeds.json)")
    imp.add_argument("--json", action="store_true", help="print the counts as JSON")
    imp.set_defaults(func=cmd_import)
    audit = inner.add_parser("audit", help="flag captured flows no conduit channel's policy allows (SR 5.1/5.2)")
    audit.add_argument("file", type=Path, help="pcap or pcapng capture")
    audit.add_argument("--model", type=Path, required=True, help="system file (zones, assets, conduits)")
    audit.add_argument("--out", type=Path, help="folder for audit.json and audit.html (otfuzz gap reads it as conduit evidence)")
    audit.add_argument("--json", action="store_true", help="print the audit as JSON instead of the table")
    audit.set_defaults(func=cmd_audit)


def cmd_import(args: argparse.Namespace) -> int:
    from otfuzz.capture.seeds import describe_import, import_capture

    written, document = import_capture(args.file, args.out)
    if args.json:
        print(json.dumps({"seeds": str(written), "sha256": document["sha256"], "counts": document["counts"]}, indent=2))
    else:
        print("\n".join(describe_import(document, written)))
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from otfuzz.capture.audit import format_audit, run_audit

    document, written = run_audit(args.file, args.model, args.out)
    print(json.dumps(document, indent=2) if args.json else format_audit(document))
    for path in written:
        print(f"audit written to {path}")
    return 0
