"""What every protocol module must survive: any request and any reply are data, never a crash of
otfuzz itself. Shared by the per-protocol property tests."""

from __future__ import annotations

from otfuzz.protocols.base import Protocol


def exercise(protocol: Protocol, request: bytes, reply: bytes) -> None:
    """Run every request-side and reply-side entry point on hostile bytes; raising is the failure."""
    for frame in (request, protocol.repair(request)):
        protocol.check_request(frame)
        protocol.describe(frame)
        protocol.is_write(frame)
        protocol.expects_reply(frame)
        protocol.frame_length(frame)
        protocol.classify(frame, reply)
    session = protocol.session()
    session.prepare(request)
    for cut in range(0, len(reply), 7):
        session.feed(reply[cut : cut + 7])
        session.take_output()
        while session.next_reply() is not None:
            pass
    session.leftover()
