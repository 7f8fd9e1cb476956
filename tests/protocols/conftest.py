"""Fixtures for the DNP3 and IEC 104 modules: real third-party servers on loopback (stopped by
PID afterwards) and a tiny blocking client that moves frames through a protocol Session the way
the engine's transport does (feed, send take_output, then take replies), bounded in time."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator

import pytest
from targets.iec104_server import DEFAULT_CA
from targets.servers import HOST, free_port, script, start_server, stop_server

from otfuzz.protocols.base import Session


class SessionClient:
    """One TCP connection driven through a sans-IO Session; every wait is bounded."""

    def __init__(self, port: int, session: Session, *, opening: bool = True, timeout: float = 2.0) -> None:
        self.session = session
        self.closed = False
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if opening:
            for frame in session.opening():
                if self.exchange(frame, timeout) is None:
                    raise AssertionError(f"opening {frame.hex()} not answered")

    def send(self, frame: bytes) -> None:
        while self.session.next_reply() is not None:  # a late reply is not the answer to this frame
            pass
        self.sock.sendall(self.session.prepare(frame))

    def receive(self, timeout: float = 1.0) -> bytes | None:
        """The next reply, or None on timeout or close (then `closed` is set)."""
        deadline = time.monotonic() + timeout
        for _ in range(10_000):  # bounded even if the peer trickles bytes forever
            reply = self.session.next_reply()
            if reply is not None:
                return reply
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                return None
            except ConnectionResetError:
                self.closed = True
                return None
            if not data:
                self.closed = True
                return None
            self.session.feed(data)
            out = self.session.take_output()
            if out:
                self.sock.sendall(out)
        return None

    def exchange(self, frame: bytes, timeout: float = 1.0) -> bytes | None:
        self.send(frame)
        return self.receive(timeout)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def connect() -> Iterator[Callable[..., SessionClient]]:
    """Open SessionClients; all are closed at teardown."""
    clients: list[SessionClient] = []

    def open_client(port: int, session: Session, **kwargs: object) -> SessionClient:
        client = SessionClient(port, session, **kwargs)  # type: ignore[arg-type]
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.close()


@pytest.fixture(scope="session")
def dnp3_outstation() -> Iterator[int]:
    """dnp3py 0.6.0 outstation, link address 1, on a free port; yields the port."""
    port = free_port()
    proc = start_server([*script("dnp3_outstation.py"), "--port", str(port)], port)
    try:
        yield port
    finally:
        stop_server(proc)


@pytest.fixture(scope="session")
def iec104_server() -> Iterator[int]:
    """c104 2.2.1 server, common address DEFAULT_CA (47), on a free port; yields the port."""
    port = free_port()
    proc = start_server([*script("iec104_server.py"), "--port", str(port), "--ca", str(DEFAULT_CA)], port)
    try:
        yield port
    finally:
        stop_server(proc)
