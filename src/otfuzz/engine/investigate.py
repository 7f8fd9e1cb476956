"""From a suspicious outcome to a confirmed, minimised anomaly.

Steps, each recorded: probe the target on its own connection and classify (crash, hang,
unresponsive-after, degradation, or the reply-level candidate); bring the target back (restart
it when otfuzz owns it, else wait for it to recover); replay the case, or the sequence of cases
since the last healthy probe, against the recovered target to confirm; then shrink the
reproducer with delta debugging, first over the sequence of cases and then over the bytes of
the last message. Every trial starts from a healthy target, so a reproducer never depends on
damage done by an earlier trial.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from otfuzz.engine.cases import TestCase
from otfuzz.engine.executor import CaseOutcome, CaseRunner
from otfuzz.engine.findings import FrameValues, TargetEvidence, crash_report, stack_evidence
from otfuzz.engine.minimise import ddmin, simpler_frames
from otfuzz.monitor.anomaly import REPLY_CANDIDATES, AnomalyClass
from otfuzz.monitor.probe import HealthProbe, ProbeResult
from otfuzz.monitor.process import ExitInfo, TargetProcess
from otfuzz.protocols.base import Protocol, ReplyKind

ANSWERED = (ReplyKind.NORMAL, ReplyKind.EXCEPTION, ReplyKind.SPEC_VIOLATION)
STALL_SHARE = 0.5
"""A probe answered after this share of its deadline, then prompt ones: a hang, not degradation."""
STACKS_AFTER = 0.1
"""A first probe unanswered after this share of its deadline has the target's stacks taken."""
RESET_WAIT = 0.5
"""Seconds each frame waits for its answer when a connection reset is replayed: long enough
that a peer which closes after a frame it never answers (cpppo after a NOP) is seen closing
on that frame, not found out by the next one, which the reproducer would then blame."""

DEATH_WAIT_S = 0.05
DEATH_WAIT_STEPS = 10
"""How long a crash replay waits, after a frame the target closed the connection on, to see
whether its process died of it."""


@dataclass
class Diagnosis:
    anomaly: AnomalyClass | None
    probes: list[ProbeResult] = field(default_factory=list)
    exit: ExitInfo | None = None
    recovered: bool = True
    note: str = ""
    evidence: TargetEvidence | None = None  # what the target process itself showed


def _dropped_after_valid(outcome: CaseOutcome) -> bool:
    return outcome.kind in (ReplyKind.RESET, ReplyKind.CLOSED) and outcome.request_valid


def exit_evidence(info: ExitInfo) -> TargetEvidence:
    """How a process died, with the top of its crash report if it printed one."""
    excerpt = "\n".join(info.stderr.splitlines()[-40:])
    return TargetEvidence(info.signal, info.returncode, crash_report(info.stderr), excerpt)


class TargetDown(Exception):
    """The target did not come back: the campaign cannot go on."""


class Investigator:
    def __init__(self, protocol: Protocol, probe: HealthProbe, runner_factory: Callable[[], CaseRunner],
                 process: TargetProcess | None, recovery_timeout: float, minimise_budget: int,
                 log: Callable[[str, str], None], start_timeout: float = 15.0, grace: float = 10.0) -> None:
        self.protocol = protocol
        self.grace = grace  # how long a late answer is awaited when replaying a slow reply
        self.slow_threshold = float("inf")  # set by the campaign from the probe baseline
        self.probe = probe
        self.runner_factory = runner_factory
        self.process = process
        self.recovery_timeout = recovery_timeout
        self.minimise_budget = minimise_budget
        self.values = FrameValues(protocol)
        self.log = log
        self.start_timeout = start_timeout
        self.fatal: int | None = None  # the last replay's crash: the case it was dead after (see replay)

    # -- diagnosis ----------------------------------------------------------------------------

    async def diagnose(self, candidate: AnomalyClass | None) -> Diagnosis:
        """Probe the target and name what is wrong (None: healthy and nothing to report).

        Crash means the process exited or connections are refused, nothing else: a live target
        that accepts connections and does not answer hangs (it comes back by itself within the
        recovery timeout) or is unresponsive-after (it does not), whoever restarts it. While a
        target otfuzz started hangs, its stacks are taken: where it is stuck buckets the hang.
        """
        first, stalled = await self._first_probe()
        probes = [first]
        exit_info = self.process.poll() if self.process else None
        if exit_info is not None:
            return Diagnosis(AnomalyClass.CRASH, probes, exit_info, recovered=False, evidence=exit_evidence(exit_info))
        if first.reason == "refused":
            await asyncio.sleep(0.05)  # a dying process may not have been reaped yet
            exit_info = self.process.poll() if self.process else None
            return Diagnosis(AnomalyClass.CRASH, probes, exit_info, recovered=False,
                             evidence=exit_evidence(exit_info) if exit_info else None)
        if not first.ok:
            stuck = await stalled if stalled is not None else await self._stacks()
            recovered, more = await self._wait_for_recovery()
            probes += more
            exit_info = self.process.poll() if self.process else None
            if exit_info is not None:
                return Diagnosis(AnomalyClass.CRASH, probes, exit_info, recovered=False, evidence=exit_evidence(exit_info))
            if not recovered and more and more[-1].reason == "refused":
                # accepted a connection while dying, refused them once it was gone
                return Diagnosis(AnomalyClass.CRASH, probes, recovered=False)
            return Diagnosis(AnomalyClass.HANG if recovered else AnomalyClass.UNRESPONSIVE_AFTER, probes, recovered=recovered,
                             evidence=stuck)
        if first.reason == "slow":
            more = await self.probe.settle(2)
            probes += more
            if self._slow(probes):
                return Diagnosis(AnomalyClass.DEGRADATION, probes)
            if first.latency is not None and first.latency >= STALL_SHARE * self.probe.deadline:
                # answered just inside the deadline, then promptly again: the target stalled for a
                # while and came back by itself (a hang), it did not get slower
                return Diagnosis(AnomalyClass.HANG, probes, recovered=True,
                                 evidence=await stalled if stalled is not None else None)
        return Diagnosis(candidate, probes)

    async def _first_probe(self) -> tuple[ProbeResult, asyncio.Future[TargetEvidence | None] | None]:
        """The first probe, and, for a target otfuzz started that is slow to answer it, its stacks
        taken while the probe still waits: a target that stalls and comes back by itself is
        caught where it is stuck only during the stall."""
        probe = asyncio.ensure_future(self.probe.check())
        if self.process is None:
            return await probe, None
        done, _ = await asyncio.wait({probe}, timeout=STACKS_AFTER * self.probe.deadline)
        stalled = None if done else asyncio.ensure_future(self._stacks())
        if stalled is not None:  # awaited only if the diagnosis is a hang; never left unretrieved
            stalled.add_done_callback(lambda task: task.cancelled() or task.exception())
        return await probe, stalled

    async def _stacks(self) -> TargetEvidence | None:
        if self.process is None:
            return None
        threads = await asyncio.to_thread(self.process.stacks)
        report = stack_evidence(threads) if threads else None
        if report is None:
            return None
        excerpt = "\n".join(f"{t.get('thread_name', '?')}: " + " < ".join(
            f"{f.get('short_filename', '?')}:{f.get('line', '?')} {f.get('name', '?')}" for f in (t.get("frames") or [])[:6])
            for t in threads or [])
        return TargetEvidence(report=report, excerpt=excerpt[:4000])

    def _slow(self, probes: Sequence[ProbeResult]) -> bool:
        latencies = [p.latency if p.latency is not None else float("inf") for p in probes]
        return statistics.median(latencies) > self.probe.slow_threshold

    async def _wait_for_recovery(self) -> tuple[bool, list[ProbeResult]]:
        deadline = time.monotonic() + self.recovery_timeout
        probes: list[ProbeResult] = []
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                return False, probes
            await asyncio.sleep(0.2)
            result = await self.probe.check()
            probes.append(result)
            if result.ok and result.reason == "ok":
                return True, probes
            if len(probes) >= 200:
                break
        return False, probes

    # -- bringing the target back -------------------------------------------------------------

    async def restore(self) -> bool:
        """Make the target healthy again: restart it if we own it, else wait for it."""
        result = await self.probe.check()
        if result.ok and result.reason == "ok":
            return True
        if self.process is not None:
            await self.restart()
            return True
        recovered, _ = await self._wait_for_recovery()
        return recovered

    async def restart(self) -> None:
        assert self.process is not None
        await asyncio.to_thread(self.process.stop)
        self.process.start()
        self.log("restart", f"target restarted (start {self.process.starts})")
        if not await self.wait_ready():
            raise TargetDown(f"target command did not answer the health probe within {self.start_timeout:g} s of a restart")

    async def wait_ready(self) -> bool:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            result = await self.probe.check()
            if result.ok:
                return True
            await asyncio.sleep(0.1)
        return False

    # -- replay -------------------------------------------------------------------------------

    async def replay(self, frame_groups: Sequence[Sequence[bytes]], expected: AnomalyClass,
                     evidence: str | None = None) -> bool:
        """Replay cases (each a list of frames) on a healthy target; True if `expected` recurs.

        With `evidence` (the normalised crash report or stack of the original), the target must
        show that same evidence again: the same class from another fault is not a reproduction.
        """
        if not await self.restore():
            return False
        runner = self.runner_factory()
        runner.grace = 0.0
        if expected is AnomalyClass.SLOW_REPLY:
            runner.timeout = runner.silence_timeout = max(self.grace, self.slow_threshold * 2)
        if expected is AnomalyClass.CONNECTION_RESET:
            runner.timeout = runner.silence_timeout = max(runner.timeout, RESET_WAIT)
        outcome: CaseOutcome | None = None
        self.fatal = None
        try:
            for index, frames in enumerate(frame_groups):
                outcome = await runner.run_frames(tuple(frames))
                if expected is AnomalyClass.CONNECTION_RESET and _dropped_after_valid(outcome):
                    return True  # the first valid request the peer drops the connection on is the trigger
                if expected is AnomalyClass.CRASH and outcome.kind not in ANSWERED and await self._gone(outcome):
                    # what comes after went to a dead target: it cannot be part of the reproducer
                    self.fatal = index if outcome.detail != "connection refused" or index == 0 else index - 1
                    break
        finally:
            runner.drop()
        if outcome is None:
            self.fatal = None
            return False
        if expected is AnomalyClass.SLOW_REPLY:
            if outcome.kind not in ANSWERED or outcome.latency <= self.slow_threshold:
                return False
            after = await self.probe.check()  # slow while the probe is not: the request, not the target
            return after.ok and after.reason == "ok"
        if expected is AnomalyClass.CONNECTION_RESET:
            return False  # no frame was dropped (see the loop)
        if not expected.target_level:
            return REPLY_CANDIDATES.get(outcome.kind) is expected
        if expected is AnomalyClass.CRASH:
            await asyncio.sleep(0.05)  # give a dying process a moment to go
        diagnosis = await self.diagnose(None)
        if diagnosis.anomaly is None or diagnosis.anomaly.family != expected.family:
            return False
        if evidence is not None:
            return diagnosis.evidence is not None and diagnosis.evidence.report == evidence
        return True

    async def _gone(self, outcome: CaseOutcome) -> bool:
        """Whether the target is dead after a frame it did not answer: its process has exited,
        or (a target otfuzz did not start) it refuses connections. A dying process closes its
        connections a moment before it can be reaped, so a close is given that moment: seen only
        at the next frame, the death would be blamed on the frame after the one that caused it."""
        if self.process is None:
            return outcome.detail == "connection refused"
        waits = DEATH_WAIT_STEPS if outcome.kind in (ReplyKind.CLOSED, ReplyKind.RESET) else 0
        for _ in range(waits):
            if self.process.poll() is not None:
                return True
            await asyncio.sleep(DEATH_WAIT_S / DEATH_WAIT_STEPS)
        return self.process.poll() is not None

    async def confirm_and_minimise(self, anomaly: AnomalyClass, history: Sequence[TestCase], minimise: bool = True,
                                   evidence: str | None = None, deadline: float | None = None,
                                   suspect: TestCase | None = None) -> dict[str, object]:
        """Confirm by replay, then shrink; returns the `reproducible`, `confirmation` and `reproducer` records.

        Confirmation replays the case alone, then the whole sequence since the last healthy probe.
        Minimisation works on frames (each sent on its own and answered before the next, as
        `otfuzz replay --anomaly` sends them), then on the bytes of the final frame. It must not
        drift to another defect of the same class: a trial counts only if the target shows the
        original's evidence (when it had any), and a shrunk final frame must keep its request
        type and break no rule the unshrunk one did not. Trials stop at `deadline` (monotonic),
        keeping the smallest reproducer found so far.
        """
        from otfuzz.engine.findings import trigger_of

        started = time.monotonic()
        last = history[-1]
        trials = 0
        sequence: list[TestCase] | None = None
        alone = [last] if suspect is None or suspect.case_id == last.case_id else [suspect, last]
        for candidate in alone:  # the case the target most likely choked on first, alone
            trials += 1
            if await self.replay([candidate.frames], anomaly, evidence):
                sequence = [candidate]
                break
        if sequence is None and len(history) > 1:
            trials += 1
            if await self.replay([c.frames for c in history], anomaly, evidence):
                sequence = list(history) if self.fatal is None else list(history[: self.fatal + 1])
        complete, settled = True, False

        def result(reproducible: bool, cases: Sequence[TestCase], frames: Sequence[bytes], minimised: bool) -> dict[str, object]:
            return {
                "reproducible": reproducible,
                "confirmation": {"method": self._method(), "trials": trials, "replayed_cases": len(history),
                                 "seconds": round(time.monotonic() - started, 3)},
                "reproducer": {"case_ids": [c.case_id for c in cases], "frames_hex": [f.hex() for f in frames],
                               "minimised": minimised, "minimisation_complete": minimised and complete,
                               "values_settled": minimised and complete and settled},
            }

        if sequence is None:
            await self.restore()
            return result(False, history, [f for c in history for f in c.frames], False)
        frames = [f for c in sequence for f in c.frames]
        if not minimise:
            return result(True, sequence, frames, False)
        budget = self.minimise_budget

        async def frames_reproduce(subset: list[bytes]) -> bool:
            nonlocal complete
            if deadline is not None and time.monotonic() > deadline:
                complete = False
                return False
            return await self.replay([[f] for f in subset], anomaly, evidence)

        def until_fatal(subset: list[bytes]) -> list[bytes]:
            # A crash replay that found the target dead after frame k: the frames after it went to
            # a dead target, so the reproducer is the first k + 1 (else the frame sent last, which
            # the finding is labelled by, may be one the target never read).
            return subset if self.fatal is None else subset[: self.fatal + 1]

        trials += 1
        if len(frames) > 1:
            if not await frames_reproduce(frames):
                await self.restore()  # only reproduces with the frames grouped into their cases
                return result(True, sequence, frames, False)
            frames = until_fatal(frames)
        if len(frames) > 1 and budget > 0:
            frames, used = await ddmin(frames, frames_reproduce, budget, recheck=True, trim=until_fatal)
            trials += used
            budget -= used
        prefix, final = frames[:-1], frames[-1]

        async def with_final(candidate: bytes) -> bool:
            # the prefix with another final frame: it counts only if that frame is the one the
            # target died on (a prefix frame killing it says nothing about the candidate)
            return await frames_reproduce(prefix + [candidate]) and self.fatal in (None, len(prefix))
        # Field-aware first: undo one departure from the valid request at a time, keeping each
        # that still reproduces with fewer rules broken (a subset: never a new fault) or, as
        # many, fewer fields off the template's values: what is left is what the defect needs.
        current = trigger_of(self.protocol, final)
        off = len(self.values.of(final))
        improved, settled = True, False
        while improved and budget > 0:
            improved = False
            for candidate in simpler_frames(self.protocol, final):
                now = trigger_of(self.protocol, candidate)
                if now.request_type != current.request_type or not set(now.rules) <= set(current.rules):
                    continue
                now_off = len(self.values.of(candidate))
                if not (set(now.rules) < set(current.rules) or now_off < off):
                    continue
                trials += 1
                budget -= 1
                if await with_final(candidate):
                    final, current, off, improved = candidate, now, now_off, True
                    break
                if budget <= 0:
                    break
            else:
                settled = not improved  # every simpler candidate was tried: none reproduced
        if budget > 0 and len(final) > 1:
            start = trigger_of(self.protocol, final)
            allowed = set(start.rules)

            async def bytes_reproduce(kept: list[int]) -> bool:
                shrunk = bytes(kept)
                now = trigger_of(self.protocol, shrunk)
                if now.request_type != start.request_type or not set(now.rules) <= allowed:
                    return False  # another request, or a new fault: another defect, not this one
                return await with_final(shrunk)

            kept, used = await ddmin(list(final), bytes_reproduce, budget)
            trials += used
            final = bytes(kept)
        await self.restore()
        return result(True, sequence, prefix + [final], True)

    def _method(self) -> str:
        if self.process is not None:
            return ("replayed on a fresh connection; before every trial the health probe must pass, "
                    "and otfuzz restarts the target (--target-cmd) when it does not")
        return "replayed on a fresh connection; before every trial the target must have recovered and pass the health probe"
