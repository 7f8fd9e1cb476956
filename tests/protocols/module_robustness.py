"""What every protocol module must survive: any request and any reply are data, never a crash of
otfuzz itself. Shared by the per-protocol property tests."""

from __future__ import annotations

from hypothesis import strategies as st

from otfuzz.protocols.base import Protocol


def near(pool: list[bytes]) -> st.SearchStrategy[bytes]:
    """Valid frames and faults with a few octets changed: inputs that get past the framing."""
    def mutate(frame: bytes, edits: list[tuple[int, int]]) -> bytes:
        out = bytearray(frame)
        for at, value in edits:
            out[at % len(out)] = value
        return bytes(out)

    edits = st.lists(st.tuples(st.integers(0, 1000), st.integers(0, 255)), max_size=3)
    return st.one_of(st.binary(max_size=300), st.builds(mutate, st.sampled_from(pool), edits))


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
