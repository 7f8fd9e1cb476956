"""Captures of real exchanges, made once per session: pymodbus, dnp3py and c104 servers on
loopback, real clients through the recording relay, written as pcap/pcapng with dpkt."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from recording import Faults, Recorder, drive, record_capture
from targets.iec104_server import DEFAULT_CA
from targets.servers import free_port, script, start_server, stop_server

from otfuzz.protocols.dnp3 import DNP3
from otfuzz.protocols.iec104 import IEC104


@dataclass
class Captured:
    path: Path
    port: int  # the real server's port on 127.0.0.1
    requests: list[bytes]  # what the client sent, chunk by chunk


def _requests(connections: list) -> list[bytes]:
    return [data for c in connections for _, from_client, data in c.chunks if from_client]


@pytest.fixture(scope="session")
def modbus_server() -> Iterator[int]:
    port = free_port()
    proc = start_server([*script("pymodbus_server.py"), "--port", str(port)], port)
    try:
        yield port
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def modbus_capture(modbus_server: int, tmp_path_factory: pytest.TempPathFactory) -> Captured:
    """pymodbus's own client reading and writing pymodbus's server; the capture has a
    retransmitted segment, a request split into two segments arriving in reverse order and two
    overlapping segments. The server is written as 10.0.0.9:502 (recognised by port)."""
    from pymodbus.client import ModbusTcpClient

    recorder = Recorder(modbus_server)
    client = ModbusTcpClient("127.0.0.1", port=recorder.port, timeout=2)
    assert client.connect()
    try:
        assert client.read_holding_registers(17, count=3, device_id=1).registers == [17, 18, 19]
        client.write_register(40, 7, device_id=1)
        client.read_coils(5, count=8, device_id=1)
        client.read_input_registers(100, count=2, device_id=1)
    finally:
        client.close()
    connections = recorder.close()
    path = record_capture(tmp_path_factory.mktemp("cap") / "plant.pcap", connections, ("10.0.0.9", 502),
                          {0: Faults(retransmit={0}, reorder={2}, overlap={4})})
    return Captured(path, modbus_server, _requests(connections))


@pytest.fixture(scope="session")
def dnp3_capture(tmp_path_factory: pytest.TempPathFactory) -> Captured:
    """A class 0 read and a binary input read of the dnp3py outstation, on a non-standard port
    (recognised by parsing), as pcapng."""
    port = free_port()
    proc = start_server([*script("dnp3_outstation.py"), "--port", str(port)], port)
    try:
        protocol = DNP3({"outstation": "1", "master": "2"})
        recorder = Recorder(port)
        frames = [t.encode() for t in protocol.templates() if t.name in ("read_class_0", "read_binary_inputs")]
        frames = frames or [protocol.templates()[0].encode()]
        replies = drive(recorder.port, protocol.session(), frames + frames)
        assert all(r is not None for r in replies), replies
        connections = recorder.close()
    finally:
        stop_server(proc)
    path = record_capture(tmp_path_factory.mktemp("cap") / "rtu.pcapng", connections, ("10.0.0.20", 21000),
                          {0: Faults(retransmit={1})}, pcapng=True)
    return Captured(path, port, _requests(connections))


@pytest.fixture(scope="session")
def iec104_capture(tmp_path_factory: pytest.TempPathFactory) -> Captured:
    """STARTDT, a general interrogation and a scaled set point against c104, with an
    out-of-order segment."""
    port = free_port()
    proc = start_server([*script("iec104_server.py"), "--port", str(port), "--ca", str(DEFAULT_CA)], port)
    try:
        protocol = IEC104({"ca": str(DEFAULT_CA), "ioa": "14"})
        by_name = {t.name: t for t in protocol.templates()}
        frames = [by_name["general_interrogation"].encode(), by_name["set_point_scaled"].encode()]
        recorder = Recorder(port)
        replies = drive(recorder.port, protocol.session(), frames)
        assert all(r is not None for r in replies), replies
        connections = recorder.close()
    finally:
        stop_server(proc)
    path = record_capture(tmp_path_factory.mktemp("cap") / "station.pcap", connections, ("10.0.0.30", 2404),
                          {0: Faults(reorder={2})})
    return Captured(path, port, _requests(connections))
