"""A stress run: baseline, every pattern's steps with recovery after each, verdicts, evidence.

The run owns the order of events and the books: it starts the essential-function monitor before
any load and keeps it running to the end, drives each step through the load generator, samples
offered load (and the target's resources) twice a second, waits after every step until the
essential function is back to its baseline, and writes everything to the evidence store as it
goes: per-group counts, time series, events, and the `stress` section of the results document,
rewritten after every step so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otfuzz.engine.config import RecordedConfig
from otfuzz.errors import OtfuzzError
from otfuzz.monitor.probe import HealthProbe
from otfuzz.monitor.process import TargetProcess
from otfuzz.protocols import protocol_for
from otfuzz.protocols.base import Protocol
from otfuzz.store.evidence import EvidenceStore, now_iso
from otfuzz.stress.load import LoadGenerator, LoadStats
from otfuzz.stress.monitor import Cycle, EssentialMonitor, ResourceMonitor, cycle_stats, essential_function
from otfuzz.stress.patterns import (
    GROUPS,
    LEVELS,
    PROFILES,
    Ceilings,
    FloodFrames,
    Level,
    Levels,
    PatternPlan,
    Step,
)
from otfuzz.stress.floods import malformed_flood, protocol_flood, valid_flood
from otfuzz.stress.verdicts import FAIL, INCONCLUSIVE, NOT_RUN, PASS, Thresholds, judge_recovery, judge_resources, judge_step, worst
from otfuzz.transport import connection_oriented
from otfuzz.transport.target import Scope, is_loopback, parse_target

SAMPLE_INTERVAL = 0.5
BASELINE_CYCLES = 20
READY_TIMEOUT = 15.0
SETTLE_BEFORE_RESOURCES = 1.0
MAX_RESOURCE_POINTS = 600

# How the essential function's cycle outcomes are counted in the store's reply classes.
_CYCLE_KIND = {"ok": "normal", "bad-reply": "malformed", "exception": "exception", "timeout": "no-reply",
               "connect-timeout": "no-reply", "overrun": "no-reply", "closed": "closed", "reset": "reset", "refused": "reset",
               "unobserved": "no-reply"}


@dataclass
class StressConfig(RecordedConfig):
    """Everything that defines a stress run; recorded whole with its hash in the evidence."""

    target: str
    profile: str = "quick"
    groups: list[str] = field(default_factory=lambda: list(GROUPS))
    level1_rate: float | None = None
    level2_rate: float | None = None
    level1_connections: int | None = None
    level2_connections: int | None = None
    level1_connect_rate: float | None = None
    level2_connect_rate: float | None = None
    step_duration: float | None = None
    essential_request: str | None = None
    essential_expect: str | None = None
    cadence: float = 0.1
    deadline: float = 0.05
    thresholds: Thresholds = field(default_factory=Thresholds)
    ceilings: Ceilings = field(default_factory=Ceilings)
    connect_timeout: float = 2.0
    scope: list[str] = field(default_factory=list)
    target_cmd: str | None = None
    target_pid: int | None = None
    seed: int = 0
    operator: str | None = None
    organisation: str | None = None
    independence: str | None = None

    def levels(self) -> Levels:
        base = self._profile().levels

        def level(old: Level, rate: float | None, conns: int | None, connect: float | None) -> Level:
            return Level(rate if rate is not None else old.request_rate, conns if conns is not None else old.connections,
                         connect if connect is not None else old.connect_rate)

        levels = Levels(level(base.level1, self.level1_rate, self.level1_connections, self.level1_connect_rate),
                        level(base.level2, self.level2_rate, self.level2_connections, self.level2_connect_rate))
        for name, lv in (("level1", levels.level1), ("level2", levels.level2)):
            if lv.request_rate <= 0 or lv.connections < 1 or lv.connect_rate <= 0:
                raise OtfuzzError(f"--{name}-rate, --{name}-connections and --{name}-connect-rate must be positive")
        if (levels.level2.request_rate < levels.level1.request_rate or levels.level2.connections < levels.level1.connections
                or levels.level2.connect_rate < levels.level1.connect_rate):
            raise OtfuzzError("level-2 must be at least level-1 in rate, connections and connect rate")
        return levels

    def _profile(self) -> Any:
        if self.profile not in PROFILES:
            raise OtfuzzError(f"unknown stress profile '{self.profile}' (known: {', '.join(PROFILES)})")
        return PROFILES[self.profile]

    def plans(self, protocol_flood_available: bool, connections: bool = True) -> list[PatternPlan]:
        unknown = [g for g in self.groups if g not in GROUPS]
        if unknown:
            raise OtfuzzError(f"unknown stress pattern '{unknown[0]}' (known: {', '.join(GROUPS)})")
        if not self.groups:
            raise OtfuzzError("no stress patterns selected")
        if self.step_duration is not None and self.step_duration <= 0:
            raise OtfuzzError("--step-duration must be positive")
        profile = self._profile().with_overrides(self.levels(), self.step_duration)
        return profile.plan(self.groups, protocol_flood_available, connections)


@dataclass
class _StepRecord:
    step: Step
    started: float
    stopped: float
    stats: LoadStats
    recovered: bool | None = None
    recovery_s: float | None = None
    died: bool = False
    interrupted: bool = False
    record: dict[str, Any] = field(default_factory=dict)


@dataclass
class _PatternRecord:
    plan: PatternPlan
    flood: FloodFrames | None
    started: float
    ended: float | None = None
    steps: list[_StepRecord] = field(default_factory=list)
    skipped: str = ""


@dataclass(frozen=True)
class Snapshot:
    """What the progress display shows."""

    pattern: str
    step: str
    offered_rps: float
    answered_rps: float
    open_connections: int
    cycles: int
    misses: int
    elapsed: float


class StressRun:
    """Runs one stress test into one run folder."""

    def __init__(self, config: StressConfig, run_dir: Path, store: EvidenceStore,
                 on_progress: Callable[[Snapshot], None] | None = None) -> None:
        self.config = config
        self.run_dir = run_dir
        self.store = store
        self.on_progress = on_progress
        config.thresholds.validate()
        config.ceilings.validate()
        if config.connect_timeout <= 0:
            raise OtfuzzError("--connect-timeout must be positive")
        if config.target_cmd and config.target_pid:
            raise OtfuzzError("give --target-cmd or --target-pid, not both")
        self.target = parse_target(config.target)
        self.protocol: Protocol = protocol_for(self.target)
        self.address = Scope(config.scope).check(self.target)
        self.function = essential_function(self.protocol, config.essential_request, config.essential_expect,
                                           config.cadence, config.deadline)
        self.levels = config.levels()
        self.special = protocol_flood(self.protocol)
        self.plans = config.plans(self.special is not None, connection_oriented(self.protocol))
        self.floods: dict[str, FloodFrames | None] = {
            "connection-flood": valid_flood(self.protocol),
            "request-flood": valid_flood(self.protocol),
            "malformed-flood": (malformed_flood(self.protocol, config.seed, loopback=is_loopback(self.address))
                                if "malformed-flood" in config.groups else None),
            "protocol-flood": self.special,
        }
        steps = sum(len(p.steps) for p in self.plans)
        overhead = steps * config.thresholds.recovery_window + BASELINE_CYCLES * config.cadence + 10
        config.ceilings.check(self.plans, overhead)
        self._raise_fd_limit(max([s.connections for p in self.plans for s in p.steps] + [1]))
        self.process = TargetProcess(config.target_cmd, run_dir / "target-stderr.log") if config.target_cmd else None
        self.stop_requested = False
        self.stop_reason = ""
        self.status = "running"
        self.notes: list[str] = []
        if self.protocol.single_association:
            self.notes.append(f"{self.protocol.name} serves one association at a time: flood connections displace the "
                              "monitor's association, which is what an attacker's connection would do")
        self.t0 = time.monotonic()
        self.cycles: list[Cycle] = []
        self._cycle_times: list[float] = []
        self.load_samples: list[dict[str, Any]] = []
        self.resource_samples: list[dict[str, Any]] = []
        self.resources: ResourceMonitor | None = None
        self.resources_start: dict[str, Any] | None = None
        self.resources_end: dict[str, Any] | None = None
        self.patterns: list[_PatternRecord] = []
        self.baseline: dict[str, Any] = {}
        self._recovery_latency = config.deadline
        self._anomaly_seq = 0
        self._stop_event: asyncio.Event | None = None
        self._active: tuple[str, Step, LoadStats] | None = None
        self._last_counts = (0, 0, 0)
        self._written_total = 0
        self.monitor: EssentialMonitor | None = None

    # -- helpers ------------------------------------------------------------------------------

    def now(self) -> float:
        return time.monotonic() - self.t0

    def request_stop(self, reason: str = "stopped by operator") -> None:
        if not self.stop_requested:
            self.stop_requested = True
            self.stop_reason = reason
            if self._stop_event is not None:
                self._stop_event.set()

    @staticmethod
    def _raise_fd_limit(connections: int) -> None:
        """Flood connections need descriptors; raise the soft limit toward the hard one if short."""
        need = connections * 2 + 256
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft >= need:
            return
        if hard != resource.RLIM_INFINITY and hard < need:
            raise OtfuzzError(f"{connections} connections need about {need} open files but the hard limit is {hard}; "
                              "raise it (ulimit -Hn) or lower the connection levels")
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))

    def _event(self, kind: str, detail: str) -> None:
        self.store.event(round(self.now(), 3), kind, detail)

    def _on_cycle(self, cycle: Cycle) -> None:
        rel = Cycle(round(cycle.t - self.t0, 4), cycle.latency, cycle.ok, cycle.reason)
        self.cycles.append(rel)
        self._cycle_times.append(rel.t)
        self.store.count("essential-function", _CYCLE_KIND.get(cycle.reason, "no-reply"))
        self.store.sample("essential", rel.t, {"t": rel.t, "ok": rel.ok, "reason": rel.reason,
                                               "latency_ms": None if rel.latency is None else round(rel.latency * 1000, 3)})

    def _cycles_between(self, start: float, end: float) -> list[Cycle]:
        lo = bisect.bisect_left(self._cycle_times, start)
        hi = bisect.bisect_left(self._cycle_times, end)
        return self.cycles[lo:hi]

    # -- lifecycle ----------------------------------------------------------------------------

    async def run(self) -> str:
        """Run to the end; returns the final status (completed, interrupted or failed)."""
        self._stop_event = asyncio.Event()
        if self.stop_requested:
            self._stop_event.set()
        self.t0 = time.monotonic()
        sampler: asyncio.Task[None] | None = None
        try:
            await self._start()
            sampler = asyncio.create_task(self._sample_loop())
            await self._baseline()
            for plan in self.plans:
                if self.stop_requested or self.status == "failed":
                    break
                await self._run_pattern(plan)
            if not self.stop_requested and self.status != "failed":
                await self._final_resources()
            if self.status == "running":
                self.status = "interrupted" if self.stop_requested else "completed"
        except asyncio.CancelledError:
            self.status = "interrupted"
            self.stop_reason = self.stop_reason or "cancelled"
        finally:
            if sampler is not None:
                sampler.cancel()
                try:
                    await sampler
                except (asyncio.CancelledError, Exception):
                    pass
            if self.monitor is not None:
                await asyncio.to_thread(self.monitor.stop)
            if self.status == "running":  # an exception is on its way out
                self.status = "failed"
            self._finish()
            if self.process is not None:
                await asyncio.to_thread(self.process.stop)
        return self.status

    async def _start(self) -> None:
        probe = HealthProbe(self.protocol, self.address, self.target.port, max(self.config.deadline, 1.0))
        if self.process is not None:
            self.process.start()
            if not await self._wait_ready(probe):
                exit_info = self.process.stop()
                tail = exit_info.stderr_tail.strip().splitlines()[-1:] if exit_info else []
                raise OtfuzzError(f"--target-cmd did not answer the health probe within {READY_TIMEOUT:g} s"
                                  + (f" ({tail[0]})" if tail else ""))
        first = await probe.check()
        if first.reason == "refused":
            raise OtfuzzError(f"target {self.target.url} is unreachable: connection refused at {self.address}:{self.target.port}")
        pid = self.process.proc.pid if self.process is not None and self.process.proc is not None else self.config.target_pid
        if pid is not None:
            self.resources = ResourceMonitor(pid)
            self.resources.sample()  # primes the CPU counters
        from otfuzz.engine.executor import read_identity

        identity = await read_identity(self.protocol, self.address, self.target.port, self.config.connect_timeout)
        self.store.record_start("stress", self.config, {
            "url": self.target.url, "protocol": self.protocol.name, "address": self.address, "port": self.target.port,
            "identity": identity, "command": self.config.target_cmd})
        self.monitor = EssentialMonitor(self.target, self.address, self.target.port,
                                        self.function, self.config.ceilings.duration + 60, self._on_cycle)
        self.monitor.start()

    async def _wait_ready(self, probe: HealthProbe) -> bool:
        end = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < end:
            if self.process is not None and self.process.poll() is not None:
                return False
            result = await probe.check()
            if result.ok:
                return True
            await asyncio.sleep(0.2)
        return False

    async def _baseline(self) -> None:
        """Cycles without load: the reference recovery is measured against."""
        cadence = self.config.cadence
        end = time.monotonic() + BASELINE_CYCLES * cadence + 10
        while len(self.cycles) < BASELINE_CYCLES and time.monotonic() < end and not self.stop_requested:
            if self.monitor is not None and not self.monitor.alive and len(self.cycles) < BASELINE_CYCLES:
                break
            await asyncio.sleep(cadence)
        cycles = self.cycles[:BASELINE_CYCLES]
        # The first cycle also opens the monitor's connection: it is not a normal cycle.
        steady = cycles[1:]
        bad = [c for c in steady if not c.ok]
        if self.stop_requested:
            raise asyncio.CancelledError()
        if len(cycles) < BASELINE_CYCLES or bad or not steady:
            reason = bad[0].reason if bad else "too few cycles"
            raise OtfuzzError(
                f"the essential function fails without any load ({len(bad)} of {len(steady)} cycles missed, e.g. {reason}): "
                f"{self.function.description}; check --essential-request/--essential-expect, or allow more time "
                f"with --deadline (now {self.config.deadline:g} s)")
        latencies = sorted(c.latency for c in steady if c.latency is not None)
        p95 = latencies[min(len(latencies) - 1, int(round(0.95 * (len(latencies) - 1))))]
        median = latencies[len(latencies) // 2]
        factor = self.config.thresholds.recovery_latency_factor
        recovery_latency = min(self.config.deadline, max(p95 * factor, p95 + 0.005))
        self.baseline = {"cycles": len(steady), "median_ms": round(median * 1000, 3), "p95_ms": round(p95 * 1000, 3),
                         "recovery_latency_ms": round(recovery_latency * 1000, 3), "t_end": round(self.now(), 3)}
        self._recovery_latency = recovery_latency
        self.store.set_meta("liveness", {
            "method": f"essential function: {self.function.description}, every {self.config.cadence:g} s with a "
                      f"{self.config.deadline:g} s deadline, on its own persistent connection in a separate process",
            "probe_request_hex": self.function.request.hex(),
            "baseline_ms": {"median": self.baseline["median_ms"], "p95": self.baseline["p95_ms"], "samples": len(latencies)},
        })
        if self.resources is not None:
            self.resources_start = self.resources.sample()
        self._event("baseline", f"{len(steady)} cycles, median {self.baseline['median_ms']} ms, p95 {self.baseline['p95_ms']} ms")
        self._write_section()

    # -- patterns -------------------------------------------------------------------------------

    async def _run_pattern(self, plan: PatternPlan) -> None:
        record = _PatternRecord(plan, self.floods.get(plan.group), self.now())
        self.patterns.append(record)
        if not plan.steps:
            record.ended = self.now()
            record.skipped = plan.note or "no steps"
            self._write_section()
            return
        assert self._stop_event is not None and record.flood is not None
        generator = LoadGenerator(self.protocol, self.address, self.target.port, self.config.connect_timeout,
                                  self.config.ceilings.connect_rate, self._stop_event)
        self._event("pattern-start", plan.group)
        for index, step in enumerate(plan.steps):
            if self.stop_requested:
                break
            stats = LoadStats()
            started = self.now()
            self._active = (plan.group, step, stats)
            self._last_counts = (0, 0, 0)
            self._event("step-start", f"{plan.group}: {step.label}")
            try:
                await generator.run(step, record.flood, stats)
            finally:
                self._active = None
                self._written_total += stats.written
            stopped = self.now()
            rec = _StepRecord(step, started, stopped, stats, interrupted=self.stop_requested)
            record.steps.append(rec)
            self._count_step(plan.group, step, stats)
            rec.died = self.process is not None and self.process.poll() is not None
            if not self.stop_requested:
                rec.recovered, rec.recovery_s = await self._await_recovery(stopped)
            self._event("step-end", f"{plan.group}: {step.label}; recovery "
                        + ("interrupted" if rec.recovered is None else f"{rec.recovery_s:.2f} s" if rec.recovered else "not reached"))
            self._close_step(rec)
            record.ended = self.now()
            self._write_section()
            if rec.recovered is False or rec.died:
                if not await self._restore(plan.group, step):
                    break
                if index < len(plan.steps) - 1:
                    record.skipped = "later steps skipped: the target had not recovered"
                break
        record.ended = self.now()
        self._event("pattern-end", plan.group)
        self._write_section()

    async def _await_recovery(self, stopped: float) -> tuple[bool | None, float | None]:
        """Wait until `recovery_cycles` cycles in a row are good and on time again (bounded)."""
        th = self.config.thresholds
        need = th.recovery_cycles
        limit = self._recovery_latency
        end = stopped + th.recovery_window + self.config.deadline
        for _ in range(int((th.recovery_window + self.config.deadline) / self.config.cadence) + need + 50):
            if self.stop_requested:
                return None, None
            after = self._cycles_between(stopped, float("inf"))
            run_start: float | None = None
            run = 0
            for c in after:
                good = c.ok and c.latency is not None and c.latency <= limit
                if good:
                    if run == 0:
                        run_start = c.t
                    run += 1
                    if run >= need:
                        assert run_start is not None
                        if run_start - stopped <= th.recovery_window:
                            return True, round(max(0.0, run_start - stopped), 3)
                        return False, None
                else:
                    run = 0
            if self.now() > end + need * self.config.cadence:
                return False, None
            if self.monitor is not None and not self.monitor.alive:
                return False, None
            if self.process is not None and self.process.poll() is not None:
                return False, None  # a dead process does not recover by itself: restoring it is _restore's job
            await asyncio.sleep(self.config.cadence)
        return False, None

    async def _restore(self, group: str, step: Step) -> bool:
        """After a step the target did not recover from: restart it if we own it, else wait once more."""
        probe = HealthProbe(self.protocol, self.address, self.target.port, max(self.config.deadline, 1.0))
        if self.process is not None and self.process.poll() is not None:
            exit_info = self.process.poll()
            self._event("target-exit", f"after {group} '{step.label}': " + json.dumps(exit_info.as_record() if exit_info else {}))
            self.process.stop()
            self.process.start()
            if await self._wait_ready(probe):
                self._event("target-restart", "restarted by otfuzz")
                return True
        else:
            end = time.monotonic() + self.config.thresholds.recovery_window
            while time.monotonic() < end and not self.stop_requested:
                if (await probe.check()).ok:
                    self._event("target-back", f"answering again after {group} '{step.label}'")
                    return True
                await asyncio.sleep(0.5)
        if not self.stop_requested:
            self.status = "failed"
            self.stop_reason = (f"the target stopped answering after {group} '{step.label}' and did not come back; "
                                "the results so far are kept")
        return False

    def _count_step(self, group: str, step: Step, stats: LoadStats) -> None:
        store = self.store
        if step.kind in ("idle", "half-open", "churn"):
            accepted = stats.connects - stats.closed_by_target
            if accepted > 0:
                store.count(group, "normal", accepted)
            if stats.closed_by_target:
                store.count(group, "closed", stats.closed_by_target)
            refused = sum(n for why, n in stats.connect_failures.items() if why != "timeout")
            if refused:
                store.count(group, "reset", refused)
            if stats.connect_failures.get("timeout"):
                store.count(group, "no-reply", stats.connect_failures["timeout"])
            return
        for kind, n in stats.replies.items():
            store.count(group, kind, n)
        unanswered = stats.written - stats.answered
        if unanswered > 0:
            store.count(group, "no-reply", unanswered)

    def _close_step(self, rec: _StepRecord) -> None:
        step = rec.step
        cycles = self._cycles_between(rec.started, rec.stopped)
        by_level: dict[str, list[Cycle]] = {}
        for c in cycles:
            by_level.setdefault(step.level_at(c.t - rec.started, self.levels), []).append(c)
        cadence = self.config.cadence
        levels = {name: cycle_stats(by_level[name], cadence) for name in LEVELS if name in by_level}
        duration = max(rec.stopped - rec.started, 1e-9)
        offered = rec.stats.as_record(duration)
        if rec.interrupted:
            verdict, reasons = INCONCLUSIVE, ["interrupted by the operator"]
        else:
            verdict, reasons = judge_step(levels, offered, self.config.thresholds, rec.died)
        recovery: dict[str, Any] = {"recovered": rec.recovered, "seconds": rec.recovery_s}
        if rec.recovered is not None:
            rv, why = judge_recovery(rec.recovered, rec.recovery_s, self.config.thresholds)
            recovery["verdict"], recovery["reason"] = rv, why
            # One recovery observation per step, so the group's totals reach the results document.
            self.store.count("recovery", "normal" if rv == PASS else "no-reply")
        else:
            recovery["verdict"], recovery["reason"] = NOT_RUN, "interrupted"
        rec.record = {
            **step.as_record(),
            "level": step.level_at(0, self.levels) if step.kind != "ramp" else "ramp",
            "started_t": round(rec.started, 3),
            "stopped_t": round(rec.stopped, 3),
            "offered": offered,
            "replies": dict(rec.stats.replies),
            "essential": cycle_stats(cycles, cadence),
            "essential_by_level": levels,
            "recovery": recovery,
            "target_died": rec.died,
            "verdict": verdict,
            "reasons": reasons,
        }
        self._record_anomalies(rec, levels)

    def _record_anomalies(self, rec: _StepRecord, levels: dict[str, dict[str, Any]]) -> None:
        """Failed thresholds also become anomalies, so the requirement mapping sees them like any finding.

        crash: the target process died; hang: the essential function was lost longer than the
        level-2 outage limit under judged load; degradation: too many missed cycles otherwise;
        unresponsive-after (group "recovery"): not back to baseline within the recovery limit.
        """
        group = rec.step.group
        found: list[tuple[str, str, str]] = []
        if rec.record["verdict"] == FAIL:
            judged = [levels[n] for n in ("level-1", "level-2") if n in levels]
            if rec.died:
                cls = "crash"
            elif any(s["longest_outage_s"] > self.config.thresholds.max_outage_level2 for s in judged):
                cls = "hang"
            else:
                cls = "degradation"
            found.append((group, cls, "; ".join(rec.record["reasons"])))
        if rec.record["recovery"]["verdict"] == FAIL:
            found.append(("recovery", "unresponsive-after", f"after {group} '{rec.step.label}': {rec.record['recovery']['reason']}"))
        flood = self.floods.get(group)
        frames = [f.hex() for f in (flood.frames[:8] if flood else ())]
        for anomaly_group, cls, detail in found:
            self._anomaly_seq += 1
            record = {
                "case_id": self._anomaly_seq,
                "group": anomaly_group,
                "class": cls,
                "detected_at": now_iso(),
                "elapsed_s": round(rec.stopped, 3),
                "description": f"{group} step '{rec.step.label}': {detail}",
                "template": "stress",
                "frames_hex": frames,
                "reply_hex": None,
                "reply_kind": "no-reply",
                "timings": {"step_started_t": round(rec.started, 3), "step_stopped_t": round(rec.stopped, 3),
                            "cadence_ms": round(self.config.cadence * 1000, 3), "deadline_ms": round(self.config.deadline * 1000, 3)},
                "probes": [],
                "reproducible": False,
                "confirmation": {"status": "not applicable: a load pattern; repeat it with the same stress step"},
                "reproducer": {"case_ids": [], "frames_hex": frames, "minimised": False, "stress_step": rec.step.as_record()},
                "target_exit": None,
            }
            self.store.add_anomaly(self._anomaly_seq, anomaly_group, cls, record)
            self._event("anomaly", f"{cls} in {anomaly_group}: {detail}")

    async def _final_resources(self) -> None:
        if self.resources is None:
            return
        await asyncio.sleep(SETTLE_BEFORE_RESOURCES)
        self.resources_end = self.resources.sample()

    # -- sampling -------------------------------------------------------------------------------

    async def _sample_loop(self) -> None:
        last = time.monotonic()
        ceiling = self.config.ceilings.duration
        while True:
            await asyncio.sleep(SAMPLE_INTERVAL)
            now = time.monotonic()
            dt = max(now - last, 1e-9)
            last = now
            t = round(self.now(), 3)
            active = self._active
            if active is not None:
                group, step, stats = active
                written, answered, connects = stats.written, stats.answered, stats.connects
                prev = self._last_counts
                self._last_counts = (written, answered, connects)
                sample = {"t": t, "offered_rps": round((written - prev[0]) / dt, 1),
                          "answered_rps": round((answered - prev[1]) / dt, 1), "open": stats.open,
                          "connects_ps": round((connects - prev[2]) / dt, 1), "backpressure": stats.backpressure,
                          "group": group, "step": step.label}
            else:
                sample = {"t": t, "offered_rps": 0.0, "answered_rps": 0.0, "open": 0, "connects_ps": 0.0,
                          "backpressure": 0, "group": None, "step": None}
            self.load_samples.append(sample)
            self.store.sample("load", t, sample)
            if self.resources is not None:
                res = self.resources.sample()
                if res is not None:
                    res["t"] = t
                    self.resource_samples.append(res)
                    self.store.sample("resources", t, res)
            written_so_far = self._written_total + (active[2].written if active is not None else 0)
            self.store.flush(0, t, (t, written_so_far, 0))
            if self.on_progress is not None:
                recent = self._cycles_between(t - 2.0, t)
                self.on_progress(Snapshot(active[0] if active else "-", active[1].label if active else "recovery/baseline",
                                          sample["offered_rps"], sample["answered_rps"], sample["open"], len(recent),
                                          sum(1 for c in recent if not c.ok), t))
            if t > ceiling:
                self.request_stop(f"reached the duration ceiling of {ceiling:g} s")

    # -- the results section --------------------------------------------------------------------

    def _timeline(self, start: float, end: float) -> list[dict[str, Any]]:
        """Load samples of [start, end] with the essential-function cycles of each interval."""
        points = []
        prev = start
        for sample in self.load_samples:
            t = sample["t"]
            if t <= start or t > end + SAMPLE_INTERVAL:
                continue
            cycles = self._cycles_between(prev, t)
            lat = sorted(c.latency for c in cycles if c.ok and c.latency is not None)
            points.append({
                "t": t,
                "offered_rps": sample["offered_rps"],
                "answered_rps": sample["answered_rps"],
                "open_connections": sample["open"],
                "connects_ps": sample["connects_ps"],
                "cycles": len(cycles),
                "misses": sum(1 for c in cycles if not c.ok),
                "latency_max_ms": round(lat[-1] * 1000, 3) if lat else None,
                "latency_p50_ms": round(lat[len(lat) // 2] * 1000, 3) if lat else None,
            })
            prev = t
        return points

    def _pattern_section(self, record: _PatternRecord) -> dict[str, Any]:
        steps = [s.record for s in record.steps if s.record]
        verdicts = [s["verdict"] for s in steps]
        if record.skipped and not steps:
            verdict, reasons = NOT_RUN, [record.skipped]
        else:
            verdict = worst(verdicts) if verdicts else INCONCLUSIVE
            reasons = [f"{s['label']}: {r}" for s in steps for r in s["reasons"] if s["verdict"] != PASS]
            if record.skipped:
                reasons.append(record.skipped)
        recoveries = [s["recovery"] for s in steps if s["recovery"]["recovered"] is not None]
        recovered = all(r["recovered"] for r in recoveries) if recoveries else None
        seconds = [r["seconds"] for r in recoveries if r["seconds"] is not None]
        ended = record.ended if record.ended is not None else self.now()
        return {
            "group": record.plan.group,
            "flood": record.flood.description if record.flood else None,
            "note": record.plan.note or record.skipped or None,
            "started_t": round(record.started, 3),
            "ended_t": round(ended, 3),
            "verdict": verdict,
            "reasons": reasons,
            "recovered": recovered,
            "recovery_s": max(seconds) if seconds else None,
            "steps": steps,
            "timeline": self._timeline(record.started, ended),
        }

    def _verdicts(self, patterns: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        by_group = {p["group"]: p for p in patterns}
        for group in GROUPS:
            pattern = by_group.get(group)
            if pattern is None:
                why = "not selected" if group not in self.config.groups else "not reached (run ended early)"
                out[group] = {"verdict": NOT_RUN, "reasons": [why]}
            else:
                out[group] = {"verdict": pattern["verdict"], "reasons": pattern["reasons"]}
        recov: list[str] = []
        reasons: list[str] = []
        for p in patterns:
            for s in p["steps"]:
                r = s["recovery"]
                if r["verdict"] == NOT_RUN:
                    continue
                recov.append(r["verdict"])
                if r["verdict"] != PASS:
                    reasons.append(f"{p['group']} '{s['label']}': {r['reason']}")
        out["recovery"] = {"verdict": worst(recov) if recov else NOT_RUN,
                           "reasons": reasons if recov else ["no step completed"]}
        if self.resources is not None or self.config.target_pid is not None:
            if self.resources_end is None and self.status in ("running", "interrupted"):
                out["resources"] = {"verdict": NOT_RUN, "reasons": ["the run ended before the final resource sample"]}
            else:
                verdict, why = judge_resources(self.resources_start, self.resources_end, self.config.thresholds)
                out["resources"] = {"verdict": verdict, "reasons": why}
        return out

    def section(self) -> dict[str, Any]:
        """The `stress` section of the results document (JSON-ready)."""
        patterns = [self._pattern_section(r) for r in self.patterns]
        resources: dict[str, Any] = {"measured": self.resources is not None}
        if self.resources is not None:
            samples = self.resource_samples
            step = max(1, len(samples) // MAX_RESOURCE_POINTS + (1 if len(samples) % MAX_RESOURCE_POINTS else 0))
            resources.update({
                "pid": self.resources.pid,
                "start": self.resources_start,
                "end": self.resources_end,
                "peak": {k: max(s[k] for s in samples) for k in ("cpu_percent", "rss_mb", "fds", "threads")} if samples else None,
                "samples": samples[::step],
            })
        return {
            "profile": self.config.profile,
            "status": self.status,
            "levels": self.levels.as_record(),
            "ceilings": self.config.ceilings.as_record(),
            "thresholds": self.config.thresholds.as_record(),
            "essential_function": self.function.as_record(),
            "baseline": self.baseline,
            "patterns": patterns,
            "verdicts": self._verdicts(patterns),
            "resources": resources,
            "notes": list(self.notes),
        }

    def _write_section(self) -> None:
        self.store.set_meta("stress", self.section())

    def _finish(self) -> None:
        meta = self.store.get_meta("campaign")
        if meta is not None:
            meta["status"] = self.status
            meta["ended_at"] = now_iso()
            meta["elapsed_s"] = round(self.now(), 3)
            reason = self.stop_reason or ("reached the end of the profile" if self.status == "completed" else "")
            if reason:
                meta["stop_reason"] = reason
            self.store.set_meta("campaign", meta)
            self._write_section()
        t = round(self.now(), 3)
        self.store.flush(0, t, (t, self._written_total, 0))

    @property
    def failed_verdicts(self) -> list[str]:
        section = self.section()
        return [group for group, v in section["verdicts"].items() if v["verdict"] == FAIL]


def run_stress(config: StressConfig, run_dir: Path,
               on_progress: Callable[[Snapshot], None] | None = None) -> tuple[str, str, list[str]]:
    """Run a stress test into a new store in `run_dir`, Ctrl-C stopping it cleanly;
    (status, stop reason, groups whose verdict failed)."""
    from otfuzz.engine.stopping import run_until_stopped

    store = EvidenceStore.create(run_dir)
    try:
        run = StressRun(config, run_dir, store, on_progress)
        status = run_until_stopped(run, run.run)
        return status, run.stop_reason, run.failed_verdicts
    finally:
        store.close()
