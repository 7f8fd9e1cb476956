"""Generation strategies: each is a named test group recorded with every case it makes.

A strategy turns (index within its group, a per-case random generator) into frames. It reads
the protocol's declared message model for field boundaries and spec limits, so it is field-aware
without knowing any protocol: the same code fuzzes Modbus, DNP3 and IEC 104.

- boundary: every field of every request type at its boundary values (0, 1, limits, limit+-1,
  max, max+1, sign bits), enumerated in a fixed order and cycled.
- structural: length fields, truncation, trailing bytes, protocol ids, unknown function codes,
  counts disagreeing with contents: the protocol lists its own faults; truncation and trailing
  bytes are added here for every template.
- mutation: random mutation of valid messages: field-aware value changes, bit flips, byte
  insert/delete/duplicate, interesting bytes, and splicing of two valid messages.
- sequence: a valid prefix of requests on one connection followed by a faulty request (bugs that
  need state).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from otfuzz.protocols.base import Protocol, Template
from otfuzz.protocols.model import Bytes, Checksum, Length, UInt

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
REPAIR_SHARE = 0.75
"""Share of mutated frames whose framing is repaired so the fault reaches the inner layers."""


@dataclass(frozen=True)
class Made:
    """What a strategy produced for one case."""

    frames: tuple[bytes, ...]
    template: str
    description: str
    fault: str = ""  # the structural fault the last frame carries, by name ("MBAP length zero")


class Strategy:
    """Base of every generation strategy; `name` is the test group recorded with each case."""

    name: str = ""

    def __init__(self, protocol: Protocol, templates: Sequence[Template]) -> None:
        if not templates:
            raise ValueError("a strategy needs at least one template")
        self.protocol = protocol
        self.templates = list(templates)
        # Valid encodings and field spans are fixed per template: computed once, not per case.
        self.valid = [t.encode() for t in self.templates]
        self.spans = [t.message.spans(dict(t.values)) for t in self.templates]

    def make(self, index: int, rng: random.Random) -> Made:
        raise NotImplementedError


class Boundary(Strategy):
    name = "boundary"

    def __init__(self, protocol: Protocol, templates: Sequence[Template]) -> None:
        super().__init__(protocol, templates)
        # Enumerated once: (template, field name, value). Computed fields are the structural
        # strategy's business; fixed headers such as protocol ids are fuzzed here too.
        self.items: list[tuple[Template, str, int | bytes]] = []
        for template in self.templates:
            for f in template.message.fields:
                if isinstance(f, (Length, Checksum)):
                    continue
                if isinstance(f, (UInt, Bytes)):
                    for value in f.boundary_values():
                        if template.values.get(f.name, f.default) != value:
                            self.items.append((template, f.name, value))
        self._frames: dict[int, bytes] = {}

    def make(self, index: int, rng: random.Random) -> Made:
        slot = index % len(self.items)
        template, field_name, value = self.items[slot]
        frame = self._frames.get(slot)
        if frame is None:  # the list is finite and cycled: encode each item once
            frame = self._frames[slot] = template.encode(**{field_name: value})
        shown = value.hex() if isinstance(value, bytes) else str(value)
        if isinstance(value, bytes) and len(shown) > 16:
            shown = f"{len(value)} bytes"
        return Made((frame,), template.name, f"{template.name}: {field_name}={shown}")


class Structural(Strategy):
    name = "structural"
    PER_TEMPLATE = 64

    def __init__(self, protocol: Protocol, templates: Sequence[Template]) -> None:
        super().__init__(protocol, templates)
        self.items: list[tuple[Template, str, bytes]] = []
        for template, valid in zip(self.templates, self.valid):
            for description, frame in list(protocol.structural_faults(template))[: self.PER_TEMPLATE]:
                self.items.append((template, description, frame))
            # Generic faults every framing must survive.
            for cut in sorted({1, len(valid) // 2, len(valid) - 1}):
                if 0 < cut < len(valid):
                    self.items.append((template, f"truncated to {cut} of {len(valid)} bytes", valid[:cut]))
            self.items.append((template, "one trailing byte", valid + b"\x00"))
            self.items.append((template, "16 trailing bytes", valid + b"\xff" * 16))
            self.items.append((template, "frame sent twice in one segment", valid + valid))

    def make(self, index: int, rng: random.Random) -> Made:
        template, description, frame = self.items[index % len(self.items)]
        return Made((frame,), template.name, f"{template.name}: {description}", description)


class Mutation(Strategy):
    name = "mutation"

    def make(self, index: int, rng: random.Random) -> Made:
        pick = rng.randrange(len(self.templates))
        template, data, spans = self.templates[pick], bytearray(self.valid[pick]), self.spans[pick]
        notes: list[str] = []
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(7)
            if op == 0 and spans:  # field-aware: a random value of the field's own width
                span = rng.choice(spans)
                if span.size:
                    data[span.offset : span.offset + span.size] = rng.randbytes(span.size)
                    notes.append(f"field {span.field.name} randomised")
                    continue
            if not data:
                data += bytes([rng.choice(INTERESTING_BYTES)])
                continue
            pos = rng.randrange(len(data))
            if op == 1:
                data[pos] ^= 1 << rng.randrange(8)
                notes.append(f"bit flip at {pos}")
            elif op == 2:
                data.insert(pos, rng.randrange(256))
                notes.append(f"byte inserted at {pos}")
            elif op == 3 and len(data) > 1:
                del data[pos]
                notes.append(f"byte deleted at {pos}")
            elif op == 4:
                length = rng.randint(1, min(8, len(data) - pos))
                data[pos:pos] = data[pos : pos + length]
                notes.append(f"{length} bytes duplicated at {pos}")
            elif op == 5:
                data[pos] = rng.choice(INTERESTING_BYTES)
                notes.append(f"interesting byte at {pos}")
            else:
                other = rng.choice(self.valid)
                cut_a, cut_b = rng.randrange(len(data) + 1), rng.randrange(len(other) + 1)
                data = data[:cut_a] + bytearray(other[cut_b:])
                notes.append(f"spliced at {cut_a} with tail of another message")
        frame = bytes(data)
        if rng.random() < REPAIR_SHARE:
            repaired = self.protocol.repair(frame)
            if repaired != frame:
                frame = repaired
                notes.append("framing repaired")
        return Made((frame,), template.name, f"{template.name}: " + ", ".join(notes or ["unchanged"]))


class SequenceStrategy(Strategy):
    """A valid prefix on one connection, then a faulty request from the other strategies."""

    name = "sequence"

    def __init__(self, protocol: Protocol, templates: Sequence[Template], faulty: Sequence[Strategy]) -> None:
        super().__init__(protocol, templates)
        self.faulty = list(faulty)
        # The prefix runs on a connection after the opening handshake: a request that makes its own
        # connection (needs_opening False) would only be refused there, so it is never part of one.
        # Nor does a request after which the target may end the connection (a DISCONNECT).
        self.prefixes = [v for v in self.valid if protocol.needs_opening(v) and protocol.keeps_connection(v, b"")]

    def make(self, index: int, rng: random.Random) -> Made:
        prefix = tuple(rng.choice(self.prefixes) for _ in range(rng.randint(1, 4))) if self.prefixes else ()
        inner = self.faulty[index % len(self.faulty)]
        made = inner.make(rng.randrange(1 << 30), rng)
        if not prefix or not self.protocol.needs_opening(made.frames[0]):
            # a fault about the state before the handshake goes out alone, on a fresh connection
            return Made(made.frames, made.template, f"alone (a fresh connection): {made.description}", made.fault)
        return Made(prefix + made.frames, made.template, f"{len(prefix)} valid request{'s' if len(prefix) > 1 else ''}, then {made.description}",
                    made.fault)


GROUPS: dict[str, int] = {"boundary": 3, "structural": 2, "mutation": 4, "sequence": 1}
"""Fuzzing test groups and their weight in the default schedule."""


def build_strategies(protocol: Protocol, templates: Sequence[Template], groups: Sequence[str]) -> dict[str, Strategy]:
    boundary = Boundary(protocol, templates)
    structural = Structural(protocol, templates)
    mutation = Mutation(protocol, templates)
    every: dict[str, Strategy] = {
        "boundary": boundary,
        "structural": structural,
        "mutation": mutation,
        "sequence": SequenceStrategy(protocol, templates, [boundary, structural, mutation]),
    }
    return {name: every[name] for name in groups}
