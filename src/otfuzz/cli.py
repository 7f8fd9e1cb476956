"""The otfuzz command line: thin argument handling over the engine, store and report layers.

Every error a user can cause surfaces as one line `otfuzz: error: ...` and exit status 2; a
target that dies and does not come back ends the run with status 3, Ctrl-C with 130, and in
every case what was recorded so far stays in the run folder and `--resume` continues it.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import re
import shutil
import sys
from pathlib import Path
from collections.abc import Callable
from typing import Any, TypeVar

from otfuzz import __version__
from otfuzz.engine.stopping import run_until_stopped
from otfuzz.errors import OtfuzzError

T = TypeVar("T")

EXIT_USAGE = 2
EXIT_TARGET_DOWN = 3
EXIT_INTERRUPTED = 130

# Layers that add their own subcommands: module -> add_commands(subparsers).
EXTENSIONS = ("otfuzz.report.commands", "otfuzz.compliance.system_commands", "otfuzz.stress.commands")


class _Parser(argparse.ArgumentParser):
    """argparse that reports bad options in our one-line format with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise OtfuzzError(f"{self.prog}: {message}")


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '2h', '1h30m' -> seconds."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not match or not any(match.groups()):
        raise argparse.ArgumentTypeError(f"bad duration '{text}' (examples: 30s, 10m, 2h)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise argparse.ArgumentTypeError(f"duration must be positive, got '{text}'")
    return total


def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="otfuzz", description="Protocol robustness testing for industrial control systems, with IEC 62443 evidence.")
    parser.add_argument("--version", action="version", version=f"otfuzz {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run a fuzzing campaign against one target")
    run.add_argument("target", nargs="?", help="target URL, e.g. modbus://127.0.0.1:502?unit=1")
    run.add_argument("--resume", metavar="RUN", type=Path, help="continue an interrupted run folder with the same case ids")
    run.add_argument("--out", type=Path, help="run folder to create (default runs/<protocol>-<time>)")
    run.add_argument("--duration", type=parse_duration, help="how long to fuzz (30s, 10m, 2h)")
    run.add_argument("--cases", type=int, dest="max_cases", help="stop after this many cases")
    run.add_argument("--seed", type=int, default=0, help="campaign seed: with the configuration it fixes every case")
    run.add_argument("--groups", type=_csv, help="test groups to run (default: boundary,structural,mutation,sequence)")
    run.add_argument("--rate", type=float, help="cap in cases per second across all connections")
    run.add_argument("--concurrency", type=int, default=1, help="parallel connections (default 1)")
    run.add_argument("--timeout", type=float, help="seconds to wait for a reply (default: 20x the probe p95, 0.005-2 s)")
    run.add_argument("--silence-timeout", type=float,
                     help="seconds to wait for an answer to a request the specification says to reject "
                          "(default: 5x the probe p95, at least 0.002 s, at most --timeout)")
    run.add_argument("--read-only", action="store_true", help="never send a write or restart request (for live plants)")
    run.add_argument("--scope", action="append", default=[], help="addresses or networks you may test besides loopback")
    run.add_argument("--target-cmd", help="command that starts the target; otfuzz restarts it after crashes")
    run.add_argument("--probe-interval", type=float, default=5.0, help="seconds between routine health probes")
    run.add_argument("--probe-deadline", type=float, default=2.0, help="seconds a health probe may take")
    run.add_argument("--recovery-timeout", type=float, default=10.0, help="seconds to wait for a target to recover by itself")
    run.add_argument("--minimise-budget", type=int, default=48, help="replay trials allowed to minimise each anomaly")
    run.add_argument("--no-confirm", dest="confirm", action="store_false", help="record anomalies without replay")
    run.add_argument("--confirm-time", type=float, default=120.0,
                     help="seconds allowed after fuzzing to replay and minimise anomalies (default 120)")
    run.add_argument("--operator", help="who ran the campaign (for the evidence record)")
    run.add_argument("--organisation", help="organisation of the operator")
    run.add_argument("--independence", help="tester independence per IEC 62443-4-1 SVV-5 (e.g. 'independent department')")
    run.add_argument("--quiet", action="store_true", help="no live progress display")
    run.set_defaults(func=cmd_run)

    replay = sub.add_parser("replay", help="regenerate a case (or an anomaly's reproducer) by id and send it again")
    replay.add_argument("run_dir", type=Path, metavar="RUN")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--case", type=int, help="case id to regenerate and send")
    which.add_argument("--anomaly", type=int, help="anomaly id whose minimised reproducer to send")
    replay.add_argument("--dry-run", action="store_true", help="print the bytes without sending")
    replay.add_argument("--json", action="store_true", help="print the result as JSON")
    replay.set_defaults(func=cmd_replay)

    protocols = sub.add_parser("protocols", help="list protocols, their test groups and URL options")
    protocols.set_defaults(func=cmd_protocols)

    schema = sub.add_parser("schema", help="print a published JSON Schema (results, compliance, system)")
    schema.add_argument("name", choices=sorted(SCHEMAS))
    schema.set_defaults(func=cmd_schema)

    demo = sub.add_parser("demo", help="start a real Modbus/TCP server (pymodbus) on loopback and run a short campaign")
    demo.add_argument("--out", type=Path, help="run folder (default runs/demo-<time>)")
    demo.add_argument("--duration", type=parse_duration, default=20.0, help="campaign length (default 20s)")
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(func=cmd_demo)

    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if not exc.name or not name.startswith(exc.name):
                raise
            continue
        module.add_commands(sub)
    return parser


# -- run ----------------------------------------------------------------------------------------


def _default_out(prefix: str) -> Path:
    from datetime import datetime

    return Path("runs") / f"{prefix}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _prepare_run_dir(path: Path) -> bool:
    """Create the run folder; True if we created it (so a failed start can remove it)."""
    from otfuzz.store.evidence import STORE_NAME

    if path.exists():
        if not path.is_dir():
            raise OtfuzzError(f"--out {path} exists and is not a folder")
        if (path / STORE_NAME).exists():
            raise OtfuzzError(f"run folder {path} already holds a run; continue it with --resume {path} or choose another --out")
        if any(path.iterdir()):
            raise OtfuzzError(f"--out {path} is not empty; choose a new or empty folder")
        if not os.access(path, os.W_OK):
            raise OtfuzzError(f"cannot write to run folder {path}")
        return False
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise OtfuzzError(f"cannot create run folder {path}: {exc.strerror}") from None
    return True


def run_in_new_folder(run_dir: Path, job: Callable[[], T]) -> T:
    """Create the run folder and run `job` in it. If the job stops on a user error before it
    recorded the start of a run (bad target, failed baseline...), remove what it wrote, so
    nothing half-written is left behind; once a run is recorded, everything is kept."""
    created = _prepare_run_dir(run_dir)
    try:
        return job()
    except OtfuzzError:
        if _holds_a_run(run_dir):
            raise
        if created:
            shutil.rmtree(run_dir, ignore_errors=True)
        else:
            for child in run_dir.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        raise


def _holds_a_run(run_dir: Path) -> bool:
    from otfuzz.store.evidence import EvidenceStore

    try:
        EvidenceStore.open(run_dir).close()
    except OtfuzzError:
        return False
    return True


def exit_status(status: str, reason: str, interrupted_note: str) -> int:
    """Exit status of a run that ended with `status`, with its one-line message on stderr."""
    if status == "failed":
        print(f"otfuzz: error: {reason}", file=sys.stderr)
        return EXIT_TARGET_DOWN
    if status == "interrupted":
        print(interrupted_note, file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


class Progress:
    """Live progress on stderr: one rewritten line on a terminal, a line every 10 s otherwise.

    `render` turns a layer's snapshot into the line; campaigns and stress runs share the rest.
    """

    def __init__(self, enabled: bool, render: Callable[[Any], str] | None = None) -> None:
        self.enabled = enabled
        self.render = render or _campaign_line
        self.tty = sys.stderr.isatty()
        self._last_plain = -10.0

    def __call__(self, snap: Any) -> None:
        if not self.enabled:
            return
        line = self.render(snap)
        if self.tty:
            sys.stderr.write("\r\x1b[K" + line)
            sys.stderr.flush()
        elif snap.elapsed - self._last_plain >= 10:
            self._last_plain = snap.elapsed
            print(line, file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def _campaign_line(snap: Any) -> str:
    anomalies = ", ".join(f"{k} {v}" for k, v in sorted(snap.anomalies.items())) or "none"
    left = "" if snap.remaining is None else f" | {snap.remaining:5.0f} s left"
    return f"cases {snap.cases} | {snap.rate:7.0f}/s | anomalies: {anomalies} | target {snap.health}{left}"


def _config_from_args(args: argparse.Namespace) -> Any:
    from otfuzz.engine.campaign import CampaignConfig
    from otfuzz.engine.strategies import GROUPS

    if not args.target:
        raise OtfuzzError("run: give a target URL (e.g. modbus://127.0.0.1:502) or --resume RUN")
    return CampaignConfig(
        target=args.target, seed=args.seed, duration=args.duration, max_cases=args.max_cases,
        groups=args.groups or list(GROUPS), rate=args.rate, concurrency=args.concurrency, timeout=args.timeout,
        silence_timeout=args.silence_timeout,
        read_only=args.read_only, scope=args.scope, target_cmd=args.target_cmd, probe_interval=args.probe_interval,
        probe_deadline=args.probe_deadline, recovery_timeout=args.recovery_timeout, minimise_budget=args.minimise_budget,
        confirm=args.confirm, confirm_time=args.confirm_time, operator=args.operator, organisation=args.organisation, independence=args.independence,
    )


def run_campaign(config: Any, run_dir: Path, resume: bool, show_progress: bool = True) -> tuple[str, str]:
    """Run a campaign to its end with Ctrl-C handling; returns (status, stop reason)."""
    from otfuzz.engine.campaign import Campaign
    from otfuzz.store.evidence import EvidenceStore

    store = EvidenceStore.open(run_dir) if resume else EvidenceStore.create(run_dir)
    progress = Progress(show_progress)
    try:
        campaign = Campaign(config, run_dir, store, progress)
        status = run_until_stopped(campaign, lambda: campaign.run(resume))
        return status, campaign.stop_reason
    finally:
        progress.finish()
        store.close()


def _summary(run_dir: Path, status: str) -> str:
    """One line from the store's aggregates (a million-case run must not be loaded to print it)."""
    from otfuzz.store.evidence import EvidenceStore

    store = EvidenceStore.open(run_dir)
    try:
        cases = sum(sum(replies.values()) for replies in store.counts().values())
        classes = store.anomaly_classes()
    finally:
        store.close()
    shown = ", ".join(f"{k}: {v}" for k, v in classes.items()) or "none"
    return f"{status}: {cases} cases, {sum(classes.values())} anomalies ({shown}); evidence in {run_dir}"


def cmd_run(args: argparse.Namespace) -> int:
    from otfuzz.engine.campaign import CampaignConfig
    from otfuzz.store.evidence import EvidenceStore

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
        status, reason = run_campaign(config, run_dir, resume=True, show_progress=not args.quiet)
    else:
        config = _config_from_args(args)
        config.validate()
        from otfuzz.protocols import protocol_class
        from otfuzz.transport.target import Scope, parse_target

        target = parse_target(config.target)
        protocol_class(target.scheme)(target.options)
        Scope(config.scope).check(target)
        run_dir = args.out or _default_out(target.scheme)
        status, reason = run_in_new_folder(run_dir, lambda: run_campaign(config, run_dir, resume=False, show_progress=not args.quiet))
    print(_summary(run_dir, status))
    return exit_status(status, reason, f"interrupted; continue with: otfuzz run --resume {run_dir}")


# -- replay -------------------------------------------------------------------------------------


def cmd_replay(args: argparse.Namespace) -> int:
    from otfuzz.engine.campaign import CampaignConfig
    from otfuzz.engine.executor import CaseRunner
    from otfuzz.engine.generator import CaseGenerator
    from otfuzz.monitor.probe import HealthProbe
    from otfuzz.protocols import protocol_class
    from otfuzz.store.evidence import EvidenceStore
    from otfuzz.transport.target import Scope, parse_target

    store = EvidenceStore.open(args.run_dir)
    try:
        meta = store.get_meta("campaign")
        config = CampaignConfig.from_dict(meta["config"])
        target = parse_target(config.target)
        protocol = protocol_class(target.scheme)(target.options)
        if args.case is not None:
            if args.case < 0:
                raise OtfuzzError("--case must be 0 or more")
            case = CaseGenerator(protocol, config.seed, config.groups, config.read_only).case(args.case)
            frames = list(case.frames)
            header: dict[str, Any] = {"case_id": case.case_id, "group": case.group, "description": case.description}
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


# -- protocols, report, demo --------------------------------------------------------------------


def cmd_protocols(args: argparse.Namespace) -> int:
    from otfuzz.engine.strategies import GROUPS
    from otfuzz.protocols import available

    for scheme, cls in available().items():
        print(f"{scheme}  ({cls.transport}, default port {cls.default_port})  {scheme}://HOST:{cls.default_port}")
        print(f"  test groups: {', '.join(GROUPS)}")
        for key, spec in cls.options_spec.items():
            print(f"  ?{key}={spec.default}  {spec.doc}")
        print(f"  liveness: {cls.liveness_note}")
    return 0


SCHEMAS = {
    "results": ("otfuzz.report", "schema/results.schema.json"),
    "compliance": ("otfuzz.report", "schema/compliance.schema.json"),
    "system": ("otfuzz.compliance", "schema/system.schema.json"),
}


def cmd_schema(args: argparse.Namespace) -> int:
    from importlib import resources

    package, path = SCHEMAS[args.name]
    print(resources.files(package).joinpath(path).read_text(), end="")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from otfuzz.demo import run_demo

    return run_demo(args.out or _default_out("demo"), args.duration, args.seed)


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        return int(args.func(args) or 0)
    except OtfuzzError as exc:
        print(f"otfuzz: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("otfuzz: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
