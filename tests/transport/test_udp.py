"""The UDP transport against a real BACnet/IP device (bacpypes3 on loopback): replies matched by
invoke id, timeouts, ICMP refusals as the crash signal, source-port modes, the rate cap across
datagrams and the scope."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from otfuzz.cli import main
from otfuzz.engine.executor import CaseRunner
from otfuzz.engine.cases import TestCase
from otfuzz.engine.generator import CaseGenerator
from otfuzz.monitor.probe import HealthProbe
from otfuzz.protocols.bacnet import PRESENT_VALUE, READ_PROPERTY_TYPE, BACnetIP, object_identifier
from otfuzz.protocols.base import ReplyKind
from otfuzz.report.results import load_results
from otfuzz.transport import open_connection
from targets.servers import free_port

DEVICE = object_identifier(8, 999)
ANALOG_VALUE_1 = object_identifier(2, 1)
BINARY_VALUE_1 = object_identifier(5, 1)


def _protocol(**options: str) -> BACnetIP:
    return BACnetIP({"device": "999", **options})


def _read(object_id: int) -> bytes:
    return READ_PROPERTY_TYPE.encode(object_id=object_id, property_id=PRESENT_VALUE)


def test_a_late_reply_to_an_earlier_invoke_id_is_not_taken_for_the_current_one(bacnet_device) -> None:
    host, port = bacnet_device
    protocol = _protocol()

    async def run() -> tuple:
        conn = await open_connection(protocol, host, port, 1.0)
        try:
            # does not wait at all: its reply arrives while the next request waits for its own
            first = await conn.exchange(_read(ANALOG_VALUE_1), 1.0, expect_reply=False)
            second = await conn.exchange(_read(BINARY_VALUE_1), 1.0)
            await asyncio.sleep(0.05)
            third = await conn.exchange(_read(ANALOG_VALUE_1), 1.0)
        finally:
            conn.close()
        return first, second, third

    first, second, third = asyncio.run(run())
    assert first.outcome == "timeout"
    assert second.outcome == "reply" and third.outcome == "reply"
    assert protocol.classify(_read(BINARY_VALUE_1), second.reply).detail == "ReadProperty-ACK binary-value,1 present-value"
    assert protocol.classify(_read(ANALOG_VALUE_1), third.reply).detail == "ReadProperty-ACK analog-value,1 present-value"
    assert (second.reply[7], third.reply[7]) == (1, 2)  # invoke ids 0, 1, 2: the answer to 0 came late and was dropped


def test_silence_is_a_timeout_of_the_given_length(bacnet_device) -> None:
    host, port = bacnet_device
    protocol = _protocol()
    dropped = bytes.fromhex("810a001001040245000c0c0080001955")  # object identifier cut short: bacpypes3 drops it

    async def run():
        conn = await open_connection(protocol, host, port, 1.0)
        try:
            return await conn.exchange(dropped, 0.2)
        finally:
            conn.close()

    result = asyncio.run(run())
    assert result.outcome == "timeout" and result.reply is None and 0.15 < result.latency < 1.0


def test_nothing_listening_is_refused_and_the_probe_calls_it_refused() -> None:
    port = free_port(socket.SOCK_DGRAM)
    protocol = _protocol()

    async def run() -> tuple:
        conn = await open_connection(protocol, "127.0.0.1", port, 1.0)
        try:
            exchange = await conn.exchange(protocol.probe().frame, 1.0)
        finally:
            conn.close()
        probe = await HealthProbe(protocol, "127.0.0.1", port, 1.0).check()
        runner = CaseRunner(protocol, "127.0.0.1", port, 1.0)
        try:
            outcome = await runner.run_frames([bytes.fromhex("810a0005ff")])  # a malformed frame, refused all the same
        finally:
            runner.drop()
        return exchange, probe, outcome

    exchange, probe, outcome = asyncio.run(run())
    assert exchange.outcome == "refused" and exchange.latency < 0.5
    assert not probe.ok and probe.reason == "refused"
    # Like a refused TCP connect: says nothing about the request, so even a malformed one is a candidate.
    assert outcome.kind is ReplyKind.RESET and outcome.detail == "connection refused" and outcome.request_valid


def _ports_of_cases(host: str, port: int, protocol: BACnetIP, frames: list[bytes]) -> list[int]:
    async def run() -> list[int]:
        runner = CaseRunner(protocol, host, port, 0.5)
        ports = []
        try:
            for i, frame in enumerate(frames):
                conn = await runner.connect()
                ports.append(conn.local_address[1])
                await runner.run(TestCase(i, "boundary", (frame,), "read_property", "test"))
        finally:
            runner.drop()
        return ports

    return asyncio.run(run())


def test_fixed_source_port_is_kept_across_cases_even_after_silence(bacnet_device) -> None:
    host, port = bacnet_device
    dropped = bytes.fromhex("810a001001040245000c0c0080001955")
    ports = _ports_of_cases(host, port, _protocol(), [_read(ANALOG_VALUE_1), dropped, _read(ANALOG_VALUE_1), dropped])
    assert len(set(ports)) == 1


def test_fresh_source_port_sends_every_case_from_a_new_port(bacnet_device) -> None:
    host, port = bacnet_device
    ports = _ports_of_cases(host, port, _protocol(source_port="fresh"), [_read(ANALOG_VALUE_1)] * 4)
    assert len(set(ports)) == 4


def test_source_port_option_is_validated() -> None:
    from otfuzz.errors import OtfuzzError

    with pytest.raises(OtfuzzError, match="source_port='sometimes' is not fixed or fresh"):
        _protocol(source_port="sometimes")


def test_rate_cap_holds_across_datagrams_and_workers(bacnet_device, tmp_path: Path) -> None:
    host, port = bacnet_device
    run = tmp_path / "run"
    assert main(["run", f"bacnet://{host}:{port}?device=999", "--cases", "40", "--rate", "40", "--concurrency", "2",
                 "--seed", "4", "--out", str(run), "--quiet", "--no-confirm", "--read-only"]) == 0
    doc = load_results(run)
    assert doc["totals"]["cases"] == 40
    assert doc["campaign"]["fuzzing_s"] >= 39 / 40  # 40 cases at least 1/40 s apart


def test_targets_outside_the_scope_are_refused_before_a_datagram_leaves(tmp_path: Path, capsys) -> None:
    assert main(["run", "bacnet://192.0.2.10:47808?device=999", "--cases", "5", "--out", str(tmp_path / "r")]) == 2
    assert "outside the declared scope" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_frames_a_device_would_relay_are_never_made_nor_sent_for_a_target_off_loopback() -> None:
    protocol = _protocol()
    generator = CaseGenerator(protocol, seed=5, loopback=False)
    assert not [c for c in map(generator.case, range(3000)) for f in c.frames if protocol.loopback_only(f)]
    on_loopback = CaseGenerator(protocol, seed=5)
    relayed = [f for c in map(on_loopback.case, range(3000)) for f in c.frames if protocol.loopback_only(f)]
    assert relayed  # the same campaign on loopback does send broadcasts and routed NPDUs

    async def run():
        runner = CaseRunner(protocol, "192.0.2.10", 47808, 0.5)  # TEST-NET: nothing is sent, so nothing may answer
        return await runner.run_frames([relayed[0]])

    outcome = asyncio.run(run())
    assert outcome.kind is ReplyKind.NO_REPLY and outcome.detail.startswith("not sent: ")
