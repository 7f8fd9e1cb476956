"""`otfuzz findings`: the distinct defects of one or more runs, and baselines for vendor CI.

Several runs of the same target are merged by finding key (or alias), showing in which runs
each finding occurs. `--save-baseline FILE` writes the keys, with a note field each, for
`otfuzz run --baseline FILE` and `otfuzz report --baseline FILE`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from otfuzz.errors import OtfuzzError

EXIT_NEW_FINDINGS = 1


def add_commands(sub: Any) -> None:
    p = sub.add_parser("findings", help="list the distinct defects (findings) of runs, merged by key; save a baseline",
                       description="Findings are distinct defects; their anomalies are occurrences. Several runs of the "
                                   "same target are merged by key, showing in which runs each finding occurs.")
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN", help="run folders")
    p.add_argument("--json", action="store_true", help="print the findings as JSON")
    p.add_argument("--baseline", type=Path, metavar="FILE", help="mark the findings this baseline knows; exit 1 on new ones")
    p.add_argument("--save-baseline", type=Path, metavar="FILE",
                   help="write the findings' keys to FILE (notes of an existing FILE are kept) for --baseline")
    p.set_defaults(func=cmd_findings)


def run_findings(run_dir: Path) -> list[dict[str, Any]]:
    """A run's findings, as the results document has them, without loading its anomalies."""
    from otfuzz.store.evidence import EvidenceStore

    if not run_dir.is_dir():
        raise OtfuzzError(f"run folder {run_dir} does not exist")
    from otfuzz.engine.findings import SEVERITY_ORDER, behaviour_of

    store = EvidenceStore.open(run_dir)
    try:
        findings = store.findings()
    finally:
        store.close()
    for finding in findings:
        finding["behaviour"] = behaviour_of(finding)
    order = {s: n for n, s in enumerate(SEVERITY_ORDER)}
    return sorted(findings, key=lambda f: (order.get(str(f.get("severity")), 9), f["behaviour"], f["id"]))


def cmd_findings(args: argparse.Namespace) -> int:
    from otfuzz.engine.baseline import gating, load_baseline, mark_known, merge_runs, save_baseline

    baseline = load_baseline(args.baseline) if args.baseline else None
    per_run = [(str(run), run_findings(run)) for run in args.runs]
    for _, findings in per_run:
        mark_known(findings, baseline)
    merged = merge_runs(per_run) if len(per_run) > 1 else [
        {**f, "runs": [{"run": per_run[0][0], "id": f["id"], "occurrences": f["occurrences"],
                        "status": (f.get("confirmation") or {}).get("status")}]} for f in per_run[0][1]]
    if args.json:
        print(json.dumps(merged, indent=2, sort_keys=True, default=str))
    else:
        print(format_findings(merged, multi=len(per_run) > 1))
    if args.save_baseline is not None:
        previous = load_baseline(args.save_baseline) if args.save_baseline.is_file() else None
        source = ", ".join(run for run, _ in per_run)
        path = save_baseline(merged, args.save_baseline, source, previous)
        print(f"baseline of {len(merged)} finding(s) written to {path}", file=sys.stderr)
    if baseline is not None:
        new = gating(merged)
        if new:
            print(f"otfuzz: {len(new)} finding(s) not in baseline {args.baseline}: "
                  + "; ".join(f"{f['title']}" for f in new[:5]), file=sys.stderr)
            return EXIT_NEW_FINDINGS
    return 0


def format_findings(rows: list[dict[str, Any]], multi: bool = False) -> str:
    """The findings table: severity, class, occurrences, status or runs, title."""
    if not rows:
        return "no findings"
    width = shutil.get_terminal_size((120, 20)).columns if sys.stdout.isatty() else 10_000
    lines = []
    for row in rows:
        where = (", ".join(f"{r['run']}#{r['id']}" for r in row["runs"]) if multi
                 else str((row.get("confirmation") or {}).get("status", row["runs"][0].get("status"))))
        ident = row["runs"][0]["id"] if not multi else len(lines) + 1
        known = " (known)" if row.get("known") else ""
        head = f"{ident:>4}  {row.get('severity', '?'):<6}  {row.get('class', '?'):<18}  {row.get('occurrences', 0):>6}x  "
        lines.append(head + f"{row.get('title', '')}{known}"[: max(40, width - len(head))])
        lines.append(" " * 6 + f"{'in ' if multi else ''}{where}")
    header = f"{'#':>4}  {'sev':<6}  {'class':<18}  {'occur.':>7}  finding"
    behaviours = len({row.get("behaviour") or row.get("key") for row in rows})
    footer = f"{len(rows)} finding{'s' if len(rows) != 1 else ''} showing {behaviours} behaviour{'s' if behaviours != 1 else ''}"
    return "\n".join([header, *lines, footer])
