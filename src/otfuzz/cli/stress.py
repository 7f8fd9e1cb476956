"""`otfuzz stress`: denial-of-service and load tests from the command line.

Thin: options become a StressConfig, the run happens in StressRun, and Ctrl-C is handled as for
`otfuzz run`: the first stops the load at once and keeps what was measured, the second cancels.
Exit status: 0 when every verdict passed, 1 when a verdict failed, 2 for a usage error, 3 when
the target stopped answering and did not come back, 130 when interrupted.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from otfuzz.cli.common import Progress, add_scope_option, add_tester_options, csv, duration, help_text, ratio, report_end
from otfuzz.stress.patterns import GROUPS, PROFILES, Ceilings
from otfuzz.stress.verdicts import Thresholds

EXIT_VERDICT_FAILED = 1


def add_commands(subparsers: Any) -> None:
    th, ce = Thresholds(), Ceilings()
    p = subparsers.add_parser("stress", help="denial-of-service and load test with essential-function monitoring (CR 7.1, 7.2)",
                              description="Floods the target with connection, valid, malformed and protocol-specific load at "
                                          "rising levels while a separate monitor keeps doing the essential function, and "
                                          "judges each pattern and the recovery after it against explicit thresholds.")
    p.add_argument("target", help="target URL, e.g. modbus://127.0.0.1:502?unit=1")
    p.add_argument("--out", type=Path, help="run folder to create (default runs/stress-<protocol>-<time>)")
    p.add_argument("--profile", default="quick", choices=list(PROFILES), help="load profile (default quick; crt-like for evidence)")
    p.add_argument("--patterns", type=csv, help=f"load patterns to run (default all: {','.join(GROUPS)})")
    p.add_argument("--step-duration", type=duration, help="length of each step (default from the profile)")
    lv = p.add_argument_group("load levels (default from the profile)")
    for n in (1, 2):
        lv.add_argument(f"--level{n}-rate", type=float, help=f"level-{n} request rate, requests/s over all connections")
        lv.add_argument(f"--level{n}-connections", type=int, help=f"level-{n} number of open connections")
        lv.add_argument(f"--level{n}-connect-rate", type=float, help=f"level-{n} new connections per second")
    ef = p.add_argument_group("essential function (default: the protocol's health probe)")
    ef.add_argument("--essential-request", metavar="HEX", help="the request the monitor sends every cycle (a read)")
    ef.add_argument("--essential-expect", metavar="HEX", help="the exact answer expected (?? for any byte); default: any normal answer")
    ef.add_argument("--cadence", type=float, default=0.1, help="seconds between cycles (default 0.1)")
    ef.add_argument("--deadline", type=float, default=0.05, help="seconds a cycle's answer may take (default 0.05)")
    vd = p.add_argument_group("pass criteria")
    vd.add_argument("--max-missed-level1", type=ratio, default=th.max_missed_level1, help=help_text(f"missed cycles allowed under level-1 load (default {th.max_missed_level1:.0%})"))
    vd.add_argument("--max-missed-level2", type=ratio, default=th.max_missed_level2, help=help_text(f"missed cycles allowed under level-2 load (default {th.max_missed_level2:.0%})"))
    vd.add_argument("--max-outage-level2", type=duration, default=th.max_outage_level2, help=f"longest loss of the essential function under level-2 load (default {th.max_outage_level2:g}s)")
    vd.add_argument("--recovery-limit", type=duration, default=th.recovery_limit, help=f"time allowed to get back to baseline after load (default {th.recovery_limit:g}s)")
    vd.add_argument("--recovery-window", type=duration, default=th.recovery_window, help=f"how long to wait for recovery at most (default {th.recovery_window:g}s)")
    sf = p.add_argument_group("safety ceilings (raise explicitly to load harder)")
    sf.add_argument("--max-rate", type=float, default=ce.rate, help=f"requests/s (default {ce.rate:g})")
    sf.add_argument("--max-connections", type=int, default=ce.connections, help=f"connections open at once (default {ce.connections})")
    sf.add_argument("--max-connect-rate", type=float, default=ce.connect_rate, help=f"new connections/s (default {ce.connect_rate:g})")
    sf.add_argument("--max-duration", type=duration, default=ce.duration, help=f"whole run (default {ce.duration:g}s)")
    add_scope_option(p)
    p.add_argument("--target-cmd", help="command that starts the target locally (enables resource monitoring and restarts)")
    p.add_argument("--target-pid", type=int, help="pid of a local target process to monitor for resources")
    p.add_argument("--seed", type=int, default=0, help="seed of the malformed requests")
    add_tester_options(p)
    p.add_argument("--quiet", action="store_true", help="no live progress display")
    p.set_defaults(func=cmd_stress)


def config_from_args(args: argparse.Namespace) -> Any:
    from otfuzz.stress.runner import StressConfig

    thresholds = Thresholds(max_missed_level1=args.max_missed_level1, max_missed_level2=args.max_missed_level2,
                            max_outage_level2=args.max_outage_level2, recovery_limit=args.recovery_limit,
                            recovery_window=max(args.recovery_window, args.recovery_limit))
    ceilings = Ceilings(rate=args.max_rate, connections=args.max_connections, connect_rate=args.max_connect_rate,
                        duration=args.max_duration)
    return StressConfig(
        target=args.target, profile=args.profile, groups=args.patterns or list(GROUPS),
        level1_rate=args.level1_rate, level2_rate=args.level2_rate, level1_connections=args.level1_connections,
        level2_connections=args.level2_connections, level1_connect_rate=args.level1_connect_rate,
        level2_connect_rate=args.level2_connect_rate, step_duration=args.step_duration,
        essential_request=args.essential_request, essential_expect=args.essential_expect, cadence=args.cadence,
        deadline=args.deadline, thresholds=thresholds, ceilings=ceilings, scope=args.scope, target_cmd=args.target_cmd,
        target_pid=args.target_pid, seed=args.seed, operator=args.operator, organisation=args.organisation,
        independence=args.independence,
    )


def _stress_line(snap: Any) -> str:
    return (f"{snap.pattern}: {snap.step} | offered {snap.offered_rps:7.0f}/s answered {snap.answered_rps:7.0f}/s | "
            f"open {snap.open_connections} | essential misses {snap.misses}/{snap.cycles} (2 s) | {snap.elapsed:5.0f} s")


def _stress_panel(snap: Any, _latencies: Any) -> Any:
    """The live panel of `otfuzz stress` on a terminal: the step, the load and the essential function."""
    from rich.panel import Panel
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("pattern", f"{snap.pattern}: {snap.step}")
    grid.add_row("load", f"offered {snap.offered_rps:.0f}/s, answered {snap.answered_rps:.0f}/s, {snap.open_connections} open")
    grid.add_row("essential", f"{snap.misses} of {snap.cycles} cycles missed (last 2 s)")
    grid.add_row("time", f"{snap.elapsed:.0f} s")
    return Panel(grid, title="otfuzz stress", expand=False)


def _run(config: Any, run_dir: Path, show_progress: bool) -> tuple[str, str, list[str]]:
    from otfuzz.stress.runner import run_stress

    progress = Progress(show_progress, _stress_line, _stress_panel)
    try:
        return run_stress(config, run_dir, progress)
    finally:
        progress.finish()


def _summary(run_dir: Path, status: str) -> str:
    from otfuzz.report.results import load_results

    doc = load_results(run_dir)
    verdicts = doc.get("stress", {}).get("verdicts", {})
    shown = ", ".join(f"{g} {v['verdict']}" for g, v in verdicts.items())
    return f"stress {status}: {shown or 'no verdicts'}; evidence in {run_dir}"


def cmd_stress(args: argparse.Namespace) -> int:
    from otfuzz.protocols import protocol_for
    from otfuzz.store.runs import default_run_dir, run_in_new_folder
    from otfuzz.transport.target import Scope, parse_target

    config = config_from_args(args)
    target = parse_target(config.target)
    protocol_for(target)
    Scope(config.scope).check(target)
    run_dir = args.out or default_run_dir(f"stress-{target.scheme}")
    status, reason, failed = run_in_new_folder(run_dir, lambda: _run(config, run_dir, not args.quiet))
    print(_summary(run_dir, status))
    code = report_end(status, reason, f"interrupted ({reason}); the results so far are in {run_dir}")
    return code or (EXIT_VERDICT_FAILED if failed else 0)
