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


def test_a_frame_that_needs_a_fresh_connection_gets_one_also_after_other_frames() -> None:
    """MQTT: a CONNECT case after a valid prefix tests the handshake, on its own connection;
    sent on the prefix's connection it would be a second CONNECT, which the broker refuses."""
    from targets.mosquitto_broker import start_broker
    from targets.servers import HOST, free_port, stop_server

    from otfuzz.protocols.mqtt import MQTT

    proto = MQTT({"version": "4"})
    by_name = {t.name: t.encode() for t in proto.templates()}
    port = free_port()
    proc = start_broker(port)

    async def run() -> tuple:
        runner = CaseRunner(proto, HOST, port, timeout=1.0)
        try:
            after_prefix = await runner.run_frames([by_name["subscribe"], by_name["connect"]])
            reused = runner.conn
            again = await runner.run_frames([by_name["pingreq"]])
        finally:
            runner.drop()
        return after_prefix, reused, again

    try:
        after_prefix, reused, again = asyncio.run(run())
    finally:
        stop_server(proc)
    assert after_prefix.kind is ReplyKind.NORMAL and after_prefix.frame_index == 1
    assert after_prefix.detail == "CONNACK return code 0 (Connection Accepted)"
    assert reused is None  # a connection that skipped the handshake is never reused
    assert again.kind is ReplyKind.NORMAL


def test_a_close_after_a_request_the_target_may_refuse_is_no_candidate() -> None:
    """mosquitto resets the connection on a control character in a topic, which MQTT lets a
    broker refuse (Protocol.may_reject): the outcome carries that reason, so it is no anomaly."""
    from targets.mosquitto_broker import start_broker
    from targets.servers import HOST, free_port, stop_server

    from otfuzz.monitor.anomaly import first_look
    from otfuzz.protocols.mqtt import MQTT

    proto = MQTT({"version": "4"})
    publish = next(t for t in proto.templates() if t.name == "publish_qos1").encode(topic=b"otfuzz/\x0b")
    port = free_port()
    proc = start_broker(port)

    async def run():
        runner = CaseRunner(proto, HOST, port, timeout=1.0)
        try:
            return await runner.run_frames([publish])
        finally:
            runner.drop()

    try:
        outcome = asyncio.run(run())
    finally:
        stop_server(proc)
    assert proto.check_request(publish) == []
    assert outcome.kind in (ReplyKind.RESET, ReplyKind.CLOSED)
    assert outcome.request_problems == ("topic contains the control character U+000B",)
    assert first_look(outcome.kind, outcome.request_valid, 0) == (False, None)


def test_a_connection_the_peer_announced_to_end_carries_no_further_case() -> None:
    """An MQTT 5 broker sends DISCONNECT and then closes: the next case must not be written
    into the closing connection (it would be reset and look like the target's fault)."""
    from targets.mosquitto_broker import start_broker
    from targets.servers import HOST, free_port, stop_server

    from otfuzz.protocols.mqtt import MQTT

    proto = MQTT({"version": "5"})
    by_name = {t.name: t for t in proto.templates()}
    port = free_port()
    proc = start_broker(port)

    async def run() -> tuple:
        runner = CaseRunner(proto, HOST, port, timeout=1.0)
        try:
            refused = await runner.run_frames([by_name["publish_qos1"].encode(packet_id=0)])
            ended = runner.conn is not None and runner.conn.session.ended
            alive = runner.conn is not None and runner.conn.alive
            after = await runner.run_frames([by_name["publish_qos0"].encode(), by_name["pubrel"].encode()])
        finally:
            runner.drop()
        return refused, ended, alive, after

    try:
        refused, ended, alive, after = asyncio.run(run())
    finally:
        stop_server(proc)
    assert refused.kind is ReplyKind.EXCEPTION and refused.detail == "DISCONNECT 0x82 Protocol Error"
    assert ended and not alive
    assert after.kind is ReplyKind.NORMAL and after.detail == "PUBCOMP 0x00 Success"


def test_a_case_does_not_go_on_after_a_frame_that_ended_the_connection() -> None:
    """A sequence with an MQTT DISCONNECT in its prefix: the frames after it would be written
    into a closing connection and reset; the case ends at the DISCONNECT instead."""
    from targets.mosquitto_broker import start_broker
    from targets.servers import HOST, free_port, stop_server

    from otfuzz.protocols.mqtt import MQTT

    proto = MQTT({"version": "4"})
    by_name = {t.name: t.encode() for t in proto.templates()}
    port = free_port()
    proc = start_broker(port)

    async def run() -> tuple:
        runner = CaseRunner(proto, HOST, port, timeout=1.0)
        try:
            ended = await runner.run_frames([by_name["subscribe"], by_name["disconnect"], by_name["pingreq"]])
            after = await runner.run_frames([by_name["pingreq"]])
        finally:
            runner.drop()
        return ended, after

    try:
        ended, after = asyncio.run(run())
    finally:
        stop_server(proc)
    assert ended.kind is ReplyKind.CLOSED and ended.frame_index == 1 and ended.request_valid
    assert after.kind is ReplyKind.NORMAL


def test_an_unanswered_frame_with_bytes_past_its_framing_drops_the_connection() -> None:
    """A PUBACK followed by the start of a packet that never completes: left on the connection,
    the next case's bytes would complete that packet and the broker would reset the connection."""
    from targets.mosquitto_broker import start_broker
    from targets.servers import HOST, free_port, stop_server

    from otfuzz.protocols.mqtt import MQTT

    proto = MQTT({"version": "4"})
    by_name = {t.name: t.encode() for t in proto.templates()}
    stray = by_name["puback"] + bytes([0x30, 60]) + b"x" * 20  # a PUBLISH of 60 bytes, 20 present
    port = free_port()
    proc = start_broker(port)

    async def run() -> tuple:
        runner = CaseRunner(proto, HOST, port, timeout=1.0)
        try:
            first = await runner.run_frames([stray])
            kept = runner.conn
            second = await runner.run_frames([by_name["read_retained"]])
        finally:
            runner.drop()
        return first, kept, second

    try:
        first, kept, second = asyncio.run(run())
    finally:
        stop_server(proc)
    assert first.kind is ReplyKind.NO_REPLY and kept is None
    assert second.kind is ReplyKind.NORMAL
