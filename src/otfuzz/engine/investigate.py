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
from otfuzz.engine.minimise import ddmin
from otfuzz.monitor.anomaly import REPLY_CANDIDATES, AnomalyClass
from otfuzz.monitor.probe import HealthProbe, ProbeResult
from otfuzz.monitor.process import ExitInfo, TargetProcess
from otfuzz.protocols.base import Protocol


@dataclass
class Diagnosis:
    anomaly: AnomalyClass | None
    probes: list[ProbeResult] = field(default_factory=list)
    exit: ExitInfo | None = None
    recovered: bool = True
    note: str = ""


class TargetDown(Exception):
    """The target did not come back: the campaign cannot go on."""


class Investigator:
    def __init__(self, protocol: Protocol, probe: HealthProbe, runner_factory: Callable[[], CaseRunner],
                 process: TargetProcess | None, recovery_timeout: float, minimise_budget: int,
                 log: Callable[[str, str], None], start_timeout: float = 15.0) -> None:
        self.protocol = protocol
        self.probe = probe
        self.runner_factory = runner_factory
        self.process = process
        self.recovery_timeout = recovery_timeout
        self.minimise_budget = minimise_budget
        self.log = log
        self.start_timeout = start_timeout

    # -- diagnosis ----------------------------------------------------------------------------

    async def diagnose(self, candidate: AnomalyClass | None) -> Diagnosis:
        """Probe the target and name what is wrong (None: healthy and nothing to report)."""
        first = await self.probe.check()
        probes = [first]
        exit_info = self.process.poll() if self.process else None
        if exit_info is not None or first.reason == "refused":
            return Diagnosis(AnomalyClass.CRASH, probes, exit_info, recovered=False)
        if not first.ok:
            recovered, more = await self._wait_for_recovery()
            probes += more
            exit_info = self.process.poll() if self.process else None
            if exit_info is not None:
                return Diagnosis(AnomalyClass.CRASH, probes, exit_info, recovered=False)
            return Diagnosis(AnomalyClass.HANG if recovered else AnomalyClass.UNRESPONSIVE_AFTER, probes, recovered=recovered)
        if first.reason == "slow":
            more = await self.probe.settle(2)
            probes += more
            if self._slow(probes):
                return Diagnosis(AnomalyClass.DEGRADATION, probes)
        return Diagnosis(candidate, probes)

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

    async def replay(self, frame_groups: Sequence[Sequence[bytes]], expected: AnomalyClass) -> bool:
        """Replay cases (each a list of frames) on a healthy target; True if `expected` recurs."""
        if not await self.restore():
            return False
        runner = self.runner_factory()
        outcome: CaseOutcome | None = None
        try:
            for frames in frame_groups:
                outcome = await runner.run_frames(tuple(frames))
        finally:
            runner.drop()
        if outcome is None:
            return False
        if not expected.target_level:
            return REPLY_CANDIDATES.get(outcome.kind) is expected
        if expected is AnomalyClass.CRASH:
            await asyncio.sleep(0.05)  # give a dying process a moment to go
        diagnosis = await self.diagnose(None)
        return diagnosis.anomaly is not None and diagnosis.anomaly.family == expected.family

    async def confirm_and_minimise(self, anomaly: AnomalyClass, history: Sequence[TestCase], minimise: bool = True) -> dict[str, object]:
        """Confirm by replay, then shrink; returns the `reproducible`, `confirmation` and `reproducer` records.

        Confirmation replays the case alone, then the whole sequence since the last healthy probe.
        Minimisation works on frames (each sent on its own and answered before the next, as
        `otfuzz replay --anomaly` sends them), then on the bytes of the final frame.
        """
        started = time.monotonic()
        last = history[-1]
        trials = 1
        sequence: list[TestCase] | None = None
        if await self.replay([last.frames], anomaly):
            sequence = [last]
        elif len(history) > 1:
            trials += 1
            if await self.replay([c.frames for c in history], anomaly):
                sequence = list(history)

        def result(reproducible: bool, cases: Sequence[TestCase], frames: Sequence[bytes], minimised: bool) -> dict[str, object]:
            return {
                "reproducible": reproducible,
                "confirmation": {"method": self._method(), "trials": trials, "replayed_cases": len(history),
                                 "seconds": round(time.monotonic() - started, 3)},
                "reproducer": {"case_ids": [c.case_id for c in cases], "frames_hex": [f.hex() for f in frames], "minimised": minimised},
            }

        if sequence is None:
            await self.restore()
            return result(False, history, [f for c in history for f in c.frames], False)
        frames = [f for c in sequence for f in c.frames]
        if not minimise:
            return result(True, sequence, frames, False)
        budget = self.minimise_budget

        async def frames_reproduce(subset: list[bytes]) -> bool:
            return await self.replay([[f] for f in subset], anomaly)

        trials += 1
        if len(frames) > 1 and not await frames_reproduce(frames):
            await self.restore()  # only reproduces with the frames grouped into their cases
            return result(True, sequence, frames, False)
        if len(frames) > 1 and budget > 0:
            frames, used = await ddmin(frames, frames_reproduce, budget)
            trials += used
            budget -= used
        prefix, final = frames[:-1], frames[-1]
        if budget > 0 and len(final) > 1:
            async def bytes_reproduce(kept: list[int]) -> bool:
                return await frames_reproduce(prefix + [bytes(kept)])

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
