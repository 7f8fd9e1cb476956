"""A fuzzing campaign: configuration, the worker loop, and what ends up in the evidence store.

The campaign owns the schedule (which case id runs next), the pacing (rate cap, concurrency),
the health checks (a probe at a fixed interval and after every suspicious outcome), and the
hand-off of suspicious outcomes to the Investigator. It is protocol-agnostic: everything it
knows about the wire comes through the protocol module's interface.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from otfuzz.engine.cases import TestCase
from otfuzz.engine.executor import CaseOutcome, CaseRunner, read_identity
from otfuzz.engine.generator import CaseGenerator
from otfuzz.engine.investigate import Investigator, TargetDown
from otfuzz.engine.strategies import GROUPS
from otfuzz.engine.config import RecordedConfig
from otfuzz.errors import OtfuzzError
from otfuzz.monitor.anomaly import AnomalyClass, first_look
from otfuzz.monitor.probe import HealthProbe, ProbeResult
from otfuzz.monitor.process import TargetProcess
from otfuzz.protocols import protocol_for
from otfuzz.protocols.base import Protocol, ReplyKind
from otfuzz.store.evidence import EvidenceStore, now_iso
from otfuzz.transport.ratelimit import RateLimiter
from otfuzz.transport.target import Scope, Target, is_loopback, parse_target

HISTORY_LIMIT = 256
AUTO_TIMEOUT_FLOOR = 0.005
"""Shortest automatic reply timeout (s): 20x the probe's p95 latency, never below this."""
AUTO_SILENCE_FLOOR = 0.002
"""Shortest automatic wait (s) for an answer to a request the specification says to reject:
5x the probe's p95 latency, never below this, never above the reply timeout."""


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
    operator: str | None = None
    organisation: str | None = None
    independence: str | None = None


    def validate(self) -> None:
        if self.duration is None and self.max_cases is None:
            raise OtfuzzError("give --duration or --cases: a campaign must be bounded")
        for name in ("duration", "rate", "timeout", "silence_timeout", "probe_interval", "probe_deadline", "recovery_timeout", "confirm_time"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise OtfuzzError(f"--{name.replace('_', '-')} must be positive, got {value}")
        if self.max_cases is not None and self.max_cases <= 0:
            raise OtfuzzError(f"--cases must be positive, got {self.max_cases}")
        if not 1 <= self.concurrency <= 64:
            raise OtfuzzError(f"--concurrency must be from 1 to 64, got {self.concurrency}")


def anomaly_signature(anomaly: AnomalyClass, template: str, detail: str) -> str:
    """What makes two anomalies the same finding.

    Reply-level: the class and the protocol's description of the fault (which names the request
    type) with numbers blanked, since a wrong byte count is the same bug whatever the count.
    Target-level: the class and the request type of the case that preceded it.
    """
    if anomaly.target_level:
        return f"{anomaly.value}|{template}"
    return f"{anomaly.value}|{re.sub(r'[0-9]+', '#', detail)[:160]}"


@dataclass
class Snapshot:
    """What the progress display shows."""

    cases: int
    rate: float
    anomalies: dict[str, int]
    health: str
    elapsed: float
    remaining: float | None


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
        self.generator = CaseGenerator(self.protocol, config.seed, config.groups, config.read_only, is_loopback(self.address))
        if self.protocol.single_association and config.concurrency > 1:
            raise OtfuzzError(f"{self.protocol.name} targets serve one association at a time: use --concurrency 1")
        self.probe = HealthProbe(self.protocol, self.address, self.target.port, config.probe_deadline, config.degradation_factor)
        self.process = TargetProcess(config.target_cmd, run_dir / "target-stderr.log") if config.target_cmd else None
        self.limiter = RateLimiter(config.rate)
        self.stop_requested = False
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
        self._history: deque[TestCase] = deque(maxlen=HISTORY_LIMIT)
        self._lock = asyncio.Lock()
        self._running = asyncio.Event()
        self._running.set()
        self._last_probe = 0.0
        self._silent = 0
        self._cases_done = 0
        self._anomaly_counts: Counter[str] = Counter()
        # (case id, class) stored for cases a resume runs again: they must not be recorded twice.
        self._known: set[tuple[int, str]] = set()
        self._signatures: dict[str, int] = {}
        self._health = "unknown"
        self._runners: list[CaseRunner] = []
        self.investigator = Investigator(self.protocol, self.probe, self._new_runner, self.process, config.recovery_timeout,
                                         config.minimise_budget, self._log)

    # -- helpers ------------------------------------------------------------------------------

    def elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self.t0)

    def _new_runner(self) -> CaseRunner:
        return CaseRunner(self.protocol, self.address, self.target.port, self.timeout, self.config.probe_deadline,
                          silence_timeout=self.silence_timeout)

    def _log(self, kind: str, detail: str) -> None:
        self.store.event(round(self.elapsed(), 3), kind, detail)

    def _record_probe(self, result: ProbeResult) -> None:
        latency = None if result.latency is None else round(result.latency * 1000, 3)
        self.store.probe(round(self.elapsed() - (time.monotonic() - result.at), 3), result.ok, latency, result.reason)
        self._health = "ok" if result.ok and result.reason == "ok" else result.reason

    def request_stop(self, reason: str = "stopped by operator") -> None:
        if not self.stop_requested:
            self.stop_requested = True
            self.stop_reason = reason

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
        if resume:
            self._next_id, self.elapsed_before = self.store.progress()
            self._cases_done = sum(sum(r.values()) for r in self.store.counts().values())
            self._anomaly_counts.update(self.store.anomaly_classes())
            for anomaly_id, case_id, anomaly_class, signature in self.store.anomaly_keys():
                if case_id >= self._next_id:  # recorded, but its case re-runs now (killed before the flush)
                    self._known.add((case_id, anomaly_class))
                if signature:
                    self._signatures.setdefault(signature, anomaly_id)
            self._log("resume", f"resumed at case {self._next_id}")
        else:
            identity = await read_identity(self.protocol, self.address, self.target.port, self.config.probe_deadline)
            self.store.record_start("fuzz", self.config, {
                "url": self.target.url, "protocol": self.protocol.name, "address": self.address, "port": self.target.port,
                "identity": identity, "command": self.config.target_cmd})
        self.store.set_meta("liveness", {
            "method": self.protocol.liveness_note,
            "probe_request_hex": self.protocol.probe().frame.hex(),
            "baseline_ms": baseline.as_record(),
            "degradation_factor": self.config.degradation_factor,
            "case_timeout_ms": round(self.timeout * 1000, 3),
            "silence_timeout_ms": round(self.silence_timeout * 1000, 3),
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

    async def run(self, resume: bool = False) -> str:
        """Run to the end; returns the final status (completed, interrupted or failed)."""
        try:
            await self.start(resume)
        except BaseException:
            if self.process is not None:
                self.process.stop()
            raise
        status = "completed"
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

    async def _worker(self) -> None:
        runner = self._new_runner()
        self._runners.append(runner)
        ahead: list[TestCase] = []

        def prefetch() -> None:
            # Generate the next case while the target works on this one (ids stay reserved in order).
            next_id = self._take_id()
            if next_id is not None:
                ahead.append(self.generator.case(next_id))

        while True:
            await self._running.wait()
            if self.stop_requested:
                return  # a prefetched case stays reserved: the resume point keeps it
            if ahead:
                case = ahead.pop()
            else:
                case_id = self._take_id()
                if case_id is None:
                    return
                case = self.generator.case(case_id)
            case_id = case.case_id
            await self.limiter.acquire()
            outcome = await runner.run(case, prefetch)
            self._results[case_id] = (case.group, outcome.kind.value)
            self._history.append(case)
            self._cases_done += 1
            self._silent = self._silent + 1 if outcome.kind in (ReplyKind.NO_REPLY, ReplyKind.CLOSED) else 0
            suspicious, candidate = first_look(outcome.kind, outcome.request_valid, self._silent)
            if self.process is not None and self.process.poll() is not None:
                suspicious = True
            due = time.monotonic() - self._last_probe >= self.config.probe_interval
            if suspicious or due:
                async with self._lock:
                    if self.stop_requested:
                        return  # another worker found the target down while this one waited
                    self._running.clear()
                    try:
                        await self._check_health(case, outcome, candidate if suspicious else None, runner)
                    except TargetDown:
                        self.stop_requested = True  # the other workers stop; the status says failed, not interrupted
                        raise
                    finally:
                        self._running.set()
            self._inflight.discard(case_id)

    async def _check_health(self, case: TestCase, outcome: CaseOutcome, candidate: AnomalyClass | None,
                            runner: CaseRunner) -> None:
        diagnosis = await self.investigator.diagnose(candidate)
        for result in diagnosis.probes:
            self._record_probe(result)
        self._last_probe = time.monotonic()
        if diagnosis.anomaly is None:
            self._history.clear()
            self._silent = 0
            return
        for each in self._runners:
            each.drop()
        # Target-level: everything since the last healthy probe; reply-level: what this connection
        # carried, since a reply can depend on the session state earlier cases left behind.
        history = list(self._history) if diagnosis.anomaly.target_level else list(runner.history)
        if not history or history[-1].case_id != case.case_id:
            history.append(case)
        anomaly = diagnosis.anomaly
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
            return
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
                        "probe_slow_threshold_ms": round(self.probe.slow_threshold * 1000, 3)},
            "probes": [p.as_record(self.t0 - self.elapsed_before) for p in diagnosis.probes],
            "reproducible": False,
            "confirmation": {"status": "pending"},
            "reproducer": {"case_ids": [c.case_id for c in history], "frames_hex": [f.hex() for c in history for f in c.frames],
                           "minimised": False},
            "target_exit": diagnosis.exit.as_record() if diagnosis.exit else None,
            "history_case_ids": [c.case_id for c in history],
        }
        signature = anomaly_signature(anomaly, case.template, outcome.detail)
        record["signature"] = signature
        record["trigger_frames"] = len(case.frames)
        first_id = self._signatures.get(signature)
        if first_id is not None:
            record["duplicate_of"] = first_id
        if not self.config.confirm:
            record["confirmation"] = {"status": "skipped"}
        anomaly_id = self.store.add_anomaly(case.case_id, case.group, anomaly.value, record)
        if first_id is None:
            self._signatures[signature] = anomaly_id
        self._anomaly_counts[anomaly.value] += 1
        self._log("anomaly", f"#{anomaly_id} {anomaly.value} at case {case.case_id}: {case.description}")
        if anomaly.target_level or not (diagnosis.probes and diagnosis.probes[-1].ok):
            if not await self.investigator.restore():
                raise TargetDown(
                    f"target stopped answering after case {case.case_id} ({anomaly.value}) and did not recover within "
                    f"{self.config.recovery_timeout:g} s; restart it and continue with: otfuzz run --resume {self.run_dir}"
                )
        self._history.clear()
        self._silent = 0
        self._last_probe = time.monotonic()
        self._health = "ok"

    # -- confirmation phase ---------------------------------------------------------------------

    def _history_of(self, record: dict[str, Any]) -> list[TestCase]:
        """Regenerate the cases behind an anomaly from their ids (the last one cut to its trigger)."""
        cases = [self.generator.case(i) for i in record["history_case_ids"]]
        cases[-1] = replace(cases[-1], frames=cases[-1].frames[: record.get("trigger_frames", len(cases[-1].frames))])
        return cases

    async def confirm_pending(self) -> None:
        """Replay every anomaly still pending; the first of each signature is also minimised.

        Runs after fuzzing, so confirmation never slows the campaign and every trial starts from
        a healthy target. Bounded by the confirmation time budget; what it cannot reach keeps
        an honest status.
        """
        pending = self.store.pending_anomaly_ids()  # ids only: records are read one at a time
        if not pending:
            return
        self._log("confirmation", f"confirming {len(pending)} anomalies")
        deadline = time.monotonic() + self.config.confirm_time
        for done, anomaly_id in enumerate(pending):
            self._health = f"ok; confirming anomalies {done}/{len(pending)}"
            if self.stop_requested:
                return
            record = self.store.anomaly(anomaly_id)
            assert record is not None
            if time.monotonic() > deadline:
                record["confirmation"] = {"status": "not replayed: confirmation time budget exhausted",
                                          "budget_s": self.config.confirm_time}
                self.store.update_anomaly(record["id"], record)
                continue
            try:
                result = await self.investigator.confirm_and_minimise(
                    AnomalyClass(record["class"]), self._history_of(record), minimise="duplicate_of" not in record)
            except TargetDown as exc:
                record["confirmation"] = {"status": f"target did not come back for confirmation: {exc}"}
                self.store.update_anomaly(record["id"], record)
                raise
            record.update(result)
            record["confirmation"]["status"] = "confirmed" if result["reproducible"] else "not reproduced"
            self.store.update_anomaly(record["id"], record)

    # -- persistence and progress ---------------------------------------------------------------

    def _flush(self) -> None:
        watermark = min(self._inflight) if self._inflight else self._next_id
        for case_id in [c for c in self._results if c < watermark]:
            group, reply = self._results.pop(case_id)
            self.store.count(group, reply)
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
                self.on_progress(Snapshot(self._cases_done, rate, dict(self._anomaly_counts), self._health, self.elapsed(), remaining))


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
