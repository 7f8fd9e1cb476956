"""The case runner against a real server: valid requests get the full reply timeout, requests the
specification says to reject get the shorter silence timeout."""

from __future__ import annotations

import asyncio

from otfuzz.engine.executor import CaseRunner
from otfuzz.protocols.base import ReplyKind
from otfuzz.protocols.modbus import ModbusTCP

VALID_READ = bytes.fromhex("000100000006010300000001")
QUANTITY_ZERO = bytes.fromhex("000200000006010300000000")  # the faulty server rejects it with exception 3


def test_valid_requests_wait_the_full_timeout_and_rejected_ones_only_the_silence_timeout(faulty_server) -> None:
    host, port = faulty_server("degrade:4", degrade_ms=300)  # every reply after an fc 4 request is 300 ms late

    async def run() -> tuple:
        runner = CaseRunner(ModbusTCP(), host, port, timeout=1.5, silence_timeout=0.05)
        try:
            await runner.run_frames([bytes.fromhex("000300000006010400000001")])  # switch the slowness on
            valid = await runner.run_frames([VALID_READ])
            rejected = await runner.run_frames([QUANTITY_ZERO])
        finally:
            runner.drop()
        return valid, rejected

    valid, rejected = asyncio.run(run())
    assert valid.kind is ReplyKind.NORMAL and valid.latency >= 0.25
    assert rejected.kind is ReplyKind.NO_REPLY and rejected.latency < 0.25
    assert rejected.request_problems  # it was judged invalid, which is why it waited less
