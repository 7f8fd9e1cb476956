"""asyncio transports, the rate cap and the target scope: how bytes reach a target, and which
targets they may reach.

`open_connection` is the one door: it picks the transport the protocol module declares
(`Protocol.transport`), so the engine, the health probe, the stress monitor and the policy test
never name TCP or UDP themselves. Every transport's connection offers the same few calls:
`exchange`, `alive`, `session`, `close`, `abort`, and says how the engine may reuse it between
cases (`reuse`):

- "stream": keep it while it is in step; open a new one after silence, a frame of the wrong
  length or a malformed reply, since a late answer could otherwise be taken for the next (TCP).
  A malformed reply that carries its request's id (`Protocol.request_id`) with nothing received
  after it (`drained`) leaves the stream in step: only its content is wrong;
- "always": replies are matched to their request by the session (a datagram protocol's invoke
  id), so nothing that happens to one case puts the connection out of step (UDP);
- "case": one case per connection (a datagram protocol asked for a fresh source port per case).

A transport module may read URL options of the protocol (its `OPTIONS`, such as the UDP
transport's `source_port`): the protocol declares and validates them with its own options.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otfuzz.protocols.base import Protocol, Session
    from otfuzz.transport.tcp import Connection

# Protocol.transport -> module with a `Connection` class offering `open(host, port, session, timeout, opening)`.
TRANSPORTS = {"tcp": "otfuzz.transport.tcp", "udp": "otfuzz.transport.udp"}

REUSE_STREAM, REUSE_ALWAYS, REUSE_CASE = "stream", "always", "case"


async def open_connection(protocol: Protocol, host: str, port: int, timeout: float, opening: bool = True,
                          session: Session | None = None) -> Connection:
    """A new connection carrying `session` (by default a new `protocol.session()`; raises
    ConnectionRefusedError, TimeoutError or OSError like a socket would); runs the session's
    opening handshake unless told not to."""
    module = importlib.import_module(TRANSPORTS[protocol.transport])
    options = {name: protocol.options[name] for name in getattr(module, "OPTIONS", ()) if name in protocol.options}
    carried = session if session is not None else protocol.session()
    return await module.Connection.open(host, port, carried, timeout, opening=opening, **options)  # type: ignore[no-any-return]


def connection_oriented(protocol: Protocol) -> bool:
    """False for datagram protocols: there are no connections to flood, hold open or churn."""
    module = importlib.import_module(TRANSPORTS[protocol.transport])
    return bool(getattr(module, "CONNECTION_ORIENTED", True))
