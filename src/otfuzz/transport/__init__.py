"""asyncio transports, the rate cap and the target scope: how bytes reach a target, and which
targets they may reach.

`open_connection` is the one door: it picks the transport the protocol module declares
(`Protocol.transport`), so the engine, the health probe, the stress monitor and the policy test
never name TCP or UDP themselves. Every transport's connection offers the same few calls:
`exchange`, `alive`, `session`, `close`, `abort`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from otfuzz.protocols.base import Protocol, Session
    from otfuzz.transport.tcp import Connection

# Protocol.transport -> module with a `Connection` class offering `open(host, port, session, timeout, opening)`.
TRANSPORTS = {"tcp": "otfuzz.transport.tcp"}


async def open_connection(protocol: Protocol, host: str, port: int, timeout: float, opening: bool = True,
                          session: Session | None = None) -> Connection:
    """A new connection carrying `session` (by default a new `protocol.session()`; raises
    ConnectionRefusedError, TimeoutError or OSError like a socket would); runs the session's
    opening handshake unless told not to."""
    module = importlib.import_module(TRANSPORTS[protocol.transport])
    carried = session if session is not None else protocol.session()
    return await module.Connection.open(host, port, carried, timeout, opening=opening)  # type: ignore[no-any-return]
