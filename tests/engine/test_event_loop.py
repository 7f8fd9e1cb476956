"""Campaigns, stress runs and plans run on uvloop's event loop where it is installed (a fraction
of the standard loop's cost per wake-up and write); OTFUZZ_EVENT_LOOP=asyncio picks the standard
loop; either way a signal still asks the job to stop."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from otfuzz.engine.stopping import run_until_stopped

uvloop = pytest.importorskip("uvloop")


class _Job:
    def __init__(self) -> None:
        self.stop_requested = False
        self.reason = ""

    def request_stop(self, reason: str = "") -> None:
        self.stop_requested, self.reason = True, reason


def _run(job: _Job) -> str:
    async def main() -> str:
        os.kill(os.getpid(), signal.SIGTERM)  # routed to the job, not the default handler
        for _ in range(200):
            if job.stop_requested:
                break
            await asyncio.sleep(0.005)
        return type(asyncio.get_running_loop()).__module__

    return run_until_stopped(job, main)


def test_a_job_runs_on_uvloop_and_a_signal_asks_it_to_stop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTFUZZ_EVENT_LOOP", raising=False)
    job = _Job()
    assert _run(job).startswith("uvloop") and job.reason == "stopped by operator (signal)"


def test_the_standard_loop_can_be_chosen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTFUZZ_EVENT_LOOP", "asyncio")
    job = _Job()
    assert _run(job).startswith("asyncio") and job.stop_requested
