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


READ_INPUTS = bytes.fromhex("000400000006010400000001")


def test_a_late_answer_is_read_on_its_parked_connection_and_never_taken_for_the_next_case(faulty_server) -> None:
    from otfuzz.engine.cases import TestCase

    host, port = faulty_server("slow:4")  # fc 4 answers come 400 ms late; everything else at once

    async def run() -> tuple:
        runner = CaseRunner(ModbusTCP(), host, port, timeout=0.05, grace=2.0)
        try:
            slow = await runner.run(TestCase(1, "boundary", (READ_INPUTS,), "read_input_registers", "slow one"))
            fast = await runner.run(TestCase(2, "boundary", (VALID_READ,), "read_holding_registers", "next one"))
            late = await runner.await_late(1, __import__("time").perf_counter() + 2.0)
        finally:
            runner.drop()
        return slow, fast, late

    slow, fast, late = asyncio.run(run())
    assert slow.kind is ReplyKind.NO_REPLY
    assert fast.kind is ReplyKind.NORMAL and fast.reply[:2] == VALID_READ[:2]  # its own answer, on a fresh connection
    assert late is not None and late.case.case_id == 1 and late.kind is ReplyKind.NORMAL
    assert late.reply[:2] == READ_INPUTS[:2] and 0.35 < late.latency < 1.5


def test_a_healthy_target_that_resets_on_garbage_is_not_an_anomaly_but_on_a_valid_request_it_is(faulty_server) -> None:
    from otfuzz.monitor.anomaly import AnomalyClass, first_look

    host, port = faulty_server("reset:15")  # any fc 15 frame: RST

    async def run() -> tuple:
        protocol = ModbusTCP()
        runner = CaseRunner(protocol, host, port, timeout=0.5)
        template = next(t for t in protocol.templates() if t.name == "write_multiple_coils")
        try:
            garbage = await runner.run_frames([template.encode(byte_count=9)])
            valid = await runner.run_frames([template.encode()])
        finally:
            runner.drop()
        return garbage, valid

    garbage, valid = asyncio.run(run())
    assert garbage.kind in (ReplyKind.RESET, ReplyKind.CLOSED) and not garbage.request_valid
    assert first_look(garbage.kind, garbage.request_valid, 0) == (False, None)  # a legitimate rejection
    assert valid.kind in (ReplyKind.RESET, ReplyKind.CLOSED) and valid.request_valid
    assert first_look(valid.kind, valid.request_valid, 0) == (True, AnomalyClass.CONNECTION_RESET)
