"""`otfuzz model`, `plan`, `run-plan`, `policy-test` and `gap`: the system view from the command line.

Thin argument handling over `system`, `plan`, `policy` and `gap`: every user error is an
OtfuzzError (one line, exit 2) raised before anything is sent, and every command that sends
refuses endpoints outside loopback and the declared --scope.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from otfuzz.cli.agents import add_run_plan_options, run_plan_remote
from otfuzz.cli.common import add_scope_option, add_tester_options, csv, duration
from otfuzz.errors import OtfuzzError


def add_commands(sub: Any) -> None:
    model = sub.add_parser("model", help="check or draw a system model (zones, conduits, assets)")
    actions = model.add_subparsers(dest="model_command", metavar="ACTION")
    actions.required = True
    check = actions.add_parser("check", help="validate system.yaml against the schema and the zone/conduit rules")
    check.add_argument("system", type=Path, metavar="SYSTEM")
    check.set_defaults(func=cmd_model_check)
    show = actions.add_parser("show", help="draw zones, assets and conduits coloured by SL-T (Graphviz)")
    show.add_argument("system", type=Path, metavar="SYSTEM")
    show.add_argument("--out", type=Path, required=True, help="output file: .svg, .png, .pdf (needs Graphviz dot) or .dot")
    show.set_defaults(func=cmd_model_show)

    plan = sub.add_parser("plan", help="plan campaigns at the zone boundaries of a system model")
    plan.add_argument("system", type=Path, metavar="SYSTEM")
    plan.add_argument("--out", type=Path, default=Path("plan.yaml"), help="plan file to write (default plan.yaml)")
    plan.add_argument("--duration", type=duration, help="override every campaign's planned duration (30s, 10m, 2h)")
    plan.add_argument("--seed", type=int, default=0, help="seed of every campaign in the plan")
    plan.add_argument("--timeout", type=float, help="seconds to wait for a reply (default: per campaign, automatic)")
    plan.add_argument("--concurrency", type=int, default=1, help="for the duration estimate: entries run at once")
    plan.set_defaults(func=cmd_plan)

    run_plan = sub.add_parser("run-plan", help="run a test plan (sequentially by default), resumable as a whole")
    run_plan.add_argument("plan", type=Path, nargs="?", metavar="PLAN")
    run_plan.add_argument("--out", type=Path, help="folder for the plan's runs (one sub-folder per entry)")
    run_plan.add_argument("--resume", type=Path, metavar="RUNS", help="continue an interrupted run-plan folder")
    run_plan.add_argument("--concurrency", type=int, default=1, help="entries run at once (default 1)")
    run_plan.add_argument("--quiet", action="store_true", help="print nothing but errors and the summary")
    add_scope_option(run_plan)
    add_tester_options(run_plan, "the plan")
    add_run_plan_options(run_plan)
    run_plan.set_defaults(func=cmd_run_plan)

    policy = sub.add_parser("policy-test", help="send allowed and disallowed operations through a conduit endpoint")
    policy.add_argument("target", help="conduit endpoint URL as the outer zone sees it, e.g. modbus://10.0.2.1:502")
    policy.add_argument("--allow", type=lambda t: [int(x) if x.isdigit() else x for x in csv(t)], required=True,
                        help="what the policy allows: read, write, disruptive, all, operation names or function codes (comma separated)")
    policy.add_argument("--observe", metavar="HOST:PORT", help="the server itself, inside the zone: reads before and after each write")
    policy.add_argument("--out", type=Path, help="run folder to create (default runs/policy-<time>)")
    policy.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each reply (default 1)")
    policy.add_argument("--include-disruptive", action="store_true", help="also send requests that restart or reconfigure the device")
    add_scope_option(policy)
    add_tester_options(policy, "the policy test")
    policy.set_defaults(func=cmd_policy_test)

    gap = sub.add_parser("gap", help="SL-T against evidenced SL-C per zone, from a system model and run folders")
    gap.add_argument("system", type=Path, metavar="SYSTEM")
    gap.add_argument("runs", type=Path, nargs="*", metavar="RUNS", help="run folders or run-plan folders")
    gap.add_argument("--out", type=Path, help="folder to write the gap reports into")
    gap.add_argument("--format", default="json,html,pdf", type=lambda t: [f.strip() for f in t.split(",") if f.strip()],
                     help="gap reports to write with --out: json, html, pdf (default all three)")
    gap.add_argument("--json", action="store_true", help="print the gap section as JSON instead of the table")
    gap.set_defaults(func=cmd_gap)


# -- model ---------------------------------------------------------------------------------------


def cmd_model_check(args: argparse.Namespace) -> int:
    from otfuzz.compliance.system import check_system

    model, problems = check_system(args.system)
    if model is None:
        for problem in problems:
            print(f"otfuzz: error: {problem}", file=sys.stderr)
        print(f"{args.system}: {len(problems)} problem{'s' if len(problems) != 1 else ''}", file=sys.stderr)
        return 2
    channels = sum(len(c.channels) for c in model.conduits)
    print(f"{args.system}: valid: {len(model.assets)} assets in {len(model.zones)} zones, "
          f"{len(model.conduits)} conduits with {channels} channels")
    return 0


def cmd_model_show(args: argparse.Namespace) -> int:
    from otfuzz.compliance.system import load_system
    from otfuzz.report.system import draw_system

    print(draw_system(load_system(args.system), args.out))
    return 0


# -- plan and run-plan ------------------------------------------------------------------------------


def cmd_plan(args: argparse.Namespace) -> int:
    from otfuzz.compliance.plan import build_plan, format_plan, write_plan
    from otfuzz.compliance.system import load_system

    if args.timeout is not None and args.timeout <= 0:
        raise OtfuzzError(f"--timeout must be positive, got {args.timeout}")
    model = load_system(args.system)
    plan = build_plan(model, duration_s=args.duration, seed=args.seed, timeout=args.timeout)
    path = write_plan(plan, args.out)
    print(format_plan(plan, max(1, args.concurrency)))
    print(f"\nplan written to {path}; run it with: otfuzz run-plan {path} --out RUNS")
    return 0


def cmd_run_plan(args: argparse.Namespace) -> int:
    from otfuzz.compliance.plan import PLAN_FILE, load_plan, plan_exit_status, run_plan

    if args.resume is not None:
        if args.plan is not None or args.out is not None:
            raise OtfuzzError("run-plan --resume RUNS takes no PLAN or --out: the plan is in the run folder")
        runs = args.resume
        if not runs.is_dir():
            raise OtfuzzError(f"run folder {runs} does not exist; start the plan with: otfuzz run-plan PLAN --out {runs}")
        if not (runs / PLAN_FILE).is_file():
            raise OtfuzzError(f"{runs} is not a run-plan folder (no {PLAN_FILE} in it)")
        plan = load_plan(runs / PLAN_FILE)
        resume = True
    else:
        if args.plan is None:
            raise OtfuzzError("run-plan: give a PLAN file (made by otfuzz plan) or --resume RUNS")
        if args.out is None:
            raise OtfuzzError("run-plan: give --out RUNS, the folder for the plan's runs")
        plan = load_plan(args.plan)
        runs = args.out
        if (runs / PLAN_FILE).is_file():
            raise OtfuzzError(f"{runs} already holds a plan run; continue it with: otfuzz run-plan --resume {runs}")
        resume = False
    if not plan.entries:
        raise OtfuzzError("the plan has no entries: no conduit channel of the system can be tested")
    if args.broker is not None or args.trust is not None:
        return run_plan_remote(args, plan, runs, resume)
    from otfuzz.compliance.plan import PlanRunner

    PlanRunner(plan, runs, args.scope, args.concurrency).check()  # refuse before creating anything
    if not resume:
        from otfuzz.store.runs import prepare_run_dir

        prepare_run_dir(runs)
    tester = {"operator": args.operator, "organisation": args.organisation, "independence": args.independence}
    display = PlanDisplay(plan, quiet=args.quiet)
    try:
        outcomes = run_plan(plan, runs, resume, args.scope, args.concurrency, tester, say=display.say,
                            on_progress=display.progress if display.live else None, on_done=display.done)
    finally:
        display.finish()
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    print(f"plan finished: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}; runs in {runs}")
    status = plan_exit_status(outcomes)
    if status == 130:
        print(f"interrupted; continue with: otfuzz run-plan --resume {runs}", file=sys.stderr)
    elif status:
        print(f"otfuzz: error: {counts.get('failed', 0) + counts.get('error', 0)} entries failed; see {runs}/plan-status.json",
              file=sys.stderr)
    return status


class PlanDisplay:
    """run-plan's output: on a terminal, one live bar per campaign with its cases and findings and
    the entries' lines above them; piped, the lines as they come; with --quiet, nothing."""

    def __init__(self, plan: Any, quiet: bool = False) -> None:
        self.quiet = quiet
        self.live: Any = None
        self._tasks: dict[str, Any] = {}
        if quiet or not sys.stdout.isatty():
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.live = Progress(TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.fields[cases]:>9} cases"),
                             TextColumn("{task.fields[rate]:>7} /s"), TextColumn("{task.fields[findings]}"),
                             TimeRemainingColumn(), console=Console(file=sys.stdout), auto_refresh=False)
        for entry in plan.entries:
            self._tasks[entry.id] = self.live.add_task(entry.id[:28], total=float(entry.duration_s) or None,
                                                       cases="-", rate="-", findings="waiting")
        self.live.start()

    def say(self, text: str) -> None:
        if self.quiet:
            return
        if self.live is not None:
            self.live.console.print(text, markup=False, highlight=False)
            self.live.refresh()
        else:
            print(text, flush=True)

    def done(self, outcome: Any) -> None:
        """An entry ended: its bar is full and shows how it ended."""
        task = self._tasks.get(outcome.id)
        if self.live is None or task is None:
            return
        total = self.live.tasks[task].total or 1.0
        self.live.update(task, total=total, completed=total, findings=outcome.status)
        self.live.refresh()

    def progress(self, entry_id: str, snap: Any) -> None:
        task = self._tasks.get(entry_id)
        if self.live is None or task is None:
            return
        total = snap.elapsed + snap.remaining if snap.remaining is not None else None
        found = ", ".join(f"{n} {s}" for s, n in snap.findings.items() if n) or "no findings"
        self.live.update(task, completed=snap.elapsed, total=total, cases=f"{snap.cases:,}", rate=f"{snap.rate:,.0f}",
                         findings=found)
        self.live.refresh()

    def finish(self) -> None:
        if self.live is not None:
            self.live.stop()  # the bars stay on screen; the summary follows
            self.live = None


# -- policy-test ----------------------------------------------------------------------------------


def cmd_policy_test(args: argparse.Namespace) -> int:
    from otfuzz.compliance.policy import PolicyTest, PolicyTestConfig, run_policy_test
    from otfuzz.compliance.system import OPERATION_CLASSES

    config = PolicyTestConfig(target=args.target, allow=args.allow, observe=args.observe, timeout=args.timeout,
                              include_disruptive=args.include_disruptive, scope=args.scope, operator=args.operator,
                              organisation=args.organisation, independence=args.independence)
    test = PolicyTest(config)  # validates URL, protocol and scope before anything is created
    known = {op.name for op in test.ops} | {op.code for op in test.ops if op.code is not None} | set(OPERATION_CLASSES)
    unknown = [item for item in args.allow if item not in known]
    if unknown:
        raise OtfuzzError(f"--allow: '{unknown[0]}' is not {', '.join(OPERATION_CLASSES)}, a {test.protocol.name} operation "
                          "or one of its function codes")
    from otfuzz.store.runs import default_run_dir, run_in_new_folder

    run_dir = args.out or default_run_dir("policy")
    section = run_in_new_folder(run_dir, lambda: asyncio.run(run_policy_test(config, run_dir, None, test)))
    s = section["summary"]
    print(f"{s['sent']} operations sent through {section['endpoint']['url']}: {s['violations']} policy violation(s) among "
          f"{s['disallowed']} disallowed, {s['over_blocked']} allowed operation(s) blocked, {s['skipped']} skipped")
    for v in section["verdicts"]:
        print(f"  {v['requirement']}: {v['verdict']} ({v['reason']})")
    for note in section["notes"]:
        print(f"  note: {note}")
    print(f"evidence in {run_dir}")
    return 0


# -- gap ------------------------------------------------------------------------------------------


def cmd_gap(args: argparse.Namespace) -> int:
    import json

    from otfuzz.compliance.gap import format_gap, gap_section
    from otfuzz.compliance.system import load_system
    from otfuzz.report.system import write_gap_reports

    model = load_system(args.system)
    section = gap_section(model, list(args.runs))
    if args.json:
        print(json.dumps(section, indent=2))
    else:
        print(format_gap(section))
    if args.out is not None:
        for path in write_gap_reports(section, args.out, args.format):
            print(f"gap written to {path}", file=sys.stderr if args.json else sys.stdout)
    return 0
