"""`otfuzz run`, `replay` and `demo`: fuzzing campaigns from the command line.

Exit status: 0 completed, 2 bad input (one line naming the problem), 3 target died and did not
recover, 130 interrupted; in every case what was recorded stays in the run folder and
`--resume` continues it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from otfuzz.cli.common import Progress, add_scope_option, add_tester_options, csv, duration, report_end
from otfuzz.errors import OtfuzzError


def add_commands(sub: Any) -> None:
    run = sub.add_parser("run", help="run a fuzzing campaign against one target")
    run.add_argument("target", nargs="?", help="target URL, e.g. modbus://127.0.0.1:502?unit=1")
    run.add_argument("--resume", metavar="RUN", type=Path, help="continue an interrupted run folder with the same case ids")
    run.add_argument("--out", type=Path, help="run folder to create (default runs/<protocol>-<time>)")
    run.add_argument("--duration", type=duration, help="how long to fuzz (30s, 10m, 2h)")
    run.add_argument("--cases", type=int, dest="max_cases", help="stop after this many cases")
    run.add_argument("--seed", type=int, default=0, help="campaign seed: with the configuration it fixes every case")
    run.add_argument("--seeds", type=Path, metavar="FILE",
                     help="seed file from 'otfuzz capture import': captured requests first, then fuzzed as templates and session prefixes")
    run.add_argument("--groups", type=csv, help="test groups to run (default: every group, see otfuzz protocols)")
    run.add_argument("--rate", type=float, help="cap in cases per second across all connections")
    run.add_argument("--concurrency", type=int, default=1, help="parallel connections (default 1)")
    run.add_argument("--timeout", type=float, help="seconds to wait for a reply (default: 20x the probe p95, 0.005-2 s)")
    run.add_argument("--silence-timeout", type=float,
                     help="seconds to wait for an answer to a request the specification says to reject "
                          "(default: 5x the probe p95, at least 0.002 s, at most --timeout)")
    run.add_argument("--read-only", action="store_true", help="never send a write or restart request (for live plants)")
    run.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                     help="fragile target: one connection and one request at a time (no requests in flight together, "
                          "no spare connection opened ahead, no connection parked to catch a late answer to a frame the "
                          "target always drops; such frames then wait the full silence timeout)")
    add_scope_option(run)
    run.add_argument("--target-cmd", help="command that starts the target; otfuzz restarts it after crashes")
    run.add_argument("--probe-interval", type=float, default=5.0, help="seconds between routine health probes")
    run.add_argument("--probe-deadline", type=float, default=2.0, help="seconds a health probe may take")
    run.add_argument("--recovery-timeout", type=float, default=10.0, help="seconds to wait for a target to recover by itself")
    run.add_argument("--minimise-budget", type=int, default=48, help="replay trials allowed to minimise each anomaly")
    run.add_argument("--no-confirm", dest="confirm", action="store_false", help="record anomalies without replay")
    run.add_argument("--confirm-time", type=float, default=120.0,
                     help="seconds allowed after fuzzing to replay and minimise what is left (default 120)")
    run.add_argument("--slow-factor", type=float, default=10.0,
                     help="a reply later than this many times the probe's p95 (and 50 ms more) is a slow-reply (default 10)")
    run.add_argument("--known-finding-rate", type=int, default=50, metavar="N",
                     help="send 1 in N cases that match a confirmed finding's trigger (default 50; 1 sends all)")
    run.add_argument("--hold-time", type=float, default=2.0,
                     help="seconds a connection-group pattern holds its connections or partial frame (default 2)")
    run.add_argument("--max-connections", type=int, default=100,
                     help="connections a connection-group pattern opens at most (default 100; at most 256); below 19, "
                          "the start does not test whether the target serves 19 at once (for more quiet parks)")
    run.add_argument("--baseline", type=Path, metavar="FILE",
                     help="known findings (otfuzz findings RUN --save-baseline FILE): exit 1 only on findings not in it")
    add_tester_options(run, "the campaign")
    run.add_argument("--quiet", action="store_true", help="no live progress display")
    run.add_argument("--dashboard", action="store_true",
                     help="serve the live browser dashboard of this run (and its sibling runs) while it runs")
    run.add_argument("--dashboard-port", type=int, default=8626, help="with --dashboard: its TCP port (default 8626; 0 picks one)")
    run.add_argument("--dashboard-bind", default="127.0.0.1", metavar="ADDR",
                     help="with --dashboard: address to listen on (default 127.0.0.1; any other requires the printed token)")
    run.add_argument("--allow-control", action="store_true", help="with --dashboard: offer a button that stops this campaign")
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser("replay", help="regenerate a case (or an anomaly's reproducer) by id and send it again")
    replay.add_argument("run_dir", type=Path, metavar="RUN")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--case", type=int, help="case id to regenerate and send")
    which.add_argument("--anomaly", type=int, help="anomaly id whose reproducer to send")
    which.add_argument("--finding", type=int, help="finding id whose minimised reproducer to send")
    replay.add_argument("--dry-run", action="store_true", help="print the bytes without sending")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    replay.set_defaults(func=cmd_replay)

    demo = sub.add_parser("demo", help="start a real Modbus/TCP server (pymodbus) on loopback and run a short campaign")
    demo.add_argument("--out", type=Path, help="run folder (default runs/demo-<time>)")
    demo.add_argument("--duration", type=duration, default=20.0, help="campaign length (default 20s)")
    demo.add_argument("--seed", type=int, default=7, help="campaign seed (default 7)")
    demo.set_defaults(func=cmd_demo)


# -- run ----------------------------------------------------------------------------------------


def _campaign_line(snap: Any) -> str:
    findings = ", ".join(f"{snap.findings[s]} {s}" for s in ("high", "medium", "low") if snap.findings.get(s)) or "none"
    left = "" if snap.remaining is None else f" | {snap.remaining:5.0f} s left"
    return (f"cases {snap.cases} | {snap.rate:7.0f}/s | findings: {findings} | anomalies {sum(snap.anomalies.values())} "
            f"| target {snap.health}{left}")


def _campaign_panel(snap: Any, latencies: Any) -> Any:
    """The live panel of `otfuzz run` on a terminal: a time (or case) bar, rate, health, findings."""
    from rich.panel import Panel
    from rich.progress_bar import ProgressBar
    from rich.table import Table

    from otfuzz.cli.common import sparkline

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    if snap.remaining is not None:
        total = snap.elapsed + snap.remaining
        grid.add_row("time", ProgressBar(total=max(total, 1e-9), completed=min(snap.elapsed, total), width=40))
        grid.add_row("", f"{snap.elapsed:.0f} s of {total:.0f} s, {snap.remaining:.0f} s left")
    else:
        grid.add_row("time", f"{snap.elapsed:.0f} s")
    grid.add_row("cases", f"{snap.cases} ({snap.rate:.0f}/s)")
    grid.add_row("target", str(snap.health))
    probe = "-" if snap.probe_ms is None else f"{snap.probe_ms:.2f} ms"
    grid.add_row("probe", f"{probe}  {sparkline(latencies)}")
    findings = ", ".join(f"{snap.findings[s]} {s}" for s in ("high", "medium", "low") if snap.findings.get(s)) or "none"
    grid.add_row("findings", findings)
    grid.add_row("anomalies", str(sum(snap.anomalies.values())))
    return Panel(grid, title="otfuzz run", expand=False)


def _config_from_args(args: argparse.Namespace) -> Any:
    from otfuzz.engine.campaign import CampaignConfig
    from otfuzz.engine.strategies import GROUPS

    if not args.target:
        raise OtfuzzError("run: give a target URL (e.g. modbus://127.0.0.1:502) or --resume RUN")
    return CampaignConfig(
        target=args.target, seed=args.seed, duration=args.duration, max_cases=args.max_cases,
        groups=args.groups or list(GROUPS), rate=args.rate, concurrency=args.concurrency, timeout=args.timeout,
        silence_timeout=args.silence_timeout, pipeline=args.pipeline,
        read_only=args.read_only, scope=args.scope, target_cmd=args.target_cmd, probe_interval=args.probe_interval,
        probe_deadline=args.probe_deadline, recovery_timeout=args.recovery_timeout, minimise_budget=args.minimise_budget,
        confirm=args.confirm, confirm_time=args.confirm_time, operator=args.operator, organisation=args.organisation,
        independence=args.independence, slow_factor=args.slow_factor, known_finding_rate=args.known_finding_rate,
        baseline=str(args.baseline) if args.baseline else None, hold_time=args.hold_time, max_connections=args.max_connections,
        seeds=str(args.seeds.resolve()) if args.seeds else None, seeds_sha256=_seeds_hash(args.seeds),
    )


def _seeds_hash(path: Path | None) -> str | None:
    """The seed file's content hash, recorded in the configuration (None without --seeds)."""
    if path is None:
        return None
    from otfuzz.capture.seeds import load_seed_file

    return load_seed_file(path)[1]


def _run(config: Any, run_dir: Path, resume: bool, show_progress: bool,
         args: argparse.Namespace | None = None) -> tuple[str, str]:
    from otfuzz.engine.campaign import run_campaign

    server = _start_dashboard(args, run_dir) if args is not None and args.dashboard else None
    progress = Progress(show_progress, _campaign_line, _campaign_panel)
    try:
        return run_campaign(config, run_dir, resume, progress)
    finally:
        progress.finish()
        if server is not None:
            server.stop()


def _start_dashboard(args: argparse.Namespace, run_dir: Path) -> Any:
    """The dashboard over the run's parent folder on a thread; its stop button (with
    --allow-control) signals this process, which stops the campaign as Ctrl-C does."""
    import os
    import signal
    from urllib.parse import quote

    from otfuzz.dashboard.server import DashboardServer

    server = DashboardServer(run_dir.parent, args.dashboard_bind, args.dashboard_port, args.allow_control)
    if args.allow_control:
        server.settings.stop_run[run_dir.parent / run_dir.name] = lambda: os.kill(os.getpid(), signal.SIGINT)
    server.start()
    base, _, token = server.url.partition("?")
    print(f"dashboard: {base}run/{quote(run_dir.name)}{'?' + token if token else ''} (stops with the campaign)", flush=True)
    return server


def summary_line(run_dir: Path, status: str) -> str:
    """One line from the store's aggregates (a million-case run must not be loaded to print it)."""
    from otfuzz.store.evidence import EvidenceStore

    store = EvidenceStore.open(run_dir)
    try:
        cases = sum(sum(replies.values()) for replies in store.counts().values())
        anomalies = sum(store.anomaly_classes().values())
        findings = store.findings()
    finally:
        store.close()
    by_severity = {s: sum(1 for f in findings if f.get("severity") == s) for s in ("high", "medium", "low")}
    shown = ", ".join(f"{n} {s}" for s, n in by_severity.items() if n) or "none"
    confirmed = sum(1 for f in findings if (f.get("confirmation") or {}).get("status") == "confirmed")
    return (f"{status}: {cases} cases, {len(findings)} findings ({shown}; {confirmed} confirmed by replay) from "
            f"{anomalies} anomalies; evidence in {run_dir}")


def cmd_run(args: argparse.Namespace) -> int:
    from otfuzz.engine.campaign import CampaignConfig
    from otfuzz.store.evidence import EvidenceStore
    from otfuzz.store.runs import default_run_dir, run_in_new_folder

    if args.resume:
        run_dir = args.resume
        store = EvidenceStore.open(run_dir)
        try:
            meta = store.get_meta("campaign")
        finally:
            store.close()
        config = CampaignConfig.from_dict(meta["config"])
        if meta.get("status") == "completed":
            raise OtfuzzError(f"run {run_dir} is already complete; nothing to resume")
        status, reason = _run(config, run_dir, True, not args.quiet, args)
    else:
        config = _config_from_args(args)
        config.validate()
        if config.baseline:
            from otfuzz.engine.baseline import load_baseline

            load_baseline(Path(config.baseline))  # a bad baseline stops the run before it starts
        from otfuzz.protocols import protocol_for
        from otfuzz.transport.target import Scope, parse_target

        target = parse_target(config.target)
        protocol = protocol_for(target)
        Scope(config.scope).check(target)
        from otfuzz.engine.campaign import load_seeds

        load_seeds(config, protocol, target.scheme, target.port)  # a seed file without this protocol stops the run first
        run_dir = args.out or default_run_dir(target.scheme)
        status, reason = run_in_new_folder(run_dir, lambda: _run(config, run_dir, False, not args.quiet, args))
    print(summary_line(run_dir, status))
    code = report_end(status, reason, f"interrupted; continue with: otfuzz run --resume {run_dir}")
    if code == 0 and config.baseline:
        return _against_baseline(run_dir, Path(config.baseline))
    return code


def _against_baseline(run_dir: Path, path: Path) -> int:
    """Exit status 1 when the run found defects the baseline does not know, named on stderr."""
    from otfuzz.cli.findings import EXIT_NEW_FINDINGS, run_findings
    from otfuzz.engine.baseline import gating, load_baseline, mark_known

    findings = run_findings(run_dir)
    mark_known(findings, load_baseline(path))
    new = gating(findings)
    known = sum(1 for f in findings if f.get("known"))
    if not new:
        print(f"no new findings ({known} known from {path})")
        return 0
    for f in new:
        print(f"otfuzz: new finding #{f['id']} ({f['severity']} {f['class']}): {f['title']}", file=sys.stderr)
    return EXIT_NEW_FINDINGS


# -- replay -------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from otfuzz.engine.campaign import CampaignConfig
    from otfuzz.engine.executor import CaseRunner
    from otfuzz.engine.generator import CaseGenerator
    from otfuzz.monitor.probe import HealthProbe
    from otfuzz.protocols import protocol_for
    from otfuzz.store.evidence import EvidenceStore
    from otfuzz.transport.target import Scope, is_loopback, parse_target

    store = EvidenceStore.open(args.run_dir)
    try:
        meta = store.get_meta("campaign")
        config = CampaignConfig.from_dict(meta["config"])
        target = parse_target(config.target)
        protocol = protocol_for(target)
        if args.case is not None:
            if args.case < 0:
                raise OtfuzzError("--case must be 0 or more")
            loopback = is_loopback(Scope(config.scope).check(target))
            from otfuzz.engine.feedback import recorded_feedback
            from otfuzz.engine.strategies import StrategyOptions
            from otfuzz.engine.values import Dictionary

            feedback = recorded_feedback(Dictionary(protocol.dictionary()), store)
            from otfuzz.engine.campaign import load_seeds

            generator = CaseGenerator(protocol, config.seed, config.groups, config.read_only, loopback, feedback,
                                      StrategyOptions(config.hold_time, config.max_connections),
                                      load_seeds(config, protocol, target.scheme, target.port))
            case = generator.case(args.case)
            frames = list(case.frames)
            header: dict[str, Any] = {"case_id": case.case_id, "group": case.group, "description": case.description}
        elif args.finding is not None:
            finding = store.finding(args.finding)
            if finding is None:
                raise OtfuzzError(f"run {args.run_dir} has no finding {args.finding} (list them with: otfuzz findings {args.run_dir})")
            frames = [bytes.fromhex(h) for h in finding["reproducer"]["frames_hex"]]
            header = {"finding": args.finding, "class": finding["class"], "title": finding.get("title", ""),
                      "case_ids": finding["reproducer"]["case_ids"], "minimised": finding["reproducer"].get("minimised", False)}
        else:
            anomaly = store.anomaly(args.anomaly)
            if anomaly is None:
                raise OtfuzzError(f"run {args.run_dir} has no anomaly {args.anomaly}")
            frames = [bytes.fromhex(h) for h in anomaly["reproducer"]["frames_hex"]]
            header = {"anomaly": args.anomaly, "class": anomaly["class"], "case_ids": anomaly["reproducer"]["case_ids"]}
        header["frames_hex"] = [f.hex() for f in frames]
        if args.dry_run:
            print(json.dumps(header, indent=2) if args.json else "\n".join(f"{k}: {v}" for k, v in header.items()))
            return 0
        address = Scope(config.scope).check(target)

        async def send() -> dict[str, Any]:
            probe = HealthProbe(protocol, address, target.port, config.probe_deadline)
            runner = CaseRunner(protocol, address, target.port, config.timeout or 1.0, config.probe_deadline)
            outcome = None
            try:
                for frame in frames:
                    outcome = await runner.run_frames((frame,))
            finally:
                runner.drop()
            after = await probe.check()
            assert outcome is not None
            return {**outcome.as_record(), "probe_after": {"ok": after.ok, "reason": after.reason}}

        result = {**header, **asyncio.run(send())}
    finally:
        store.close()
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


# -- demo ---------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    """A real pymodbus server started and supervised by otfuzz, a short campaign, every report."""
    from otfuzz.cli.evidence import write_run_reports
    from otfuzz.demo import free_port
    from otfuzz.engine.campaign import CampaignConfig
    from otfuzz.store.runs import default_run_dir, prepare_run_dir

    out: Path = args.out or default_run_dir("demo")
    port = free_port()
    command = f"{shlex.quote(sys.executable)} -m otfuzz.demo serve --port {port}"
    config = CampaignConfig(target=f"modbus://127.0.0.1:{port}", seed=args.seed, duration=args.duration, target_cmd=command,
                            confirm_time=30.0, operator="otfuzz demo", independence="demonstration (not an assessment)")
    prepare_run_dir(out)
    print(f"demo: pymodbus server on 127.0.0.1:{port}, {args.duration:g} s campaign, seed {args.seed}, "
          "then up to 30 s to replay and minimise what it found", flush=True)
    status, _ = _run(config, out, False, True)
    print(summary_line(out, status))
    write_run_reports(out, ["json", "html", "pdf", "junit", "oscal"], component_type="software-application", sl_t="1,1,1,1,1,1,1")
    return 0 if status == "completed" else 1
