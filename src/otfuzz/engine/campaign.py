"""A fuzzing campaign: configuration, the worker loop, and what ends up in the evidence store.

The campaign owns the schedule (which case id runs next), the pacing (rate cap, concurrency),
the health checks (a probe at a fixed interval and after every suspicious outcome), and the
hand-off of suspicious outcomes to the Investigator. It is protocol-agnostic: everything it
knows about the wire comes through the protocol module's interface.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from otfuzz.engine.cases import TestCase
from otfuzz.engine.executor import (
    PIPELINE_DEPTH,
    QUIET_CEILING,
    ROOM_BESIDE_PARKS,
    CaseOutcome,
    CaseRunner,
    LateReply,
    detect_connection_room,
    detect_pipelining,
    read_identity,
)
from otfuzz.engine.findings import (
    CONDITION_SEPARATOR,
    COSTLY,
    FAULT_TRIGGER,
    SEVERITY_ORDER,
    Condition,
    FindingBook,
    FindingState,
    FrameValues,
    TargetEvidence,
    Trigger,
    blank_values,
    describe,
    fault_trigger,
    finding_key,
    finding_title,
    severity,
    trigger_of,
)
from otfuzz.engine.connection import CEILING as CONNECTION_CEILING
from otfuzz.engine.connection import run_pattern
from otfuzz.engine.feedback import Feedback, Lineage, observation
from otfuzz.engine.generator import CaseGenerator
from otfuzz.engine.rules import RuleMemo
from otfuzz.engine.silence import SilenceBook
from otfuzz.engine.strategies import StrategyOptions
from otfuzz.engine.values import Dictionary
from otfuzz.engine.investigate import ANSWERED, STALL_SHARE, Diagnosis, Investigator, TargetDown
from otfuzz.engine.strategies import GROUPS
from otfuzz.engine.config import RecordedConfig
from otfuzz.errors import OtfuzzError
from otfuzz.monitor.anomaly import AnomalyClass, first_look
from otfuzz.monitor.probe import HealthProbe, ProbeResult
from otfuzz.monitor.process import TargetProcess
from otfuzz.protocols import protocol_for
from otfuzz.protocols.base import Protocol, ReplyKind
from otfuzz.store.evidence import EvidenceStore, now_iso
from otfuzz.transport import connection_oriented
from otfuzz.transport.ratelimit import RateLimiter
from otfuzz.transport.target import Scope, Target, is_loopback, parse_target

HISTORY_LIMIT = 256
AUTO_TIMEOUT_FLOOR = 0.005
"""Shortest automatic reply timeout (s): 20x the probe's p95 latency, never below this."""
AUTO_SILENCE_FLOOR = 0.002
"""Shortest automatic wait (s) for an answer to a request the specification says to reject:
5x the probe's p95 latency, never below this, never above the reply timeout."""
SLOW_FLOOR = 0.05
"""A reply is slow only if it also takes this much longer than the probe's p95 (s): a few
milliseconds more on a busy host is noise, not a defect."""
FINDING_INVESTIGATION_S = 30.0
"""Time one new finding's replay and minimisation may take during the campaign."""
PREFETCH_HELD = 16
"""Cases one prefetch may find held back (each counted) before it leaves the next to the loop."""
CONNECTION_SHARE = 0.05
"""Most of the campaign's time connection-level cases may take (each holds for seconds):
beyond it, a connection case is deferred (counted, not run)."""
LATE_WAIT = 1.0
"""Seconds after it was sent that the first unanswered valid request of a type is waited for,
fuzzing stopped; its connection is watched for the rest of the grace window while fuzzing goes on."""
PIPELINE_TRIAL = 20
"""Pipelined windows after which a target that left most of them partly unanswered is fuzzed one
request at a time."""
KNOWN_SHARE = 0.05
"""Most of the campaign's time (after the first confirmation) that meeting known findings again
may take; beyond it, even the one-in-N matches are held back until the share is below again."""
MAX_STRAYS = 4
"""Anomalies of one provisional key meeting none of its findings' conditions that are
investigated as new findings; later ones are occurrences of the first (bounded cost)."""
INVESTIGATION_SHARE = 0.5
"""Most of the campaign's time that investigating new findings may take; beyond it, new
findings wait for the confirmation phase after fuzzing."""
TRIGGER_CACHE = 8192
SILENT = (ReplyKind.NO_REPLY, ReplyKind.CLOSED, ReplyKind.RESET)

@dataclass
class CampaignConfig(RecordedConfig):
    """Everything that defines a campaign; with the seed it reproduces every case."""

    target: str
    seed: int = 0
    duration: float | None = None
    max_cases: int | None = None
    groups: list[str] = field(default_factory=lambda: list(GROUPS))
    rate: float | None = None
    concurrency: int = 1
    timeout: float | None = None
    silence_timeout: float | None = None
    read_only: bool = False
    scope: list[str] = field(default_factory=list)
    target_cmd: str | None = None
    probe_interval: float = 5.0
    probe_deadline: float = 2.0
    degradation_factor: float = 10.0
    recovery_timeout: float = 10.0
    minimise_budget: int = 48
    confirm: bool = True
    confirm_time: float = 120.0
    slow_factor: float = 10.0
    known_finding_rate: int = 50
    baseline: str | None = None
    hold_time: float = 2.0
    max_connections: int = 100
    pipeline: bool = True  # False (--no-pipeline): a fragile target, one connection and one request at a time
    operator: str | None = None
    organisation: str | None = None
    independence: str | None = None
    # otfuzz run --seeds: the seed file and its content hash, which fix the captured cases
    seeds: str | None = None
    seeds_sha256: str | None = None

    def validate(self) -> None:
        if self.duration is None and self.max_cases is None:
            raise OtfuzzError("give --duration or --cases: a campaign must be bounded")
        for name in ("duration", "rate", "timeout", "silence_timeout", "probe_interval", "probe_deadline", "recovery_timeout",
                     "confirm_time", "slow_factor", "hold_time"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise OtfuzzError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.max_cases is not None and self.max_cases <= 0:
            raise OtfuzzError(f"--cases must be positive, got {self.max_cases}")
        if not 1 <= self.concurrency <= 64:
            raise OtfuzzError(f"--concurrency must be from 1 to 64, got {self.concurrency}")
        if not 1 <= self.max_connections <= CONNECTION_CEILING:
            raise OtfuzzError(f"--max-connections must be from 1 to {CONNECTION_CEILING} (the stress layer's connection "
                              f"ceiling), got {self.max_connections}")
        if self.hold_time > 60:
            raise OtfuzzError(f"--hold-time must be at most 60 s, got {self.hold_time:g}")
        if self.known_finding_rate < 1:
            raise OtfuzzError(f"--known-finding-rate must be 1 or more (1 sends every case), got {self.known_finding_rate}")


def load_seeds(config: CampaignConfig, protocol: Protocol, scheme: str, port: int | None) -> Any:
    """The captured seeds a configuration names (None without --seeds); the seed file must still
    have the hash recorded in the configuration, so replay and resume regenerate the same cases."""
    if not config.seeds:
        return None
    from otfuzz.capture.seeds import captured_seeds

    return captured_seeds(protocol, scheme, port, Path(config.seeds), config.seeds_sha256)


@dataclass
class Snapshot:
    """What the progress display shows."""

    cases: int
    rate: float
    anomalies: dict[str, int]
    health: str
    elapsed: float
    remaining: float | None
    findings: dict[str, int] = field(default_factory=dict)  # severity -> findings so far
    probe_ms: float | None = None  # latency of the last answered health probe


class Campaign:
    """Runs one campaign into one run folder."""

    def __init__(self, config: CampaignConfig, run_dir: Path, store: EvidenceStore, on_progress: Callable[[Snapshot], None] | None = None) -> None:
        config.validate()
        self.config = config
        self.run_dir = run_dir
        self.store = store
        self.on_progress = on_progress
        self.target: Target = parse_target(config.target)
        self.protocol: Protocol = protocol_for(self.target)
        if self.target.port is None:  # pragma: no cover - parse_target always sets it
            raise OtfuzzError("no port")
        self.address = Scope(config.scope).check(self.target)
        self.feedback = Feedback(Dictionary(self.protocol.dictionary()), lookup=self._stored_lineage)
        self.seeds = load_seeds(config, self.protocol, self.target.scheme, self.target.port)
        self.generator = CaseGenerator(self.protocol, config.seed, config.groups, config.read_only, is_loopback(self.address),
                                       self.feedback, StrategyOptions(config.hold_time, config.max_connections), self.seeds)
        if self.protocol.single_association and config.concurrency > 1:
            raise OtfuzzError(f"{self.protocol.name} targets serve one association at a time: use --concurrency 1")
        self.probe = HealthProbe(self.protocol, self.address, self.target.port, config.probe_deadline, config.degradation_factor)
        self.process = TargetProcess(config.target_cmd, run_dir / "target-stderr.log") if config.target_cmd else None
        self.limiter = RateLimiter(config.rate)
        self.stop_requested = False
        self._pattern_stop: asyncio.Event | None = None
        self.fuzzing_s: float | None = None
        self._storage_error: OtfuzzError | None = None
        self.stop_reason = ""
        self.t0 = time.monotonic()
        self.elapsed_before = 0.0
        self.timeout = config.timeout or 0.5
        self.silence_timeout = self.timeout
        self._next_id = 0
        self._inflight: set[int] = set()
        self._results: dict[int, tuple[str, str]] = {}
        self._committed_below = 0  # case ids below it are counted in the store (see _flush)
        self._history: deque[TestCase] = deque(maxlen=HISTORY_LIMIT)
        self._answered: set[int] = set()  # case ids in the history that drew an answer
        self._lock = asyncio.Lock()
        self._running = asyncio.Event()
        self._running.set()
        self._last_probe = 0.0
        self._silent = 0
        self._cases_done = 0
        self._anomaly_counts: Counter[str] = Counter()
        # (case id, class) stored for cases a resume runs again: they must not be recorded twice.
        self._known: set[tuple[int, str]] = set()
        self._health = "unknown"
        self._probe_ms: float | None = None
        self._runners: list[CaseRunner] = []
        self.investigator = Investigator(self.protocol, self.probe, self._new_runner, self.process, config.recovery_timeout,
                                         config.minimise_budget, self._log, grace=config.recovery_timeout)
        self.book = FindingBook(config.known_finding_rate)
        self._values = FrameValues(self.protocol)
        self.slow_threshold = float("inf")
        # A late answer is awaited on a parked connection for the recovery timeout; never for
        # single-association targets, where the next connection displaces the parked one.
        self.grace = 0.0 if self.protocol.single_association else config.recovery_timeout
        self.investigating_s = 0.0  # time spent replaying and minimising new findings while fuzzing
        self._triggers: dict[bytes, Trigger] = {}
        # a case's triggers, from its preparation until its feedback is taken in (asked for up to
        # three times on the way); matched by the case object, since a case cut short keeps its id
        self._case_trigger_memo: dict[int, tuple[TestCase, tuple[list[Trigger | str], list[Trigger | str]]]] = {}
        self.rules = RuleMemo(self.protocol)  # check_request once per frame, for every layer
        # Cases judged whose feedback (corpus, dictionary) is still to be taken in: that work
        # waits until the next request is on the wire, and is always done before the next case
        # is generated or a new finding joins the corpus, so the case stream is the same as when
        # it was done at once.
        self._unobserved: list[tuple[TestCase, CaseOutcome]] = []
        self._matches: dict[int, tuple[int, bool]] = {}
        self._outages: deque[tuple[float, float]] = deque(maxlen=64)  # perf_counter spans of target-level anomalies
        self._silent_types: set[str] = set()  # request types a healthy target left unanswered
        self._answers: deque[float] = deque(maxlen=256)  # perf_counter times of prompt answers (cases and probes)
        self._first_confirmed: float | None = None  # campaign time of the first confirmation
        self._known_s = 0.0  # time spent on occurrences of findings already confirmed
        self._connection_s = 0.0  # time spent in connection-level cases
        self._details: dict[str, str] = {}  # reply detail -> its blanked form (observations)
        self._stored_corpus = len(self.feedback.entries)
        self._stored_observed = len(self.feedback.dictionary.observed)
        # What faulty frames the target always drops: such a drop is no sign of trouble, and (where
        # a second connection may stand beside the first) it is not waited for. Not for fragile
        # targets: there every silence waits in full and repeated silence is probed.
        self.silence = SilenceBook(self.protocol, rules=self.rules) if config.pipeline else None
        # Cases in flight at once on a connection: decided at the start (see detect_pipelining).
        self.pipeline_depth = 1
        self.pipelining_note = "--no-pipeline: one request at a time" if not config.pipeline else "not tested"
        # Quiet parks each worker may hold at once: decided at the start (see _decide_quiet_parks).
        self.quiet_parks = CaseRunner.MAX_QUIET if self.silence is not None else 0
        self.quiet_parks_note = "--no-pipeline: no quiet parks" if self.silence is None else "not tested"
        self._windows = 0
        self._windows_cut = 0
        self._alone: set[int] = set()  # cases sent in a window that went unanswered there: run alone

    # -- helpers ------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t0)

    def _new_runner(self) -> CaseRunner:
        runner = CaseRunner(self.protocol, self.address, self.target.port, self.timeout, self.config.probe_deadline,
                            silence_timeout=self.silence_timeout, grace=self.grace)
        runner.rules = self.rules
        return runner

    def _log(self, kind: str, detail: str) -> None:
        self.store.event(round(self.elapsed(), 3), kind, detail)

    def _record_probe(self, result: ProbeResult) -> None:
        if result.ok and result.reason == "ok":
            self._answers.append(time.perf_counter() - (time.monotonic() - result.at))
        latency = None if result.latency is None else round(result.latency * 1000, 3)
        self.store.probe(round(self.elapsed() - (time.monotonic() - result.at), 3), result.ok, latency, result.reason)
        self._health = "ok" if result.ok and result.reason == "ok" else result.reason
        self._probe_ms = latency if result.ok else None

    def request_stop(self, reason: str = "stopped by operator") -> None:
        if not self.stop_requested:
            self.stop_requested = True
            self.stop_reason = reason
        if self._pattern_stop is not None:
            self._pattern_stop.set()  # a connection pattern holding connections lets them go now

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self, resume: bool) -> None:
        """Bring the target up, learn the probe baseline and write the campaign metadata."""
        if self.process is not None:
            self.process.start()
            if not await self.investigator.wait_ready():
                exit_info = self.process.stop()
                tail = exit_info.stderr_tail.strip().splitlines()[-1:] if exit_info else []
                raise OtfuzzError("--target-cmd did not answer the health probe within 15 s" + (f" ({tail[0]})" if tail else ""))
        first = await self.probe.check()
        if first.reason == "refused":
            raise OtfuzzError(f"target {self.target.url} is unreachable: connection refused at {self.address}:{self.target.port}")
        baseline = await self.probe.learn_baseline()
        if baseline is None:
            raise OtfuzzError(
                f"baseline probe failed: {self.target.url} gave no valid answer to the health probe "
                f"({self.protocol.probe().description}; last result: {first.reason}); {self.protocol.probe_hint}"
            )
        if self.config.timeout is None:
            # Auto timeout: generous against the learned latency, bounded for throughput.
            self.timeout = min(2.0, max(AUTO_TIMEOUT_FLOOR, baseline.p95 * 20))
        self.silence_timeout = min(self.timeout, self.config.silence_timeout or max(AUTO_SILENCE_FLOOR, baseline.p95 * 5))
        self.slow_threshold = max(baseline.p95 * self.config.slow_factor, baseline.p95 + SLOW_FLOOR)
        self.investigator.slow_threshold = self.slow_threshold
        if self.config.pipeline and connection_oriented(self.protocol) and not self.protocol.single_association:
            handled, self.pipelining_note = await detect_pipelining(self.protocol, self.address, self.target.port, self.timeout)
            self.pipeline_depth = PIPELINE_DEPTH if handled else 1
        elif self.config.pipeline:
            self.pipelining_note = "one connection or no connections: one request at a time"
        await self._decide_quiet_parks()
        if resume:
            self._next_id, self.elapsed_before = self.store.progress()
            self._cases_done = sum(sum(r.values()) for r in self.store.counts().values())
            self._anomaly_counts.update(self.store.anomaly_classes())
            for _, case_id, anomaly_class in self.store.anomaly_keys():
                if case_id >= self._next_id:  # recorded, but its case re-runs now (killed before the flush)
                    self._known.add((case_id, anomaly_class))
            self._load_findings()
            self._load_feedback()
            self._log("resume", f"resumed at case {self._next_id}")
        else:
            identity = await read_identity(self.protocol, self.address, self.target.port, self.config.probe_deadline)
            self.store.record_start("fuzz", self.config, {
                "url": self.target.url, "protocol": self.protocol.name, "address": self.address, "port": self.target.port,
                "identity": identity, "command": self.config.target_cmd})
            if self.seeds is not None:
                from otfuzz.capture.seeds import seed_summary

                self.store.set_meta("seeds", seed_summary(self.seeds))
        self.store.set_meta("liveness", {
            "method": self.protocol.liveness_note,
            "probe_request_hex": self.protocol.probe().frame.hex(),
            "baseline_ms": baseline.as_record(),
            "degradation_factor": self.config.degradation_factor,
            "case_timeout_ms": round(self.timeout * 1000, 3),
            "silence_timeout_ms": round(self.silence_timeout * 1000, 3),
            "slow_reply_ms": round(self.slow_threshold * 1000, 3),
            "slow_factor": self.config.slow_factor,
            "late_reply_grace_ms": round(self.grace * 1000, 3),
        })
        self._set_status("running")
        self.t0 = time.monotonic()
        self._last_probe = time.monotonic()
        self._health = "ok"

    def _set_status(self, status: str, reason: str = "") -> None:
        meta = self.store.get_meta("campaign") or {}
        meta["status"] = status
        if self.fuzzing_s is not None:
            meta["fuzzing_s"] = round(self.fuzzing_s, 3)
        meta["ended_at"] = now_iso() if status != "running" else None
        meta["elapsed_s"] = round(self.elapsed(), 3)
        if reason:
            meta["stop_reason"] = reason
        self.store.set_meta("campaign", meta)
        if status != "running":
            self.store.set_meta("search", self.search_summary())

    def search_summary(self) -> dict[str, Any]:
        """What the search reached: pairwise coverage per request type, corpus and dictionary."""
        counts = self.store.counts()
        pairs_cases = sum(n for kind, n in counts.get("pairs", {}).items() if kind not in ("suppressed", "deferred"))
        coverage = self.generator.pairs_coverage(pairs_cases)
        covered = sum(c["covered"] for c in coverage.values())
        total = sum(c["total"] for c in coverage.values())
        return {
            "pairs": {"cases": pairs_cases, "covered": covered, "total": total, "by_request_type": coverage},
            "corpus_size": len(self.feedback.entries),
            "observed_values": len(self.feedback.dictionary.observed),
            "observations": len(self.feedback.seen),
            "connection_s": round(self._connection_s, 3),
            "investigating_s": round(self.investigating_s, 3),
            "silence": self.silence.as_record() if self.silence is not None else None,
            "pipelining": {"depth": self.pipeline_depth, "note": self.pipelining_note, "windows": self._windows,
                           "windows_cut_short": self._windows_cut},
            "quiet_parks": {"per_worker": self.quiet_parks, "note": self.quiet_parks_note},
            # since this session of the campaign started (a resumed run counts afresh)
            "requests_sent": {"case_frames": sum(r.frames_sent for r in self._runners),
                              "sync": sum(r.syncs_sent for r in self._runners)},
        }

    async def run(self, resume: bool = False) -> str:
        """Run to the end; returns the final status (completed, interrupted or failed)."""
        try:
            await self.start(resume)
        except BaseException:
            if self.process is not None:
                self.process.stop()
            raise
        status = "completed"
        # Everything built so far (modules, templates, the host process's own objects) lives as
        # long as the campaign: frozen, a full collection no longer walks it. In a test process
        # such a collection took tens of milliseconds and landed inside a reply's wait: cpppo's
        # first answer was judged a slow reply (64-72 ms against a 55 ms threshold), never reproduced.
        gc.freeze()
        flusher = asyncio.create_task(self._flush_loop())
        workers = [asyncio.create_task(self._worker()) for _ in range(self.config.concurrency)]
        try:
            done = await asyncio.gather(*workers, return_exceptions=True)
            for result in done:
                if isinstance(result, TargetDown):
                    status, self.stop_reason = "failed", str(result)
                elif isinstance(result, OtfuzzError):  # the evidence store could not be written
                    status, self.stop_reason = "failed", str(result)
                    self._storage_error = self._storage_error or result
                elif isinstance(result, BaseException):
                    status, self.stop_reason = "failed", f"internal error: {result!r}"
                    raise result
            if self._storage_error is not None:
                status = "failed"
            if self.stop_requested and status != "failed":
                status = "interrupted"
            self.fuzzing_s = self.elapsed()
            if status == "completed" and self.config.confirm:
                for runner in self._runners:
                    runner.drop()
                self._flush()
                try:
                    await self.confirm_pending()
                except TargetDown as exc:
                    status, self.stop_reason = "failed", str(exc)
                if self.stop_requested and status != "failed":
                    status = "interrupted"
        except asyncio.CancelledError:
            status, self.stop_reason = "interrupted", self.stop_reason or "cancelled"
        finally:
            gc.unfreeze()  # (a host process that runs more, the tests or an agent, collects them again)
            flusher.cancel()
            for runner in self._runners:
                runner.drop()
            self.probe.close()
            if self.process is not None:
                await asyncio.to_thread(self.process.stop)
            if self._storage_error is None:
                try:
                    self._flush()
                    self._set_status(status, self.stop_reason or ("reached the configured bound" if status == "completed" else ""))
                except OtfuzzError as exc:
                    self._storage_error = exc
        if self._storage_error is not None:
            # What was committed before the failure stays, and --resume continues from it.
            raise OtfuzzError(f"{self._storage_error}; results recorded so far are kept: free space, then "
                              f"otfuzz run --resume {self.run_dir}")
        return status

    def _done(self) -> bool:
        if self.stop_requested:
            return True
        if self.config.max_cases is not None and self._next_id >= self.config.max_cases:
            return True
        if self.config.duration is not None and self.elapsed() >= self.config.duration:
            return True
        return False

    def _take_id(self) -> int | None:
        """Reserve the next case id (None when the campaign is over)."""
        if self._done():
            return None
        case_id = self._next_id
        self._next_id += 1
        self._inflight.add(case_id)
        return case_id

    async def _decide_quiet_parks(self) -> None:
        """How many quiet parks (see otfuzz.engine.silence) each worker may hold at once: more
        than `CaseRunner.MAX_QUIET` only where the target served every connection of a test at the
        start, fewer where it served too few for them beside the case's own, a spare and a parked
        one. Not tested where parks cannot be had, where the connection budget (--max-connections)
        or a rate cap (--rate) says go gently, or where no case breaks a rule (the connection
        group alone)."""
        wanted = QUIET_CEILING + ROOM_BESIDE_PARKS
        if self.silence is None:
            return
        oriented = connection_oriented(self.protocol)
        if not oriented or self.protocol.single_association:
            self.quiet_parks = 0  # (the runner never parks there: see CaseRunner._exchange_all)
            self.quiet_parks_note = ("one association at a time" if oriented else "no connections") + ": no quiet parks"
            return
        if self.config.rate is not None or self.config.max_connections < wanted or self.config.groups == ["connection"]:
            self.quiet_parks_note = (f"not tested (--rate, --max-connections below {wanted}, or the connection group alone): "
                                     f"{self.quiet_parks} at once")
            return
        served, note = await detect_connection_room(self.protocol, self.address, self.target.port, self.timeout, wanted)
        if served == wanted:
            self.quiet_parks = max(CaseRunner.MAX_QUIET, QUIET_CEILING // self.config.concurrency)
        else:
            # (one short of what it served: a closed connection may still count there for a moment)
            self.quiet_parks = min(CaseRunner.MAX_QUIET, max(0, served - ROOM_BESIDE_PARKS - 1))
            self._log("connections", note)
            if not await self.investigator.wait_ready():  # (a target may stall while it has too many)
                raise OtfuzzError(f"target {self.target.url} stopped answering the health probe after the connection "
                                  f"test at the start ({note}); --max-connections below {wanted} skips that test")
        self.quiet_parks_note = f"{note}: {self.quiet_parks} quiet parks at once per worker"

    async def _worker(self) -> None:
        runner = self._new_runner()
        runner.silence = self.silence  # (replays in investigations always wait in full)
        runner.max_quiet = self.quiet_parks
        # a fresh connection ready for the next case that needs one, where a second may stand beside it
        runner.spares = self.silence is not None and connection_oriented(self.protocol) and not self.protocol.single_association
        # a cheap valid request right behind a frame that may be dropped: its answer ends the wait
        runner.sync = self.protocol.sync_request() if self.silence is not None else None
        self._runners.append(runner)
        ahead: deque[TestCase] = deque()  # generated, ids reserved, in id order, none held back

        def generate(limit: int | None) -> TestCase | None:
            """The next case to send, ids reserved in order, with its rules and triggers; cases
            held back on the way are counted (None: the campaign is over, or `limit` were held)."""
            held = 0
            while limit is None or held < limit:
                case_id = self._take_id()
                if case_id is None:
                    return None
                case = self._prepared(self.generator.case(case_id))
                if not self._held(case):
                    return case
                held += 1
            return None

        def prefetch() -> None:
            # While the target works on this case: the feedback of the one judged before it, then
            # the next case to send, so that what decides how it is sent, and the cases held back
            # on the way, cost nothing on the wire's path.
            self._take_in_feedback()
            case = generate(PREFETCH_HELD)
            if case is not None:
                ahead.append(case)

        def next_case() -> TestCase | None:
            if ahead:
                return ahead.popleft()
            self._take_in_feedback()
            return generate(None)

        try:
            while True:
                await self._running.wait()
                if self.stop_requested:
                    return  # a prefetched case stays reserved: the resume point keeps it
                case = next_case()
                if case is None:
                    return
                if case.pattern is not None:
                    if not await self._pattern_case(case, runner):
                        return
                    continue
                await self.limiter.acquire()
                if self.pipeline_depth > 1 and self._pipelinable(case, runner, []):
                    window = [case]
                    while len(window) < self.pipeline_depth and not self.stop_requested:
                        more = next_case()
                        if more is None:
                            break
                        if more.pattern is not None or not self._pipelinable(more, runner, window):
                            ahead.appendleft(more)
                            break
                        await self.limiter.acquire()
                        window.append(more)
                    if len(window) > 1:
                        outcomes = await runner.run_window(window, prefetch)
                        self._note_window(len(outcomes) == len(window))
                        self._history.extend(window)  # all were sent before any is judged
                        for each, outcome in zip(window, outcomes):
                            if not await self._judge(each, outcome, runner, windowed=True):
                                return
                        for each in reversed(window[len(outcomes):]):
                            self._alone.add(each.case_id)  # not answered in the window: sent again, alone
                            ahead.appendleft(each)
                        continue
                outcome = await runner.run(case, prefetch)
                if not await self._judge(case, outcome, runner):
                    return
        finally:
            self._take_in_feedback()  # (what the flush stores and a resume reads)

    def _held(self, case: TestCase) -> bool:
        """A confirmed finding's trigger: held back (counted, not sent) but one in N."""
        if not self.book.suppressing:
            return False
        known, held = self.book.match(*self._case_triggers(case), may_send=self._known_within_share(),
                                      meets=lambda condition: self._values.meets(case.frames, condition))
        if known is not None:
            self._matches[case.case_id] = (known.id, held)
        if held:
            self._case_trigger_memo.pop(case.case_id, None)  # (never judged, so never observed)
            self._results[case.case_id] = (case.group, "suppressed")
            self._cases_done += 1
            self._inflight.discard(case.case_id)
        return held

    async def _pattern_case(self, case: TestCase, runner: CaseRunner) -> bool:
        """Run a connection case within its share of the time (False: the worker stops)."""
        share = 1.0 if self.config.groups == ["connection"] else CONNECTION_SHARE  # asked for alone: no budget
        if self._connection_s > share * max(self.elapsed(), 20.0):
            # connection cases hold for seconds: beyond their share of the time, deferred
            self._results[case.case_id] = (case.group, "deferred")
            self._cases_done += 1
            self._inflight.discard(case.case_id)
            return True
        async with self._lock:
            if self.stop_requested:
                return False
            self._running.clear()
            try:
                await self._connection_case(case, runner)
            except TargetDown:
                self.stop_requested = True
                raise
            finally:
                self._running.set()
        if case.case_id not in self._results:
            return False  # cut short by a stop: stays reserved, so --resume runs it again
        self._cases_done += 1
        self._inflight.discard(case.case_id)
        return True

    def _pipelinable(self, case: TestCase, runner: CaseRunner, window: list[TestCase]) -> bool:
        return (case.case_id not in self._alone and len(case.frames) == 1
                and runner.can_pipeline(case.frames[0], [each.frames[0] for each in window]))

    def _note_window(self, complete: bool) -> None:
        """Count pipelined windows; a target that leaves most of them incomplete is fuzzed one
        request at a time from then on (each incomplete window costs a resend)."""
        self._windows += 1
        self._windows_cut += not complete
        if self._windows >= PIPELINE_TRIAL and self._windows_cut * 2 > self._windows and self.pipeline_depth > 1:
            self.pipeline_depth = 1
            self.pipelining_note = (f"switched off after {self._windows_cut} of {self._windows} pipelined windows "
                                    "went partly unanswered")
            self._log("pipelining", self.pipelining_note)

    async def _judge(self, case: TestCase, outcome: CaseOutcome, runner: CaseRunner, windowed: bool = False) -> bool:
        """Record one case's outcome and probe the target when it looks suspicious (False: the
        worker stops). `windowed`: it went out in a pipelined window, already in the history."""
        case_id = case.case_id
        self._alone.discard(case_id)
        self._unobserved.append((case, outcome))
        self._results[case_id] = (case.group, outcome.kind.value)
        if outcome.kind in ANSWERED and outcome.latency <= self.slow_threshold:
            self._answers.append(time.perf_counter())
        if windowed:
            runner.history.append(case)
        else:
            self._history.append(case)
        if outcome.kind not in SILENT:
            self._answered.add(case_id)
        self._cases_done += 1
        if outcome.kind not in (ReplyKind.NO_REPLY, ReplyKind.CLOSED):
            self._silent = 0
        elif not (outcome.expected_silence or outcome.synced):  # a drop the target always makes, or one it
            self._silent += 1                                     # answered the next request after: it serves
        slow = outcome.kind in ANSWERED and outcome.latency > self.slow_threshold
        # a valid request left unanswered while the one right behind it was answered needs no probe:
        # that answer shows the target serving (the case's own silence is recorded as such)
        suspicious, candidate = first_look(outcome.kind, outcome.request_valid and not outcome.synced, self._silent, slow=slow)
        if self.process is not None and self.process.poll() is not None:
            suspicious = True
        late = runner.late_replies() if runner.has_late else []
        due = time.monotonic() - self._last_probe >= self.config.probe_interval
        if suspicious or due or late:
            async with self._lock:
                if self.stop_requested:
                    return False  # another worker found the target down while this one waited
                self._running.clear()
                try:
                    await self._check_health(case, outcome, candidate if suspicious else None, runner)
                    for reply in late:
                        await (self._quiet_reply if reply.quiet else self._late_reply)(reply, runner)
                except TargetDown:
                    self.stop_requested = True  # the other workers stop; the status says failed, not interrupted
                    raise
                finally:
                    self._running.set()
        self._inflight.discard(case_id)
        return True

    def _prepared(self, case: TestCase) -> TestCase:
        """Check a case's frames and read its triggers ahead (both remembered per frame)."""
        if case.pattern is None:
            for frame in case.frames:
                self.rules(frame)
            self._case_triggers(case)
        return case

    def _take_in_feedback(self) -> None:
        """The feedback of every case judged since the last call, in the order judged."""
        while self._unobserved:
            self._observe(*self._unobserved.pop(0))

    def _observe(self, case: TestCase, outcome: CaseOutcome) -> None:
        """Reply-guided feedback: a case whose observation is new joins the corpus; a normal
        reply's numbers join the dictionary."""
        if outcome.reply is not None and outcome.kind is ReplyKind.NORMAL:
            values = self.protocol.reply_values(case.frames[outcome.frame_index], outcome.reply)
            if values:
                self.feedback.dictionary.observe(values)
        detail = self._details.get(outcome.detail)
        if detail is None:
            if len(self._details) > TRIGGER_CACHE:
                self._details.clear()
            detail = self._details[outcome.detail] = blank_values(outcome.detail)[:60]
        last = self._case_triggers(case)[1]
        self._case_trigger_memo.pop(case.case_id, None)  # (its last use)
        request_type = last[-1].request_type if last and isinstance(last[-1], Trigger) else case.template
        key = observation(request_type, outcome.kind.value, detail, len(outcome.reply or b""), outcome.latency)
        if self.feedback.novel(key):
            self.feedback.add(case.case_id, case.frames, key)

    async def _connection_case(self, case: TestCase, runner: CaseRunner) -> None:
        """Run a connection pattern with the probe half-way through, then judge the target."""
        started = time.monotonic()
        for each in self._runners:
            each.drop()  # the pattern's connections are the only ones now
        stop = self._pattern_stop = asyncio.Event()
        if self.stop_requested:
            return
        try:
            result = await run_pattern(self.protocol, self.address, self.target.port, case.pattern, case.frames[0],
                                       self.probe, stop, self.config.max_connections)
        finally:
            self._pattern_stop = None
        if self.stop_requested:
            return  # cut short: not judged, and not counted, so --resume runs it again
        self._connection_s += time.monotonic() - started
        during = result.during
        if during is not None:
            self._record_probe(during)
        candidate: AnomalyClass | None = None
        if during is not None and not during.ok:
            candidate = AnomalyClass.HANG  # unanswered or refused while the pattern ran; diagnosed again after
        elif during is not None and during.reason == "slow":
            # answered at last, but only after half the deadline: it stalled (hang), not slowed
            stalled = (during.latency or 0.0) >= STALL_SHARE * self.probe.deadline
            candidate = AnomalyClass.HANG if stalled else AnomalyClass.DEGRADATION
        detail = f"{case.pattern.describe()}: {result.detail}; probe during it: {during.reason if during else 'not run'}"
        kind = ReplyKind.NORMAL if candidate is None else ReplyKind.NO_REPLY
        self._results[case.case_id] = (case.group, kind.value)
        outcome = CaseOutcome(kind, detail, None, during.latency or 0.0 if during else 0.0, 0)
        self._history.append(case)
        await self._check_health(case, outcome, candidate, runner)

    def _stored_lineage(self, case_id: int) -> Lineage | None:
        found = self.store.lineage_of(case_id)
        return None if found is None else Lineage(*found)

    def _load_feedback(self) -> None:
        """Rebuild the corpus and the dictionary's reported values on --resume."""
        for entry_id, case_id, frames, reason, _ in self.store.corpus():
            entry = self.feedback.add(case_id, frames, reason)
            if entry is not None and entry.id != entry_id:  # pragma: no cover - ids are dense by construction
                raise OtfuzzError(f"corpus of {self.run_dir} is inconsistent at entry {entry_id}")
            self.feedback.seen.add(reason)
        self.feedback.dictionary.observe(self.store.observed_values())
        self._stored_corpus = len(self.feedback.entries)
        self._stored_observed = len(self.feedback.dictionary.observed)
        self.feedback.horizon = self._next_id - 1

    def _known_within_share(self) -> bool:
        """Known findings may take KNOWN_SHARE of the time since the first was confirmed: a crash
        that costs a restart is then met again at most that often, however fast the rest goes."""
        if self._first_confirmed is None:
            return True
        return self._known_s <= KNOWN_SHARE * max(1.0, self.elapsed() - self._first_confirmed)

    def _case_triggers(self, case: TestCase) -> tuple[list[Trigger | str], list[Trigger | str]]:
        """(the triggers of every frame of a case and its structural fault, those of its last
        frame and fault): cached by frame, since boundary and structural cases repeat. A
        connection case's trigger is its pattern's kind: every pattern sends the same read."""
        if case.pattern is not None:
            pattern: list[Trigger | str] = [Trigger(case.template, ())]
            return pattern, pattern
        memo = self._case_trigger_memo.get(case.case_id)
        if memo is not None and memo[0] is case:
            return memo[1]
        if len(self._case_trigger_memo) >= TRIGGER_CACHE:  # (cases prepared and never judged: a stop)
            self._case_trigger_memo.clear()
        fault: list[Trigger | str] = [fault_trigger(case.fault)] if case.fault else []
        every: list[Trigger | str] = list(fault)
        last: list[Trigger | str] = list(fault)
        for n, frame in enumerate(case.frames):
            for part in self._parts(frame):
                trigger = self._triggers.get(part)
                if trigger is None:
                    if len(self._triggers) >= TRIGGER_CACHE:
                        self._triggers.clear()
                    trigger = self._triggers[part] = trigger_of(self.protocol, part, self.rules)
                every.append(trigger)
                if n == len(case.frames) - 1 and part is frame:
                    last.append(trigger)
        self._case_trigger_memo[case.case_id] = (case, (every, last))
        return every, last

    def _parts(self, frame: bytes, limit: int = 8) -> list[bytes]:
        """A frame and the frames hidden after its first by the protocol's own framing: a short
        length field makes the target read the rest as further requests."""
        parts = [frame]
        rest = frame
        for _ in range(limit):
            size = self.protocol.frame_length(rest)
            if size is None or not 0 < size < len(rest):
                break
            rest = rest[size:]
            parts.append(rest)
        return parts

    async def _await_late_answer(self, case: TestCase, outcome: CaseOutcome, runner: CaseRunner) -> None:
        """A valid request went unanswered while the target is healthy: wait until its answer is
        overdue by the slow-reply threshold and probe once (a prompt probe answer while this
        request is still unanswered shows the target serving others), then wait on, fuzzing
        stopped, up to `LATE_WAIT` after it was sent; once per request type. The request's
        connection then stays parked for the rest of its grace window while fuzzing goes on, and
        an answer that still comes is judged as a late reply. Waiting out the whole window here
        cost asyncua, which never answers some valid requests, most of a short campaign; not
        waiting at all left a 300 ms reply to be caught only between restarts of a target that
        crashes every hundred cases."""
        until = runner.parked_until(case.case_id) if outcome.kind is ReplyKind.NO_REPLY else None
        if until is None:
            return
        request_type = self._case_triggers(case)[1][-1]
        kind = request_type.request_type if isinstance(request_type, Trigger) else str(request_type)
        if kind in self._silent_types:
            return
        overdue = min(until, time.perf_counter() + max(0.0, self.slow_threshold - outcome.latency) + 0.001)
        late = await runner.await_late(case.case_id, overdue)
        if late is None and time.perf_counter() < until:
            self._record_probe(await self.probe.check())
            late = await runner.await_late(case.case_id, min(until, until - self.grace + LATE_WAIT))  # (until: sent + grace)
        if late is None:
            self._silent_types.add(kind)
            self._log("silent", f"{kind}: a valid request was not answered while the target answered the probe; "
                                f"its answer is awaited for {self.grace:g} s while fuzzing goes on")
            return
        await self._late_reply(late, runner)

    async def _late_reply(self, late: LateReply, runner: CaseRunner) -> None:
        """A valid request answered after the case timeout: a slow reply if the probe is healthy."""
        if late.case is None or late.latency <= self.slow_threshold or late.kind not in ANSWERED:
            return  # late only against our tight timeout, or not an answer: nothing to report
        if any(start < late.sent_at + late.latency and end > late.sent_at for start, end in self._outages):
            return  # the target was down or hung while this answer waited: it says nothing of the request
        # Served others while it was overdue, and not only in the burst that ends a stall: a target
        # that blocked as a whole answers everything queued at once when it wakes, this one too.
        overdue, burst = late.sent_at + self.slow_threshold, late.sent_at + late.latency - self.slow_threshold
        if not any(overdue < t < burst for t in self._answers):
            return  # nothing else was answered while it was overdue: the whole target may have stalled
        # the frame answered late is the case's last: the steps after it were never sent
        case = late.case if late.index >= len(late.case.frames) - 1 else replace(late.case, frames=late.case.frames[: late.index + 1])
        outcome = CaseOutcome(late.kind, f"answered after {late.latency * 1000:.0f} ms: {late.detail}", late.reply,
                              late.latency, late.index)
        await self._check_health(case, outcome, AnomalyClass.SLOW_REPLY, runner)

    async def _quiet_reply(self, late: LateReply, runner: CaseRunner) -> None:
        """An answer, read on its parked connection, to a frame of a kind the target had always
        dropped: judged as if it had come within the silence timeout, against its own case."""
        if late.case is None:
            return
        kind, detail = late.kind, late.detail
        if kind is ReplyKind.NORMAL and late.index == len(late.case.frames) - 1:
            problems = tuple(self.protocol.check_request(late.frame))
            if problems:
                kind, detail = ReplyKind.SPEC_VIOLATION, "answered normally: " + "; ".join(problems)
        self._recount_answered(late.case, kind)
        _, candidate = first_look(kind, False, 0)
        if candidate is None:
            return  # an exception reply or the like: a rejection, nothing to report
        case = late.case if late.index >= len(late.case.frames) - 1 else replace(late.case, frames=late.case.frames[: late.index + 1])
        outcome = CaseOutcome(kind, detail, late.reply, late.latency, late.index)
        await self._check_health(case, outcome, candidate, runner, own=True)

    def _recount_answered(self, case: TestCase, kind: ReplyKind) -> None:
        """A quietly parked case was answered after all: it is counted by what it drew, not as
        no reply (the counts by reply kind would say otherwise of a case that got an answer)."""
        no_reply = (case.group, ReplyKind.NO_REPLY.value)
        if self._results.get(case.case_id) == no_reply:
            self._results[case.case_id] = (case.group, kind.value)
        elif case.case_id not in self._results and case.case_id < self._committed_below:
            self.store.count(*no_reply, -1)  # committed already: the correction goes in the next flush
            self.store.count(case.group, kind.value)
        if kind not in SILENT:
            self._answered.add(case.case_id)  # not a suspect of a target that stopped answering

    async def _check_health(self, case: TestCase, outcome: CaseOutcome, candidate: AnomalyClass | None,
                            runner: CaseRunner, own: bool = False) -> None:
        self._take_in_feedback()  # a new finding joins the corpus after every case judged before it
        started, perf_started = time.monotonic(), time.perf_counter()
        known = self._known_reply_finding(case, outcome, candidate)
        if known is not None:
            # Another occurrence of a confirmed reply-level finding: the reply itself shows the
            # target serving, and a probe after it would say nothing a probe after the first
            # occurrence did not. The periodic probe goes on; the cases since the last one stay
            # suspects of a target-level anomaly, so one that follows is still blamed right.
            diagnosis = Diagnosis(candidate)
        else:
            diagnosis = await self.investigator.diagnose(candidate)
            for result in diagnosis.probes:
                self._record_probe(result)
            self._last_probe = time.monotonic()
        if diagnosis.anomaly is None:
            self._history.clear()
            self._answered.clear()
            self._silent = 0
            await self._await_late_answer(case, outcome, runner)
            return
        anomaly = diagnosis.anomaly
        served = known is not None or bool(diagnosis.probes and diagnosis.probes[-1].ok)
        if anomaly.target_level or not served:
            self._drop_connections(anomaly)
        # Target-level: everything since the last healthy probe; reply-level: what this connection
        # carried, since a reply can depend on the session state earlier cases left behind; a
        # late answer: its own case (its connection carried nothing after it).
        if anomaly.target_level:
            history = list(self._history)
        elif anomaly is AnomalyClass.SLOW_REPLY or own:
            history = [case]  # answered on a parked connection that carried nothing after it
        else:
            history = list(runner.history)
        if not history or history[-1].case_id != case.case_id:
            history.append(case)
        if outcome.frame_index < len(case.frames) - 1:
            # A prefix frame drew the reply: that frame, not the rest of the case, is the trigger.
            case = replace(case, frames=case.frames[: outcome.frame_index + 1])
            history[-1] = case
        if (case.case_id, anomaly.value) in self._known:
            self._log("anomaly-repeat", f"{anomaly.value} at case {case.case_id} is already recorded (resumed run)")
            if not await self.investigator.restore():
                raise TargetDown(f"target stopped answering after case {case.case_id} ({anomaly.value}); restart it and "
                                 f"continue with: otfuzz run --resume {self.run_dir}")
            self._history.clear()
            self._answered.clear()
            return
        # The case a target-level anomaly is noticed after is often not its cause: a server that
        # stalls on a malformed frame is found out by the valid request after it. The suspect is
        # the last case since the last healthy probe that broke a rule (else the last case).
        if case.pattern is not None:  # the pattern itself is the input: no frame to blame
            suspect, trigger = case, Trigger(case.template, ())
        else:
            suspect = self._suspect(history) if anomaly.target_level else case
            trigger = trigger_of(self.protocol, suspect.frames[-1])
        evidence = diagnosis.evidence
        key = finding_key(self.protocol.name, anomaly.value, trigger, evidence, outcome.detail)
        record: dict[str, Any] = {
            "case_id": case.case_id,
            "group": case.group,
            "class": anomaly.value,
            "detected_at": now_iso(),
            "elapsed_s": round(self.elapsed(), 3),
            "description": case.description,
            "template": case.template,
            "frames_hex": [f.hex() for f in case.frames],
            "reply_hex": outcome.reply.hex() if outcome.reply is not None else None,
            "reply_kind": outcome.kind.value,
            "reply_detail": outcome.detail,
            "request_problems": list(outcome.request_problems),
            "timings": {"latency_ms": round(outcome.latency * 1000, 3), "case_timeout_ms": round(self.timeout * 1000, 3),
                        "probe_slow_threshold_ms": round(self.probe.slow_threshold * 1000, 3),
                        "slow_reply_ms": round(self.slow_threshold * 1000, 3)},
            "probes": [p.as_record(self.t0 - self.elapsed_before) for p in diagnosis.probes],
            **({"probe": f"none: an occurrence of confirmed finding {known.id}, answered; the periodic probe goes on"}
               if known is not None else {}),
            "reproducible": False,
            "confirmation": {"status": "pending" if self.config.confirm else "skipped"},
            "reproducer": {"case_ids": [c.case_id for c in history], "frames_hex": [f.hex() for c in history for f in c.frames],
                           "minimised": False},
            "target_exit": diagnosis.exit.as_record() if diagnosis.exit else None,
            "target_evidence": evidence.as_record() if evidence else None,
            "history_case_ids": [c.case_id for c in history],
            "trigger_frames": len(case.frames),
            "trigger": trigger.text,
            "suspect_case_id": suspect.case_id,
            "pattern": case.pattern.describe() if case.pattern is not None else None,
            "suspect_frames_hex": [f.hex() for f in suspect.frames],
            "fault": suspect.fault,
            "key": key,
        }
        state = self.book.lookup(key)
        if state is None and anomaly.target_level and suspect.pattern is None:
            state = self._conditioned(key, [f for c in history for f in c.frames])
        new = state is None
        if state is None:
            state = self._new_finding(key, anomaly, trigger.text, record)
            if suspect.pattern is None:
                self.feedback.add(suspect.case_id, suspect.frames, f"finding {state.id}")
        elif not anomaly.target_level:
            # A reply answers its own request: the case is the trigger, no replay needed to know it.
            self._learn_trigger(state, trigger.text, suspect.fault, trigger.request_type)
        if known is not None:
            record["handling_s"] = round(time.monotonic() - started, 3)
            self._known_s += time.monotonic() - started
        anomaly_id = self.store.add_anomaly(case.case_id, case.group, anomaly.value, record, state.id)
        self._anomaly_counts[anomaly.value] += 1
        self._log("anomaly", f"#{anomaly_id} {anomaly.value} at case {case.case_id} (finding {state.id}): {case.description}")
        if known is not None:
            return  # (nothing probed: the cases since the last probe are not cleared of suspicion)
        if anomaly.target_level or not served:
            if not await self.investigator.restore():
                raise TargetDown(
                    f"target stopped answering after case {case.case_id} ({anomaly.value}) and did not recover within "
                    f"{self.config.recovery_timeout:g} s; restart it and continue with: otfuzz run --resume {self.run_dir}"
                )
        record["handling_s"] = round(time.monotonic() - started, 3)
        if state.confirmed:
            self._known_s += time.monotonic() - started
        self.store.update_anomaly(anomaly_id, record)
        self._history.clear()
        self._answered.clear()
        self._silent = 0
        if (new or not (state.tried or state.confirmed)) and self.config.confirm and self._may_investigate():
            # a finding met while investigation had used its share is tried at its next occurrence,
            # not left unconfirmed (and so never held back) until the campaign ends
            self._drop_connections(anomaly)
            await self._investigate(state, anomaly_id, time.monotonic() + FINDING_INVESTIGATION_S)
        elif (anomaly.target_level and state.confirmed and evidence is not None and evidence.strong
              and trigger.text not in state.triggers and self.config.confirm and self._may_investigate()):
            spent = await self._verify_trigger(state, suspect, trigger.text, trigger.request_type, evidence)
            self._known_s += spent
            record["investigation_s"] = round(spent, 3)
            self.store.update_anomaly(anomaly_id, record)
        if anomaly.target_level or new:
            # Down, restarted or replaying: answers that waited through this say nothing of their request.
            self._outages.append((perf_started, time.perf_counter()))
        self._last_probe = time.monotonic()
        self._health = "ok"

    def _known_reply_finding(self, case: TestCase, outcome: CaseOutcome, candidate: AnomalyClass | None) -> FindingState | None:
        """The confirmed finding a reply-level anomaly is one more occurrence of, when no probe
        is needed to say so: the target answered, the periodic probe is not yet due, and no
        process otfuzz watches has exited. Keyed as the probed path keys it (no target evidence)."""
        if (candidate is None or candidate.target_level or candidate is AnomalyClass.SLOW_REPLY or outcome.reply is None
                or case.pattern is not None or (self.process is not None and self.process.poll() is not None)
                or time.monotonic() - self._last_probe >= self.config.probe_interval):
            return None
        frame = case.frames[min(outcome.frame_index, len(case.frames) - 1)]
        key = finding_key(self.protocol.name, candidate.value, trigger_of(self.protocol, frame, self.rules), None, outcome.detail)
        state = self.book.lookup(key)
        return state if state is not None and state.confirmed else None

    def _drop_connections(self, anomaly: AnomalyClass) -> None:
        """Close the workers' connections before a restore or a replay: their state is not what
        their history says after either. After a target-level anomaly a late answer means
        nothing; after a reply-level one, parked connections still wait for theirs. (A reply-level
        occurrence of a known finding, with the target serving, keeps them: the reply was framed
        in step, and nothing but the probe went to the target since.)"""
        for each in self._runners:
            each.drop() if anomaly.target_level else each.drop_current()

    # -- findings -------------------------------------------------------------------------------

    def _conditioned(self, key: str, frames: list[bytes]) -> FindingState | None:
        """The finding a provisional key stands for when confirmed findings keyed it further by a
        condition: the one whose condition the frames meet. Meeting none, the anomaly may be
        another defect on the same valid request: up to MAX_STRAYS such are investigated as new
        findings (merged back if their minimised reproducer gives a known key); beyond that
        they are occurrences of the first."""
        candidates = self.book.conditioned(key)
        if not candidates:
            return None
        for state in candidates:
            if state.condition is not None and self._values.meets(frames, state.condition):
                return state
        return None if self.book.stray(key) <= MAX_STRAYS else candidates[0]

    def _new_finding(self, key: str, anomaly: AnomalyClass, trigger: str, record: dict[str, Any]) -> FindingState:
        frames = [bytes.fromhex(h) for h in record["suspect_frames_hex"]]
        evidence = TargetEvidence.from_record(record["target_evidence"])
        finding = {
            "key": key, "aliases": [key], "triggers": [trigger],
            **self._describe(anomaly.value, frames, evidence, record),
            "confirmation": {"status": "pending" if self.config.confirm else "not tried"},
            "reproducer": {"case_ids": [record["suspect_case_id"]], "frames_hex": record["suspect_frames_hex"], "minimised": False},
            "target_evidence": record["target_evidence"],
            "reply_detail": record["reply_detail"],
            "latency_ms": record["timings"]["latency_ms"],
            "merged": [],
            "first_anomaly_id": None,
        }
        fid = self.store.add_finding(key, anomaly.value, finding)
        state = FindingState(fid, key, anomaly.value, aliases={key}, triggers={trigger})
        self.book.add(state)
        return state

    def _describe(self, anomaly_class: str, frames: list[bytes], evidence: TargetEvidence | None,
                  record: dict[str, Any]) -> dict[str, Any]:
        described = describe(self.protocol, anomaly_class, frames, evidence, record["reply_detail"],
                             record["timings"]["latency_ms"])
        if record.get("pattern"):
            kind = record["template"]
            how = finding_title(anomaly_class, kind, [], evidence).split(" on a ")[0]
            described.update({"request_type": kind, "violated_rules": [], "problems": [], "request": record["pattern"],
                              "title": f"{how} during {record['pattern']}", "behaviour": f"{anomaly_class}: {kind}"})
        return described

    def _save_finding_index(self, state: FindingState) -> None:
        finding = self.store.finding(state.id)
        if finding is not None:
            finding.update(self._index_of(state))
            self.store.update_finding(state.id, finding)

    def _suspect(self, history: list[TestCase]) -> TestCase:
        """The case a target that stopped answering most likely choked on: the first case of the
        trailing run that drew no answer, preferring one that broke a rule; else the last case."""
        run: list[TestCase] = []
        for case in reversed(history):
            if case.case_id in self._answered:
                break
            run.append(case)
        for case in reversed(run):
            if case.fault or trigger_of(self.protocol, case.frames[-1]).rules:
                return case
        return run[-1] if run else history[-1]

    def _learn_trigger(self, state: FindingState, trigger: str, fault: str, request_type: str) -> None:
        """An input known to reach the finding: suppression holds it back once confirmed."""
        changed = trigger not in state.triggers
        self.book.add_trigger(state, trigger)
        if fault:
            changed = self.book.note_fault(state, fault, request_type) or changed
        if changed:
            self._save_finding_index(state)

    async def _verify_trigger(self, state: FindingState, suspect: TestCase, trigger: str, request_type: str,
                              evidence: TargetEvidence) -> float:
        """A confirmed finding, reached through a new input by the target's own evidence: replay
        the suspect alone once, so that suppression learns only inputs that really reach it."""
        started = time.monotonic()
        try:
            result = await self.investigator.confirm_and_minimise(AnomalyClass(state.anomaly_class), [suspect], minimise=False,
                                                                  evidence=evidence.report,
                                                                  deadline=time.monotonic() + FINDING_INVESTIGATION_S)
        finally:
            self.investigating_s += time.monotonic() - started
        if result["reproducible"]:
            self._learn_trigger(state, trigger, suspect.fault, request_type)
        return time.monotonic() - started

    @staticmethod
    def _index_of(state: FindingState) -> dict[str, Any]:
        """What the book knows of a finding, as it is stored for --resume."""
        return {"key": state.key, "aliases": sorted(state.aliases), "triggers": sorted(state.triggers),
                "faults": {fault: sorted(types) for fault, types in sorted(state.faults.items())},
                "condition": state.condition.as_record() if state.condition else None}

    def _may_investigate(self) -> bool:
        """New findings are replayed and minimised at once, unless that has taken most of the run."""
        return self.investigating_s <= INVESTIGATION_SHARE * max(self.elapsed(), 10.0)

    async def _investigate(self, state: FindingState, anomaly_id: int, deadline: float) -> None:
        """Confirm a new finding by replay and minimise its reproducer, then key it by what the
        minimised reproducer does; a finding whose key another already has is merged into it."""
        record = self.store.anomaly(anomaly_id)
        finding = self.store.finding(state.id)
        if record is None or finding is None:
            return
        state.tried = True
        started = time.monotonic()
        evidence = TargetEvidence.from_record(record.get("target_evidence"))
        report = evidence.report if evidence is not None and evidence.strong else None
        self._health = f"ok; investigating finding {state.id}"
        try:
            if record.get("pattern"):
                result = await self._confirm_pattern(record)
            else:
                result = await self.investigator.confirm_and_minimise(
                    AnomalyClass(record["class"]), self._history_of(record), True, report, deadline,
                    suspect=self._suspect_of(record))
        finally:
            self.investigating_s += time.monotonic() - started
        record["investigation_s"] = round(float(record.get("investigation_s") or 0) + time.monotonic() - started, 3)
        record.update(result)
        record["confirmation"]["status"] = "confirmed" if result["reproducible"] else "not reproduced"
        self.store.update_anomaly(anomaly_id, record)
        finding["first_anomaly_id"] = finding.get("first_anomaly_id") or anomaly_id
        finding["confirmation"] = {**result["confirmation"], "status": record["confirmation"]["status"], "anomaly_id": anomaly_id}
        if not result["reproducible"]:
            self.store.update_finding(state.id, finding)
            return
        finding["reproducer"] = result["reproducer"]
        frames = [bytes.fromhex(h) for h in result["reproducer"]["frames_hex"]]
        finding.update(self._describe(record["class"], frames, evidence, record))
        # a pattern's reproducer frame is only the valid request it carries: the pattern is the input
        final = Trigger.parse(record["trigger"]) if record.get("pattern") else trigger_of(self.protocol, frames[-1])
        key = finding_key(self.protocol.name, record["class"], final, evidence, record.get("reply_detail") or "")
        condition = None
        if (not (evidence is not None and evidence.strong) and not final.rules and record["class"] in COSTLY
                and result["reproducer"].get("values_settled")):
            # a valid request that reaches it only after some requests, or with some values
            condition = self._values.condition(frames) or None
            if condition is not None:
                self._condition_earlier(key, condition, state)
                key = f"{key}{CONDITION_SEPARATOR}{condition.text}"
                finding["condition"] = condition.as_record()
                finding["title"] = _with_condition(finding["title"], condition)
        elif not (evidence is not None and evidence.strong) and not final.rules:
            # not shrunk far enough to read a condition: one whose condition it meets is it
            met = next((s for s in self.book.conditioned(key) if s.condition and self._values.meets(frames, s.condition)), None)
            if met is not None:
                key = met.key
        triggers = {final.text}
        alone = result["reproducer"]["case_ids"] == [record.get("suspect_case_id", record["case_id"])]
        if alone:
            triggers.add(record["trigger"])  # the suspect alone reproduced it: its own input triggers it too
        other, reason = self.book.lookup(key), "its minimised reproducer gives the same key"
        weak = record["class"] in COSTLY and not record.get("pattern") and not (evidence is not None and evidence.strong)
        if other is None and weak and final.rules:
            other = self._wider_finding(record["class"], final, evidence, frames)
            reason = "a trigger of this finding, of fewer rules broken, reaches the defect of its minimised reproducer"
        if other is not None and other.id != state.id:
            into = self.store.finding(other.id)
            if into is not None:
                into.setdefault("merged", []).append({
                    "id": state.id, "key": state.key, "anomaly_id": anomaly_id, "reason": reason})
                self.book.merge(state, other)
                self.book.confirm(other, triggers)
                if alone and record.get("fault"):
                    self.book.note_fault(other, record["fault"], Trigger.parse(record["trigger"]).request_type)
                if into.get("confirmation", {}).get("status") != "confirmed":
                    into.update({k: finding[k] for k in ("confirmation", "reproducer", "title", "request_type",
                                                          "violated_rules", "problems", "request")})
                into.setdefault("confirmed_elapsed_s", round(self.elapsed(), 3))
                into.update(self._index_of(other))
                self.store.merge_findings(state.id, other.id, into)
                if other.confirmed:
                    self._known_s += time.monotonic() - started
                self._log("finding-merged", f"finding {state.id} is finding {other.id} ({key})")
                return
        state.condition = condition
        self.book.rekey(state, key)
        self.book.confirm(state, triggers)
        if alone and record.get("fault"):
            self.book.note_fault(state, record["fault"], Trigger.parse(record["trigger"]).request_type)
        finding.update(self._index_of(state))
        finding.setdefault("confirmed_elapsed_s", round(self.elapsed(), 3))
        if self._first_confirmed is None:
            self._first_confirmed = self.elapsed()
        self.store.update_finding(state.id, finding)
        if weak:
            self._absorb_narrower(state, final, evidence)
        self._log("finding", f"finding {state.id} confirmed: {finding['title']}")

    def _rule_sets(self, state: FindingState, anomaly_class: str, request_type: str,
                   evidence: TargetEvidence | None) -> list[frozenset[str]]:
        """The rule sets of `state`'s triggers on `request_type` that key it with this class and
        this (weak) evidence: the triggers by which one defect's inputs are compared."""
        if state.anomaly_class != anomaly_class or not state.confirmed:
            return []
        base = state.key.split(CONDITION_SEPARATOR)[0]
        sets = []
        for text in state.triggers:
            if text.startswith(FAULT_TRIGGER):
                continue
            trigger = Trigger.parse(text)
            if trigger.request_type == request_type and finding_key(self.protocol.name, anomaly_class, trigger, evidence) == base:
                sets.append(frozenset(trigger.rules))
        return sets

    def _wider_finding(self, anomaly_class: str, final: Trigger, evidence: TargetEvidence | None,
                       frames: list[bytes]) -> FindingState | None:
        """A confirmed finding of this class and evidence with a trigger on `final`'s request type
        that breaks only some of the rules `final` breaks (and whose condition, if it has one, the
        frames meet). The book already counts such a frame as that finding's occurrence and holds
        it back; keyed on its own, a reproducer whose minimisation kept a rule it did not need (a
        budget spent, a trial lost to a loaded machine) files the same defect twice."""
        rules, best = frozenset(final.rules), None
        for other in self.book.findings.values():
            fewest = min((len(r) for r in self._rule_sets(other, anomaly_class, final.request_type, evidence) if r < rules),
                         default=None)
            if fewest is None or (other.condition is not None and not self._values.meets(frames, other.condition)):
                continue
            if best is None or fewest < best[0]:
                best = (fewest, other)
        return None if best is None else best[1]

    def _absorb_narrower(self, state: FindingState, final: Trigger, evidence: TargetEvidence | None) -> None:
        """The other side of `_wider_finding`: confirmed findings of this class and evidence filed
        earlier under a trigger that breaks every rule `final` breaks, and more, on its request
        type, are merged into `state`."""
        rules = frozenset(final.rules)
        for other in list(self.book.findings.values()):
            if other.id == state.id or not any(rules < r for r in self._rule_sets(other, state.anomaly_class,
                                                                                 final.request_type, evidence)):
                continue
            stored, into = self.store.finding(other.id), self.store.finding(state.id)
            if stored is None or into is None:
                continue
            frames = [bytes.fromhex(h) for h in (stored.get("reproducer") or {}).get("frames_hex", [])]
            if state.condition is not None and not self._values.meets(frames, state.condition):
                continue
            into.setdefault("merged", []).append({
                "id": other.id, "key": other.key, "anomaly_id": stored.get("first_anomaly_id"),
                "reason": f"a trigger of finding {state.id}, of fewer rules broken, reaches the defect of its reproducer"})
            self.book.merge(other, state)
            into.update(self._index_of(state))
            self.store.merge_findings(other.id, state.id, into)
            self._log("finding-merged", f"finding {other.id} is finding {state.id} ({state.key})")

    def _condition_earlier(self, key: str, condition: Condition, state: FindingState) -> None:
        """A finding confirmed earlier under `key` with no condition (its minimisation did not
        settle, so none could be read) whose reproducer meets `condition` is this defect: it
        takes the condition, so that the finding being confirmed merges into it instead of
        standing beside it (the state crash of the faulty server was filed twice that way)."""
        earlier = self.book.lookup(key)
        if earlier is None or earlier.id == state.id or earlier.condition is not None or not earlier.confirmed:
            return
        stored = self.store.finding(earlier.id)
        frames = [bytes.fromhex(h) for h in ((stored or {}).get("reproducer") or {}).get("frames_hex", [])]
        if stored is None or not frames or not self._values.meets(frames, condition):
            return
        earlier.condition = condition
        self.book.rekey(earlier, f"{key}{CONDITION_SEPARATOR}{condition.text}")
        stored.update({"condition": condition.as_record(), "title": _with_condition(stored["title"], condition)})
        stored.update(self._index_of(earlier))
        self.store.update_finding(earlier.id, stored)
        self._log("finding", f"finding {earlier.id} needs {condition.text} (read from finding {state.id}'s reproducer)")

    def _load_findings(self) -> None:
        """Rebuild the book from the store on --resume: keys, triggers and suppression counters."""
        counts = self.store.suppression_counts()
        confirmed_at: dict[int, float] = {}
        for finding in self.store.findings():
            status = (finding.get("confirmation") or {}).get("status")
            state = FindingState(finding["id"], finding["key"], finding["class"], set(finding.get("aliases") or []),
                                 set(finding.get("triggers") or []), status == "confirmed",
                                 faults={k: set(v) for k, v in (finding.get("faults") or {}).items()},
                                 condition=Condition.from_record(finding.get("condition")))
            state.skipped, state.matched = state.committed = counts.get(finding["id"], (0, 0))
            self.book.add(state)
            at = finding.get("confirmed_elapsed_s")
            if at is not None:
                confirmed_at[finding["id"]] = float(at)
        if confirmed_at:
            self._first_confirmed = min(confirmed_at.values())
            self._known_s = sum(spent for fid, t, spent in self.store.occurrence_times()
                                if fid in confirmed_at and t >= confirmed_at[fid])

    # -- confirmation phase ---------------------------------------------------------------------

    def _history_of(self, record: dict[str, Any]) -> list[TestCase]:
        """Regenerate the cases behind an anomaly from their ids (the last one cut to its trigger)."""
        cases = [self.generator.case(i) for i in record["history_case_ids"]]
        cases[-1] = replace(cases[-1], frames=cases[-1].frames[: record.get("trigger_frames", len(cases[-1].frames))])
        return cases

    async def _confirm_pattern(self, record: dict[str, Any]) -> dict[str, object]:
        """Run a connection pattern again on a healthy target: reproduced when the probe fails
        (or is slow) during it, or the target is found down after it, as the first time."""
        started = time.monotonic()
        case = self.generator.case(int(record["case_id"]))
        expected = AnomalyClass(record["class"])
        reproduced = False
        if case.pattern is not None and await self.investigator.restore():
            result = await run_pattern(self.protocol, self.address, self.target.port, case.pattern, case.frames[0],
                                       self.probe, asyncio.Event(), self.config.max_connections)
            during = result.during
            after = await self.investigator.diagnose(None)
            failed = during is not None and (not during.ok or during.reason == "slow")
            reproduced = failed or (after.anomaly is not None and after.anomaly.family == expected.family)
            await self.investigator.restore()
        return {"reproducible": reproduced,
                "confirmation": {"method": "the connection pattern run again on a healthy target, probed during and after it",
                                 "trials": 1, "replayed_cases": 1, "seconds": round(time.monotonic() - started, 3)},
                "reproducer": {"case_ids": [case.case_id], "frames_hex": [f.hex() for f in case.frames], "minimised": False,
                               "pattern": record.get("pattern")}}

    def _suspect_of(self, record: dict[str, Any]) -> TestCase | None:
        suspect = record.get("suspect_case_id")
        if suspect is None or suspect == record["case_id"]:
            return None
        return self.generator.case(int(suspect))

    async def confirm_pending(self) -> None:
        """After fuzzing: every finding not yet investigated first (most severe first), then one
        more occurrence of each finding in turn, until the confirmation budget is spent.

        Every trial starts from a healthy target. The budget is never spent on a second
        occurrence while a finding is untried; what it cannot reach keeps an honest status.
        """
        deadline = time.monotonic() + self.config.confirm_time
        pending = [f for f in self.store.findings() if (f.get("confirmation") or {}).get("status") == "pending"]
        pending.sort(key=lambda f: (SEVERITY_ORDER.index(severity(f["class"])), f["id"]))
        if pending:
            self._log("confirmation", f"investigating {len(pending)} findings")
        for n, finding in enumerate(pending):
            if self.stop_requested or time.monotonic() > deadline:
                break
            state = self.book.findings.get(finding["id"])
            ids = self.store.finding_anomaly_ids(finding["id"])
            if state is None or not ids:
                continue
            self._health = f"ok; investigating findings {n}/{len(pending)}"
            try:
                await self._investigate(state, ids[0], min(deadline, time.monotonic() + FINDING_INVESTIGATION_S))
            except TargetDown:
                self._mark_finding(finding["id"], "not tried: target did not come back for confirmation")
                raise
        for finding in self.store.findings():
            if (finding.get("confirmation") or {}).get("status") == "pending":
                self._mark_finding(finding["id"], "not tried: confirmation time budget exhausted")
        queues: dict[int, list[int]] = {}
        for anomaly_id, finding_id in self.store.pending_occurrences():
            queues.setdefault(finding_id or 0, []).append(anomaly_id)
        if queues:
            self._log("confirmation", f"replaying {sum(map(len, queues.values()))} further occurrences")
        while queues and not self.stop_requested:
            for finding_id in list(queues):
                anomaly_id = queues[finding_id].pop(0)
                if not queues[finding_id]:
                    del queues[finding_id]
                await self._confirm_occurrence(anomaly_id, deadline)

    def _mark_finding(self, finding_id: int, status: str) -> None:
        finding = self.store.finding(finding_id)
        if finding is not None:
            finding["confirmation"] = {**(finding.get("confirmation") or {}), "status": status}
            self.store.update_finding(finding_id, finding)

    async def _confirm_occurrence(self, anomaly_id: int, deadline: float) -> None:
        record = self.store.anomaly(anomaly_id)
        if record is None or record.get("confirmation", {}).get("status") != "pending":
            return
        if time.monotonic() > deadline:
            record["confirmation"] = {"status": "not replayed: confirmation time budget exhausted", "budget_s": self.config.confirm_time}
            self.store.update_anomaly(anomaly_id, record)
            return
        evidence = TargetEvidence.from_record(record.get("target_evidence"))
        report = evidence.report if evidence is not None and evidence.strong else None
        try:
            if record.get("pattern"):
                result = await self._confirm_pattern(record)
            else:
                result = await self.investigator.confirm_and_minimise(AnomalyClass(record["class"]), self._history_of(record),
                                                                      minimise=False, evidence=report)
        except TargetDown as exc:
            record["confirmation"] = {"status": f"target did not come back for confirmation: {exc}"}
            self.store.update_anomaly(anomaly_id, record)
            raise
        record.update(result)
        record["confirmation"]["status"] = "confirmed" if result["reproducible"] else "not reproduced"
        self.store.update_anomaly(anomaly_id, record)

    # -- persistence and progress ---------------------------------------------------------------

    def _flush(self) -> None:
        watermark = min(self._inflight) if self._inflight else self._next_id
        for case_id in [c for c in self._results if c < watermark]:
            group, reply = self._results.pop(case_id)
            self.store.count(group, reply)
        self._committed_below = watermark
        feedback = self.feedback
        for entry in feedback.entries[self._stored_corpus:]:
            self.store.corpus_entry(entry.id, entry.case_id, list(entry.frames), entry.reason, round(self.elapsed(), 3))
        self._stored_corpus = len(feedback.entries)
        observed = feedback.dictionary.observed
        for index in range(self._stored_observed, len(observed)):
            self.store.observed_value(index, observed[index])
        self._stored_observed = len(observed)
        for case_id in [c for c in feedback.lineage if c < watermark]:
            lineage = feedback.lineage.pop(case_id)
            self.store.lineage(case_id, lineage.parent, lineage.observed)
        if not feedback.sizes or feedback.sizes[-1][1] != len(feedback.entries):
            feedback.sizes.append((round(self.elapsed(), 3), len(feedback.entries)))
            self.store.sample("corpus", round(self.elapsed(), 3), {"t": round(self.elapsed(), 3), "size": len(feedback.entries),
                                                                    "observed": len(observed)})
        touched: set[int] = set()
        for case_id in [c for c in self._matches if c < watermark]:
            finding_id, held = self._matches.pop(case_id)
            state = self.book.resolve(finding_id)
            if state is not None:
                state.committed = (state.committed[0] + held, state.committed[1] + 1)
                touched.add(state.id)
        for finding_id in touched:
            state = self.book.findings[finding_id]
            self.store.suppressed(finding_id, *state.committed)
        done = self._cases_done - len(self._results)
        self.store.flush(watermark, round(self.elapsed(), 3), (round(self.elapsed(), 3), done, sum(self._anomaly_counts.values())))

    async def _flush_loop(self) -> None:
        last_cases, last_t = self._cases_done, time.monotonic()
        while True:
            await asyncio.sleep(0.5)
            try:
                self._flush()
            except OtfuzzError as exc:  # disk full or the like: stop sending, keep what is committed
                self._storage_error = exc
                self.request_stop(str(exc))
                return
            now = time.monotonic()
            if self.on_progress is not None:
                rate = (self._cases_done - last_cases) / max(now - last_t, 1e-9)
                last_cases, last_t = self._cases_done, now
                remaining = None if self.config.duration is None else max(0.0, self.config.duration - self.elapsed())
                by_severity: Counter[str] = Counter(severity(f.anomaly_class) for f in self.book.findings.values())
                self.on_progress(Snapshot(self._cases_done, rate, dict(self._anomaly_counts), self._health, self.elapsed(),
                                          remaining, dict(by_severity), self._probe_ms))


def run_campaign(config: CampaignConfig, run_dir: Path, resume: bool,
                 on_progress: Callable[[Snapshot], None] | None = None) -> tuple[str, str]:
    """Run a campaign into `run_dir` to its end, Ctrl-C stopping it cleanly; (status, stop reason)."""
    from otfuzz.engine.stopping import run_until_stopped

    store = EvidenceStore.open(run_dir) if resume else EvidenceStore.create(run_dir)
    try:
        campaign = Campaign(config, run_dir, store, on_progress)
        status = run_until_stopped(campaign, lambda: campaign.run(resume))
        return status, campaign.stop_reason
    finally:
        store.close()


def _with_condition(title: str, condition: Condition) -> str:
    """A finding's title with what its valid trigger needs: "... request (after write single
    register)", so two defects on one request type read apart."""
    return f"{title} ({condition.text.replace('_', ' ')})"[:300]
