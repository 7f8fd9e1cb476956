"""The case runner against real servers: valid requests get the full reply timeout, requests the
specification says to reject get the shorter silence timeout; and, against mosquitto, how it
keeps cases off connections that need a fresh handshake, have ended, or are out of step."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import pytest
from targets.mosquitto_broker import running_broker
from targets.servers import HOST

from otfuzz.engine.executor import CaseRunner
from otfuzz.monitor.anomaly import first_look
from otfuzz.protocols.base import ReplyKind, Template
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.protocols.mqtt import MQTT

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

# pymodbus 3.16.1 answers it, by its transaction id, with a record of the wrong length
READ_FILE_RECORD = bytes.fromhex("00010000000a01140706100000010002")
READ_HOLDING = bytes.fromhex("000200000006010300000001")  # the faulty server's malformed:3 answers it with id 3


def _malformed_then_valid(host: str, port: int, malformed: bytes, valid: bytes) -> tuple:
    """(the malformed answer's outcome, was its connection kept?, the next case's outcome, on it?)."""

    async def run() -> tuple:
        runner = CaseRunner(ModbusTCP(), host, port, timeout=1.0)
        try:
            first = await runner.run_frames([valid])
            assert first.kind is ReplyKind.NORMAL
            conn = runner.conn
            bad = await runner.run_frames([malformed])
            kept = runner.conn is conn
            after = await runner.run_frames([valid])
            return bad, kept, after, runner.conn is conn
        finally:
            runner.drop()

    return asyncio.run(run())


def test_a_malformed_answer_that_carries_its_requests_id_keeps_the_connection_and_one_with_another_id_replaces_it(
        pymodbus_server, faulty_server) -> None:
    """A well-framed answer to exactly the one request in flight, wrong only in what it says,
    leaves the stream in step; an answer with another transaction id may belong to anything."""
    bad, kept, after, same = _malformed_then_valid(*pymodbus_server, READ_FILE_RECORD, VALID_READ)
    assert bad.kind is ReplyKind.MALFORMED and "record data" in bad.detail and bad.reply[:2] == READ_FILE_RECORD[:2]
    assert kept and same
    assert after.kind is ReplyKind.NORMAL and after.reply[:2] == VALID_READ[:2]

    host, port = faulty_server("malformed:3")
    bad, kept, after, _ = _malformed_then_valid(host, port, READ_HOLDING, READ_INPUTS)
    assert bad.kind is ReplyKind.MALFORMED and "wrong transaction id" in bad.detail
    assert not kept
    assert after.kind is ReplyKind.NORMAL and after.reply[:2] == READ_INPUTS[:2]


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[int]:
    with running_broker() as port:
        yield port


def _on_mqtt(port: int, version: str, body: Callable[[CaseRunner, dict[str, Template]], Awaitable[tuple]]) -> tuple:
    """Run `body` with a CaseRunner for MQTT `version` against the broker, and its templates by name."""
    proto = MQTT({"version": version})

    async def run() -> tuple:
        runner = CaseRunner(proto, HOST, port, timeout=1.0)
        try:
            return await body(runner, {t.name: t for t in proto.templates()})
        finally:
            runner.drop()

    return asyncio.run(run())


def test_a_frame_that_needs_a_fresh_connection_gets_one_also_after_other_frames(mosquitto: int) -> None:
    """MQTT: a CONNECT case after a valid prefix tests the handshake, on its own connection;
    sent on the prefix's connection it would be a second CONNECT, which the broker refuses."""
    async def body(runner: CaseRunner, t: dict[str, Template]) -> tuple:
        after_prefix = await runner.run_frames([t["subscribe"].encode(), t["connect"].encode()])
        reused = runner.conn
        return after_prefix, reused, await runner.run_frames([t["pingreq"].encode()])

    after_prefix, reused, again = _on_mqtt(mosquitto, "4", body)
    assert after_prefix.kind is ReplyKind.NORMAL and after_prefix.frame_index == 1
    assert after_prefix.detail == "CONNACK return code 0 (Connection Accepted)"
    assert reused is None  # a connection that skipped the handshake is never reused
    assert again.kind is ReplyKind.NORMAL


def test_a_close_after_a_request_the_target_may_refuse_is_no_candidate(mosquitto: int) -> None:
    """mosquitto resets the connection on a control character in a topic, which MQTT lets a
    broker refuse (Protocol.may_reject): the outcome carries that reason, so it is no anomaly."""
    async def body(runner: CaseRunner, t: dict[str, Template]) -> tuple:
        return (await runner.run_frames([t["publish_qos1"].encode(topic=b"otfuzz/\x0b")]),)

    (outcome,) = _on_mqtt(mosquitto, "4", body)
    assert outcome.kind in (ReplyKind.RESET, ReplyKind.CLOSED)
    assert outcome.request_problems == ("topic contains the control character U+000B",)
    assert first_look(outcome.kind, outcome.request_valid, 0) == (False, None)


def test_a_connection_the_peer_announced_to_end_carries_no_further_case(mosquitto: int) -> None:
    """An MQTT 5 broker sends DISCONNECT and then closes: the next case must not be written
    into the closing connection (it would be reset and look like the target's fault)."""
    async def body(runner: CaseRunner, t: dict[str, Template]) -> tuple:
        refused = await runner.run_frames([t["publish_qos1"].encode(packet_id=0)])
        ended = runner.conn is not None and runner.conn.session.ended
        alive = runner.conn is not None and runner.conn.alive
        return refused, ended, alive, await runner.run_frames([t["publish_qos0"].encode(), t["pubrel"].encode()])

    refused, ended, alive, after = _on_mqtt(mosquitto, "5", body)
    assert refused.kind is ReplyKind.EXCEPTION and refused.detail == "DISCONNECT 0x82 Protocol Error"
    assert ended and not alive
    assert after.kind is ReplyKind.NORMAL and after.detail == "PUBCOMP 0x00 Success"


def test_a_case_does_not_go_on_after_a_frame_that_ended_the_connection(mosquitto: int) -> None:
    """A sequence with an MQTT DISCONNECT in its prefix: the frames after it would be written
    into a closing connection and reset; the case ends at the DISCONNECT instead."""
    async def body(runner: CaseRunner, t: dict[str, Template]) -> tuple:
        frames = [t["subscribe"].encode(), t["disconnect"].encode(), t["pingreq"].encode()]
        return await runner.run_frames(frames), await runner.run_frames([t["pingreq"].encode()])

    ended, after = _on_mqtt(mosquitto, "4", body)
    assert ended.kind is ReplyKind.CLOSED and ended.frame_index == 1
    assert ended.close_allowed and not ended.request_valid  # a DISCONNECT may end it: no connection reset
    assert after.kind is ReplyKind.NORMAL


def test_an_unanswered_frame_with_bytes_past_its_framing_drops_the_connection(mosquitto: int) -> None:
    """A PUBACK followed by the start of a packet that never completes: left on the connection,
    the next case's bytes would complete that packet and the broker would reset the connection."""
    async def body(runner: CaseRunner, t: dict[str, Template]) -> tuple:
        stray = t["puback"].encode() + bytes([0x30, 60]) + b"x" * 20  # a PUBLISH of 60 bytes, 20 present
        first = await runner.run_frames([stray])
        return first, runner.conn, await runner.run_frames([t["read_retained"].encode()])

    first, kept, second = _on_mqtt(mosquitto, "4", body)
    assert first.kind is ReplyKind.NO_REPLY and kept is None
    assert second.kind is ReplyKind.NORMAL
