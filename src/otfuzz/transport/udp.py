"""asyncio UDP "connections" that move datagrams for a sans-IO protocol session.

A datagram protocol (BACnet/IP) has no connection to open, close or reset. A `Connection` here
is one connected UDP socket: one local port talking to one peer, offering the engine the same
calls as a TCP connection (`open`, `exchange`, `alive`, `session`, `close`, `abort`). What
differs, and what the rest of otfuzz relies on:

- Each datagram received is fed to the session as one `feed()` call. A datagram session must
  only ever return the answer to the current request from `next_reply()` (BACnet matches replies
  by invoke id): nothing here can tell a late reply from the current one, and that matching is
  what lets the engine keep the connection across silence and malformed replies (`reuse`).
- `take_output()` is called until it returns nothing, each result sent as one datagram (the
  next segments of a segmented request, acknowledgements of a segmented reply).
- There is no close or reset. An ICMP port unreachable (nothing listens there: the target's
  process is gone) surfaces as ConnectionRefusedError on the connected socket and ends the
  connection with the outcome "refused", which the health probe reports as a refused target
  (the crash signal). Silence is only ever a timeout.
- Source port (the URL option `source_port`, read by `open_connection` from the protocol's
  options): devices keep state per peer address (segmentation transactions, COV
  subscriptions, address bindings). `fixed` (default): a connection keeps its port for as long
  as the engine keeps it, which is the whole run unless the target refuses or an anomaly resets
  every connection, so per-peer state carries over from case to case like on a real client.
  `fresh`: every case is sent from a new port, so no case meets state an earlier one left.
"""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Callable

from otfuzz.protocols.base import Session
from otfuzz.transport.tcp import Exchange, Wire

UNREACHABLE = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH})
CONNECTION_ORIENTED = False  # no connections to flood, hold open or churn (otfuzz.stress)
SOURCE_PORT_MODES = ("fixed", "fresh")
OPTIONS = ("source_port",)
"""URL options of the protocol that this transport reads (`open_connection` passes them on)."""


class _Endpoint(Wire, asyncio.DatagramProtocol):
    def __init__(self, session: Session) -> None:
        super().__init__(session)
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.sendto(data)

    def send_output(self) -> None:
        for _ in range(256):  # bounded: a session hands over a window of segments at most
            out = self.session.take_output()
            if not out:
                return
            self.send(out)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received(data)

    def error_received(self, exc: Exception) -> None:
        # On a connected socket the kernel reports ICMP errors here: port unreachable is
        # ConnectionRefusedError, host or network unreachable the others below. Either way the
        # peer cannot be reached: the connection is over. Anything else (a datagram too large
        # to send) is otfuzz's own problem, not the target's: the exchange just gets no answer.
        if isinstance(exc, ConnectionRefusedError) or getattr(exc, "errno", None) in UNREACHABLE:
            self.lose("refused")

    def connection_lost(self, exc: Exception | None) -> None:
        self.lose("closed")


class Connection:
    """One connected UDP socket to the target, carrying one protocol session."""

    def __init__(self, endpoint: _Endpoint, transport: asyncio.DatagramTransport, source_port: str) -> None:
        self._endpoint = endpoint
        self._transport = transport
        # set by the engine: a frame that breaks the specification, or after which the target
        # may end the connection, went over it; a close or reset later on it is then no anomaly
        self.close_excused = False
        # How the engine may reuse this connection between cases (see otfuzz.transport):
        # replies are matched by the session, so it is kept whatever happened, unless every case
        # is to come from a new source port.
        self.reuse = "case" if source_port == "fresh" else "always"  # REUSE_CASE, REUSE_ALWAYS

    @classmethod
    async def open(cls, host: str, port: int, session: Session, timeout: float, opening: bool = True,
                   source_port: str = "fixed") -> Connection:
        """Bind a new local port and connect it to the peer (never refused: there is nothing to
        refuse until a datagram is sent), then run the session's opening exchange, if any."""
        if source_port not in SOURCE_PORT_MODES:
            raise ValueError(f"source_port must be one of {', '.join(SOURCE_PORT_MODES)}, got {source_port!r}")
        loop = asyncio.get_running_loop()
        endpoint = _Endpoint(session)
        transport, _ = await asyncio.wait_for(loop.create_datagram_endpoint(lambda: endpoint, remote_addr=(host, port)), timeout)
        conn = cls(endpoint, transport, source_port)
        for frame in session.opening() if opening else ():
            result = await conn.exchange(frame, timeout)
            if result.outcome != "reply":
                conn.close()
                if result.outcome == "refused":
                    raise ConnectionRefusedError(f"opening exchange refused by {host}:{port}")
                raise ConnectionError(f"opening exchange got no answer ({result.outcome})")
        return conn

    @property
    def alive(self) -> bool:
        return self._endpoint.lost is None and not self._transport.is_closing()

    @property
    def session(self) -> Session:
        return self._endpoint.session

    @property
    def local_address(self) -> tuple[str, int]:
        """(address, port) this connection sends from."""
        return self._transport.get_extra_info("sockname")[:2]  # type: ignore[no-any-return]

    async def exchange(self, frame: bytes, timeout: float, expect_reply: bool = True,
                       meanwhile: Callable[[], object] | None = None) -> Exchange:
        """Send one datagram and wait for the session's reply to it, the timeout, or a refusal
        (`meanwhile`: see otfuzz.transport.tcp.Wire.exchange)."""
        return await self._endpoint.exchange(frame, timeout, expect_reply, meanwhile)

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

