"""Shared fixtures: real Modbus/TCP servers started on loopback and stopped by PID afterwards."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from targets.bacnet_fixture import start_bacnet_device
from targets.servers import HOST, free_port, script, start_server, stop_server


@pytest.fixture
def enip_server() -> Iterator[int]:
    """cpppo 5.2.5 (tests/targets/enip_server.py) with its tags at their initial values; yields the port."""
    port = free_port()
    proc = start_server([*script("enip_server.py"), "--port", str(port)], port)
    try:
        yield port
    finally:
        stop_server(proc)


def _pymodbus() -> Iterator[tuple[str, int]]:
    port = free_port()
    proc = start_server([*script("pymodbus_server.py"), "--port", str(port)], port)
    try:
        yield HOST, port
    finally:
        stop_server(proc)


@pytest.fixture()
def fresh_pymodbus() -> Iterator[tuple[str, int]]:
    """A pymodbus of the test's own, for campaigns that may write any value (sequences, pairs)."""
    yield from _pymodbus()


@pytest.fixture(scope="session")
def pymodbus_server() -> Iterator[tuple[str, int]]:
    """pymodbus 3.16.1 with holding register i = i (0..999) and identity otfuzz-test/PM/3.16.1.

    Shared by the whole session: campaigns write what they like (sequences, pairs, the dictionary),
    so a test that reads a value back uses `fresh_pymodbus`.
    """
    yield from _pymodbus()


class FaultyServers:
    """Factory behind the `faulty_server` fixture: one faulty_modbus.py per call."""

    def __init__(self) -> None:
        self.processes: dict[int, subprocess.Popen[bytes]] = {}

    def __call__(self, *faults: str, hang_seconds: float | None = None, degrade_ms: float | None = None,
                 extra: tuple[str, ...] = ()) -> tuple[str, int]:
        """Start a server with faults like "crash:3" or "hang:6:100" (and `extra` options, such as
        a defect); returns (host, port)."""
        port = free_port()
        argv = [*script("faulty_modbus.py"), "--port", str(port), *extra]
        for fault in faults:
            argv += ["--fault", fault]
        if hang_seconds is not None:
            argv += ["--hang-seconds", str(hang_seconds)]
        if degrade_ms is not None:
            argv += ["--degrade-ms", str(degrade_ms)]
        self.processes[port] = start_server(argv, port)
        return HOST, port

    def process(self, port: int) -> subprocess.Popen[bytes]:
        return self.processes[port]

    def stop_all(self) -> None:
        for proc in self.processes.values():
            stop_server(proc)


@pytest.fixture
def faulty_server() -> Iterator[FaultyServers]:
    servers = FaultyServers()
    try:
        yield servers
    finally:
        servers.stop_all()


@pytest.fixture(scope="session")
def bacnet_device() -> Iterator[tuple[str, int]]:
    """bacpypes3 0.0.110 device 999 on 127.0.0.1 (objects in tests/targets/bacnet_device.py).

    Shared by the whole session: tests write only analog-value,2 (the write templates' target).
    """
    proc, port = start_bacnet_device()
    try:
        yield HOST, port
    finally:
        stop_server(proc)
