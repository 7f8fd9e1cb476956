"""Command line of the system view: model check/show, plan, run-plan, policy-test and gap.

Thin argument handling over `system`, `plan`, `policy` and `gap`: every user error is an
OtfuzzError (one line, exit 2) raised before anything is sent, and every command that sends
refuses endpoints outside loopback and the declared --scope.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from otfuzz.errors import OtfuzzError

# Zone fill colour by its highest SL-T (1 green .. 4 red), with the legend text.
SL_COLOURS: Mapping[int, str] = MappingProxyType({1: "#d9f0d3", 2: "#fff2b2", 3: "#fdd0a2", 4: "#f4a6a6"})


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _duration(text: str) -> float:
    from otfuzz.cli import parse_duration

    return parse_duration(text)


def add_commands(sub: Any) -> None:
    """Register the system-view subcommands on the otfuzz command line."""
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
    plan.add_argument("--duration", type=_duration, help="override every campaign's planned duration (30s, 10m, 2h)")
    plan.add_argument("--seed", type=int, default=0, help="seed of every campaign in the plan")
    plan.add_argument("--timeout", type=float, help="seconds to wait for a reply (default: per campaign, automatic)")
    plan.add_argument("--concurrency", type=int, default=1, help="for the duration estimate: entries run at once")
    plan.set_defaults(func=cmd_plan)

    run_plan = sub.add_parser("run-plan", help="run a test plan (sequentially by default), resumable as a whole")
    run_plan.add_argument("plan", type=Path, nargs="?", metavar="PLAN")
    run_plan.add_argument("--out", type=Path, help="folder for the plan's runs (one sub-folder per entry)")
    run_plan.add_argument("--resume", type=Path, metavar="RUNS", help="continue an interrupted run-plan folder")
    run_plan.add_argument("--concurrency", type=int, default=1, help="entries run at once (default 1)")
    run_plan.add_argument("--scope", action="append", default=[], help="addresses or networks you may test besides loopback")
    run_plan.add_argument("--operator", help="who ran the plan (for the evidence record)")
    run_plan.add_argument("--organisation", help="organisation of the operator")
    run_plan.add_argument("--independence", help="tester independence per IEC 62443-4-1 SVV-5")
    run_plan.set_defaults(func=cmd_run_plan)

    policy = sub.add_parser("policy-test", help="send allowed and disallowed operations through a conduit endpoint")
    policy.add_argument("target", help="conduit endpoint URL as the outer zone sees it, e.g. modbus://10.0.2.1:502")
    policy.add_argument("--allow", type=lambda t: [int(x) if x.isdigit() else x for x in _csv(t)], required=True,
                        help="what the policy allows: read, write, disruptive, all, operation names or function codes (comma separated)")
    policy.add_argument("--observe", metavar="HOST:PORT", help="the server itself, inside the zone: reads before and after each write")
    policy.add_argument("--out", type=Path, help="run folder to create (default runs/policy-<time>)")
    policy.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each reply (default 1)")
    policy.add_argument("--include-disruptive", action="store_true", help="also send requests that restart or reconfigure the device")
    policy.add_argument("--scope", action="append", default=[], help="addresses or networks you may test besides loopback")
    policy.add_argument("--operator")
    policy.add_argument("--organisation")
    policy.add_argument("--independence")
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


def system_dot(model: Any) -> str:
    """Graphviz DOT of the model: a cluster per zone filled by its highest SL-T, an edge per channel."""
    def q(text: str) -> str:
        return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {q(model.name)} {{", "  compound=true; rankdir=LR; fontname=Helvetica;",
             "  node [fontname=Helvetica, fontsize=10, shape=box, style=\"rounded,filled\", fillcolor=white];",
             "  edge [fontname=Helvetica, fontsize=9];", f"  label={q(model.name + ' - zones coloured by highest SL-T')}; labelloc=t;"]
    for n, zone in enumerate(model.zones):
        top = max(zone.sl_t)
        title = f"{zone.name}  SL-T {''.join(map(str, zone.sl_t))} ({zone.criticality})"
        lines += [f"  subgraph cluster_{n} {{",
                  f"    label={q(title)};",
                  f"    style=filled; fillcolor={q(SL_COLOURS[top])}; color=gray40;",
                  f"    {q('zone:' + zone.name)} [shape=point, style=invis, width=0];"]
        for name in zone.assets:
            asset = model.asset(name)
            served = "\\n".join(f"{s.protocol}:{s.port}" for s in asset.services)
            label = f"{asset.name}\\n{asset.address}" + (f"\\n{served}" if served else "")
            lines.append(f"    {q('asset:' + name)} [label=\"{label}\"];")
        lines.append("  }")
    index = {z.name: n for n, z in enumerate(model.zones)}
    for conduit, channel in model.channels():
        allow = ",".join(map(str, channel.policy.allow)) if channel.policy else "no policy"
        label = f"{conduit.name}: {channel.protocol}:{channel.port}\\n[{allow}]"
        lines.append(f"  {q('zone:' + channel.from_zone)} -> {q('asset:' + channel.server)} "
                     f"[ltail=cluster_{index[channel.from_zone]}, label=\"{label}\"];")
    for conduit in model.conduits:
        if not conduit.channels:
            a, b = conduit.zones
            lines.append(f"  {q('zone:' + a)} -> {q('zone:' + b)} [ltail=cluster_{index[a]}, lhead=cluster_{index[b]}, "
                         f"dir=none, style=dashed, label={q(conduit.name + ' (no channels)')}];")
    legend = " | ".join(f"SL {level}" for level in SL_COLOURS)
    lines.append(f"  legend [shape=record, style=filled, fillcolor=white, label={q(legend)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"


def cmd_model_show(args: argparse.Namespace) -> int:
    from otfuzz.compliance.system import load_system

    model = load_system(args.system)
    dot = system_dot(model)
    out: Path = args.out
    fmt = out.suffix.lstrip(".").lower()
    if fmt not in ("svg", "png", "pdf", "dot", "gv"):
        raise OtfuzzError(f"--out {out}: unknown format '{fmt}' (use .svg, .png, .pdf or .dot)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt in ("dot", "gv"):
            out.write_text(dot)
        else:
            exe = shutil.which("dot")
            if exe is None:
                raise OtfuzzError("Graphviz 'dot' is not installed (apt-get install graphviz); or write the DOT source with --out system.dot")
            done = subprocess.run([exe, f"-T{fmt}", "-o", str(out)], input=dot.encode(), capture_output=True, timeout=60)
            if done.returncode != 0:
                raise OtfuzzError(f"Graphviz failed: {done.stderr.decode(errors='replace').strip()[:200]}")
    except OSError as exc:
        raise OtfuzzError(f"cannot write {out}: {exc.strerror}") from None
    print(out)
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
    from otfuzz.cli import _prepare_run_dir
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
    from otfuzz.compliance.plan import PlanRunner

    PlanRunner(plan, runs, args.scope, args.concurrency).check()  # refuse before creating anything
    if not resume:
        _prepare_run_dir(runs)
    tester = {"operator": args.operator, "organisation": args.organisation, "independence": args.independence}
    outcomes = run_plan(plan, runs, resume, args.scope, args.concurrency, tester)
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


# -- policy-test ----------------------------------------------------------------------------------


def cmd_policy_test(args: argparse.Namespace) -> int:
    from otfuzz.cli import _default_out, run_in_new_folder
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
    run_dir = args.out or _default_out("policy")
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
