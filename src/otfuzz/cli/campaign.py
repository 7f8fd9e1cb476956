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
    run.add_argument("--groups", type=csv, help="test groups to run (default: every group, see otfuzz protocols)")
    run.add_argument("--rate", type=float, help="cap in cases per second across all connections")
    run.add_argument("--concurrency", type=int, default=1, help="parallel connections (default 1)")
    run.add_argument("--timeout", type=float, help="seconds to wait for a reply (default: 20x the probe p95, 0.005-2 s)")
    run.add_argument("--silence-timeout", type=float,
                     help="seconds to wait for an answer to a request the specification says to reject "
                          "(default: 5x the probe p95, at least 0.002 s, at most --timeout)")
    run.add_argument("--read-only", action="store_true", help="never send a write or restart request (for live plants)")
    run.add_argument("--no-pipeline", dest="pipeline", action="store_false",
                     help="fragile target: one connection and one request at a time (no connection parked to catch a "
                          "late answer to a frame the target always drops; such frames then wait the full silence timeout)")
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
                     help="connections a connection-group pattern opens at most (default 100; at most 256)")
    run.add_argument("--baseline", type=Path, metavar="FILE",
                     help="known findings (otfuzz findings RUN --save-baseline FILE): exit 1 only on findings not in it")
    add_tester_options(run, "the campaign")
    run.add_argument("--quiet", action="store_true", help="no live progress display")
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
    )


def _run(config: Any, run_dir: Path, resume: bool, show_progress: bool) -> tuple[str, str]:
    from otfuzz.engine.campaign import run_campaign

    progress = Progress(show_progress, _campaign_line)
    try:
        return run_campaign(config, run_dir, resume, progress)
    finally:
        progress.finish()


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
        status, reason = _run(config, run_dir, True, not args.quiet)
    else:
        config = _config_from_args(args)
        config.validate()
        if config.baseline:
            from otfuzz.engine.baseline import load_baseline

            load_baseline(Path(config.baseline))  # a bad baseline stops the run before it starts
        from otfuzz.protocols import protocol_for
        from otfuzz.transport.target import Scope, parse_target

        target = parse_target(config.target)
        protocol_for(target)
        Scope(config.scope).check(target)
        run_dir = args.out or default_run_dir(target.scheme)
        status, reason = run_in_new_folder(run_dir, lambda: _run(config, run_dir, False, not args.quiet))
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
            generator = CaseGenerator(protocol, config.seed, config.groups, config.read_only, loopback, feedback,
                                      StrategyOptions(config.hold_time, config.max_connections))
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
