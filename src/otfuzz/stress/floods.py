"""What a flood sends: the protocol's valid probe read, malformed requests from the fuzzing
strategies, or the protocol's own flood message. Apart from the plans (`stress.patterns`) since
these draw on the engine's generator, which itself runs connection patterns through the load
generator: plans stay below the engine, floods above it."""

from __future__ import annotations

from otfuzz.engine.generator import CaseGenerator, valid_read
from otfuzz.errors import OtfuzzError
from otfuzz.protocols.base import Protocol
from otfuzz.stress.patterns import FloodFrames


def valid_flood(protocol: Protocol) -> FloodFrames:
    """The valid-request flood repeats the protocol's health-probe read: valid, read-only, always
    answered (where the probe is a write, the first such template: engine.generator.valid_read)."""
    frame, _, description = valid_read(protocol)
    return FloodFrames((frame,), f"valid request: {description}", (False,))


def malformed_flood(protocol: Protocol, seed: int, count: int = 64, loopback: bool = True) -> FloodFrames:
    """Malformed requests from the fuzzing strategies (read-only mode), keeping only frames that
    break the specification, so the flood is malformed traffic and never a write (nor, unless
    the target is on loopback, a frame the device would relay to its networks)."""
    generator = CaseGenerator(protocol, seed, ["structural", "boundary", "mutation"], read_only=True, loopback=loopback)
    frames: list[bytes] = []
    seen: set[bytes] = set()
    for case_id in range(count * 8):
        frame = generator.case(case_id).request
        if frame in seen or not frame or protocol.is_write(frame) or not protocol.check_request(frame):
            continue
        seen.add(frame)
        frames.append(frame)
        if len(frames) >= count:
            break
    if not frames:
        raise OtfuzzError(f"{protocol.name}: the fuzzing strategies gave no malformed read-only request to flood with")
    return FloodFrames(tuple(frames), f"{len(frames)} malformed requests from the structural, boundary and mutation "
                                      f"strategies (seed {seed}, read-only)", tuple(True for _ in frames))


def protocol_flood(protocol: Protocol) -> FloodFrames | None:
    """The protocol's own flood message (Protocol.stress_flood), or None when it has none."""
    made = protocol.stress_flood()
    if made is None:
        return None
    frame, name = made
    return FloodFrames((frame,), f"protocol-specific flood: {name}", (bool(protocol.check_request(frame)),))
