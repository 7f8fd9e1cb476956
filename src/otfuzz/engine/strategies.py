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
- sequence: up to six requests on one connection, state-changing ones first, sharing values
  (the same address) across steps, with the faulty request at any step (bugs that need state).
- pairs: per request type, a covering array over its fields' interesting values, so every pair
  of values of every two fields appears in some case (bugs that need two fields off at once).
- connection: connection-level patterns (a partial frame held open, many connections held,
  open/close bursts, half-closed connections), each judged by the health probe during and after.

Mutation also mutates entries of the corpus (reply-guided feedback, `engine.feedback`) and draws
field values from the dictionary (`engine.values`); the pairs and sequence strategies draw from
its fixed part. A case is a pure function of (seed, case id, configuration) and, for feedback
cases, the lineage the campaign recorded for it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from otfuzz.engine.connection import PATTERNS, ConnectionPattern
from otfuzz.engine.feedback import CorpusEntry, Feedback
from otfuzz.engine.pairwise import coverage_prefix, covering_array, pairs_total
from otfuzz.engine.values import Dictionary, interesting_values
from otfuzz.errors import DecodeError
from otfuzz.protocols.base import Protocol, Template
from otfuzz.protocols.model import Bytes, Checksum, FieldSpan, Length, UInt

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
REPAIR_SHARE = 0.75
"""Share of mutated frames whose framing is repaired so the fault reaches the inner layers."""
CORPUS_SHARE = 0.5
"""Share of mutation cases that mutate a corpus entry (when the corpus has one) rather than a template."""
MAX_SEQUENCE = 6


@dataclass
class Context:
    """What a strategy may know of the case it makes besides its random generator."""

    case_id: int = -1
    feedback: Feedback | None = None
    dictionary: Dictionary = field(default_factory=Dictionary)


@dataclass(frozen=True)
class Made:
    """What a strategy produced for one case."""

    frames: tuple[bytes, ...]
    template: str
    description: str
    fault: str = ""  # the structural fault the last frame carries, by name ("MBAP length zero")
    pattern: ConnectionPattern | None = None  # connection-level cases
    parent: int | None = None  # the corpus entry a feedback case came from


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

    def make(self, index: int, rng: random.Random, ctx: Context | None = None) -> Made:
        raise NotImplementedError

    def template_named(self, name: str | None) -> int | None:
        return next((i for i, t in enumerate(self.templates) if t.name == name), None)


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

    def make(self, index: int, rng: random.Random, ctx: Context | None = None) -> Made:
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

    def make(self, index: int, rng: random.Random, ctx: Context | None = None) -> Made:
        template, description, frame = self.items[index % len(self.items)]
        return Made((frame,), template.name, f"{template.name}: {description}", description)


class Mutation(Strategy):
    """Havoc mutation of templates and corpus entries, with a deterministic dictionary sweep.

    Every `SWEEP_EVERY`-th case, until the sweep is done, puts one dictionary value (a meaningful
    or a classic magic value) into one field of one template and changes nothing else, the way
    AFL's dictionary stage does: random stacking alone reaches a given value in a given field of
    a given request type once in some ten thousand cases, the sweep within a few thousand.
    """

    name = "mutation"
    SWEEP_EVERY = 4

    def __init__(self, protocol: Protocol, templates: Sequence[Template], dictionary: Dictionary | None = None) -> None:
        super().__init__(protocol, templates)
        self._entry_spans: dict[int, list[FieldSpan]] = {}
        dictionary = dictionary or Dictionary(protocol.dictionary())
        self.sweep: list[tuple[int, FieldSpan, int | bytes]] = []
        for at, spans in enumerate(self.spans):
            for span in _valued(spans):
                default = self.valid[at][span.offset : span.offset + span.size]
                for value in dict.fromkeys(dictionary.candidates(span.field)):
                    if _encoded(span, value) != default:
                        self.sweep.append((at, span, value))
        # a fixed shuffle: no request type or value goes first by the order they are declared in
        random.Random(len(self.sweep)).shuffle(self.sweep)

    def make(self, index: int, rng: random.Random, ctx: Context | None = None) -> Made:
        ctx = ctx or Context()
        step, rest = divmod(index, self.SWEEP_EVERY)
        if rest == 0 and step < len(self.sweep):
            at, span, value = self.sweep[step]
            data = bytearray(self.valid[at])
            data[span.offset : span.offset + span.size] = _encoded(span, value)
            name = self.templates[at].name
            return Made((bytes(data),), name, f"{name}: field {span.field.name}={_shown(value)} from the dictionary (sweep)")
        use_corpus = rng.random() < CORPUS_SHARE
        pick = rng.randrange(1 << 30)
        entry, observed = (None, 0)
        if use_corpus and ctx.feedback is not None:
            entry, observed = ctx.feedback.choose(ctx.case_id, pick)
        if entry is not None:
            prefix, last = entry.frames[:-1], entry.frames[-1]
            spans = self._spans_of(entry)
            name = self.protocol.request_type(last) or "corpus entry"
            source = f"corpus entry {entry.id} ({name})"
        else:
            at = pick % len(self.templates)
            prefix, last, spans = (), self.valid[at], self.spans[at]
            name = source = self.templates[at].name
        data = bytearray(last)
        notes: list[str] = []
        valued = _valued(spans)
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(9)
            if op in (0, 7, 8) and spans:
                span = rng.choice(valued if op != 0 and valued else spans)
                if span.size:
                    if op != 0:  # a value with a meaning: the protocol's, a magic one, or the target's own
                        if ctx.feedback is not None and not observed:
                            observed = ctx.feedback.observed_for(ctx.case_id)
                        values = ctx.dictionary.candidates(span.field, observed)
                        if values:
                            value = rng.choice(values)
                            data[span.offset : span.offset + span.size] = _encoded(span, value)
                            notes.append(f"field {span.field.name}={_shown(value)} from the dictionary")
                            continue
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
        return Made((*prefix, frame), name, f"{source}: " + ", ".join(notes or ["unchanged"]),
                    parent=entry.id if entry is not None else None)

    def _spans_of(self, entry: CorpusEntry) -> list[FieldSpan]:
        """Field spans of a corpus entry's last frame, by its request type's declaration."""
        spans = self._entry_spans.get(entry.id)
        if spans is None:
            spans = []
            at = self.template_named(self.protocol.request_type(entry.frames[-1]))
            if at is not None:
                message = self.templates[at].message
                try:
                    values, end = message.decode_prefix(entry.frames[-1])
                    if end <= len(entry.frames[-1]):
                        spans = message.spans(values)
                except (DecodeError, ValueError, KeyError, TypeError):
                    spans = []
            self._entry_spans[entry.id] = spans
        return spans


def _valued(spans: Sequence[FieldSpan]) -> list[FieldSpan]:
    """Spans whose value a dictionary may set: not computed, not pinned to one defined value."""
    return [span for span in spans if span.size and not isinstance(span.field, (Length, Checksum))
            and not (isinstance(span.field, UInt) and _pinned(span.field))]


def _shown(value: int | bytes) -> str:
    if isinstance(value, bytes):
        return value.hex() if len(value) <= 8 else f"{len(value)} bytes"
    return f"0x{value:X}" if value > 255 else str(value)


def _encoded(span: FieldSpan, value: int | bytes) -> bytes:
    if isinstance(value, bytes):
        return value[: span.size].ljust(span.size, b"\0")
    f = span.field
    if isinstance(f, UInt) and span.size == f.width:
        return f.encode(value)
    return (value & ((1 << (8 * span.size)) - 1)).to_bytes(span.size, "big")


class Pairs(Strategy):
    """2-way covering arrays per request type over the fields' interesting values."""

    name = "pairs"
    MAX_FIELDS = 10

    def __init__(self, protocol: Protocol, templates: Sequence[Template], dictionary: Dictionary) -> None:
        super().__init__(protocol, templates)
        self.arrays: list[tuple[Template, list[str], list[list[int | bytes]], list[tuple[int, ...]], list[int], int]] = []
        for template in self.templates:
            # pinned fields (a function code, a protocol id: one defined value) are left alone: off
            # their value the request is another one or none, which the structural group tests
            fields = [f for f in template.message.fields if isinstance(f, (UInt, Bytes)) and not isinstance(f, (Length, Checksum))
                      and not (isinstance(f, UInt) and _pinned(f))]
            # fields with specification limits first: the pairs that involve them come first
            fields.sort(key=lambda f: 0 if _limited(f) else 1)
            fields = fields[: self.MAX_FIELDS]
            # the template's own value first: a row that leaves a field alone keeps it valid
            columns = [list(dict.fromkeys([template.values.get(f.name, f.default),
                                           *interesting_values(f, dictionary.meaningful.get(f.name, ()))])) for f in fields]
            kept = [(f, c) for f, c in zip(fields, columns) if c]
            if len(kept) < 2:
                continue
            names = [f.name for f, _ in kept]
            values = [c for _, c in kept]
            rows = covering_array(values)
            sizes = [len(c) for c in values]
            self.arrays.append((template, names, values, rows, coverage_prefix(rows, sizes), pairs_total(sizes)))
        # row r of every request type before row r+1 of any: early cases cover every type
        self.order = [(t, r) for r in range(max((len(a[3]) for a in self.arrays), default=0))
                      for t in range(len(self.arrays)) if r < len(self.arrays[t][3])]
        self._frames: dict[int, bytes] = {}

    def make(self, index: int, rng: random.Random, ctx: Context | None = None) -> Made:
        if not self.order:
            at = index % len(self.templates)
            return Made((self.valid[at],), self.templates[at].name, f"{self.templates[at].name}: no field pairs")
        slot = index % len(self.order)
        t, r = self.order[slot]
        template, names, values, rows, _, _ = self.arrays[t]
        chosen = {name: values[i][cell] for i, (name, cell) in enumerate(zip(names, rows[r]))}
        frame = self._frames.get(slot)
        if frame is None:
            frame = self._frames[slot] = template.encode(**chosen)
        shown = ", ".join(f"{k}={v.hex() if isinstance(v, bytes) else v}" for k, v in chosen.items())
        return Made((frame,), template.name, f"{template.name}: pairwise row {r + 1} of {len(rows)}: {shown}"[:300])

    def coverage(self, cases: int) -> dict[str, dict[str, int]]:
        """Pairs covered after `cases` cases of this group, per request type."""
        rows_done = [0] * len(self.arrays)
        full, rest = divmod(cases, len(self.order)) if self.order else (0, 0)
        for t, r in self.order[:rest]:
            rows_done[t] = max(rows_done[t], r + 1)
        out = {}
        for t, (template, _, _, rows, prefix, total) in enumerate(self.arrays):
            done = len(rows) if full else rows_done[t]
            out[template.name] = {"covered": prefix[done - 1] if done else 0, "total": total, "rows": len(rows)}
        return out


def _pinned(f: UInt) -> bool:
    """A field with one defined value (a function code, a protocol id): nothing to share."""
    return f.enum is not None and len(f.enum) <= 1


def _limited(f: UInt | Bytes) -> bool:
    if isinstance(f, UInt):
        return f.minimum is not None or f.maximum is not None or f.enum is not None
    return f.size is not None or f.max_size is not None


class SequenceStrategy(Strategy):
    """Up to six requests on one connection, the faulty one at any step.

    Valid steps come state-changing first (writes), then reads and other operations; fields of
    the same name share one value across the steps (a write to an address, then a read of that
    address), drawn from the template's own value or the dictionary's fixed part.
    """

    name = "sequence"

    CAPTURED_SHARE = 0.5
    """Share of sequence cases that follow a captured session (when `otfuzz run --seeds` gave any)."""

    def __init__(self, protocol: Protocol, templates: Sequence[Template], faulty: Sequence[Strategy],
                 dictionary: Dictionary | None = None, sessions: Sequence[Sequence[bytes]] = ()) -> None:
        super().__init__(protocol, templates)
        self.faulty = list(faulty)
        self.dictionary = dictionary or Dictionary()
        # Captured sessions (ordered requests a real client sent) as prefixes; only requests that
        # may run after the opening handshake and keep the connection, like the valid steps below.
        self.sessions = [steps for steps in (tuple(f for f in session[:MAX_SEQUENCE] if protocol.needs_opening(f)
                                                   and protocol.keeps_connection(f, b"")) for session in sessions) if steps]
        # The prefix runs on a connection after the opening handshake: a request that makes its own
        # connection (needs_opening False) would only be refused there, so it is never part of one.
        # Nor does a request after which the target may end the connection (a DISCONNECT).
        self.steps = [i for i, v in enumerate(self.valid) if protocol.needs_opening(v) and protocol.keeps_connection(v, b"")]
        self.prefixes = [self.valid[i] for i in self.steps]
        self.writers = [i for i in self.steps if self.templates[i].writes and not self.templates[i].disruptive]
        self.readers = [i for i in self.steps if not self.templates[i].writes and not self.templates[i].disruptive]
        shared: dict[str, UInt] = {}
        counts: dict[str, int] = {}
        for i in self.steps:
            for f in self.templates[i].message.fields:
                if isinstance(f, UInt) and not isinstance(f, (Length, Checksum)):
                    counts[f.name] = counts.get(f.name, 0) + 1
                    shared.setdefault(f.name, f)
        # fields several request types have, but not all (addresses, object ids, values: not the
        # headers every request carries) tie the steps together
        self.shared = {name: f for name, f in shared.items() if 1 < counts[name] < len(self.steps) and not _pinned(f)}
        # per template, its field names; and valid steps already built for a set of shared values
        # (a pure function of both): sequences are the costliest cases to generate
        self.names = [frozenset(f.name for f in t.message.fields) for t in self.templates]
        self._steps: dict[tuple[int, tuple[tuple[str, int], ...]], bytes] = {}
        # what a shared value is drawn from: the dictionary's fixed part (never what the target
        # reported) and the field's boundaries, so built once; and which steps carry a set of
        # shared fields. Both were built again for every case: about a third of making a sequence.
        self.pools = {name: [v for v in self.dictionary.candidates(f) if isinstance(v, int)] + list(f.boundary_values())
                      for name, f in self.shared.items()}
        self._tied: dict[tuple[int, tuple[str, ...]], list[int]] = {}

    def make(self, index: int, rng: random.Random, ctx: Context | None = None) -> Made:
        inner = self.faulty[index % len(self.faulty)]
        made = inner.make(rng.randrange(1 << 30), rng, ctx)
        if not self.steps or not self.protocol.needs_opening(made.frames[0]) or len(made.frames) > 1:
            # a fault about the state before the handshake goes out alone, on a fresh connection
            return Made(made.frames, made.template, f"alone (a fresh connection): {made.description}", made.fault,
                        parent=made.parent)
        if self.sessions and rng.random() < self.CAPTURED_SHARE:
            # a captured session with one of its steps replaced by the faulty request
            session = self.sessions[rng.randrange(len(self.sessions))]
            at = rng.randrange(len(session))
            frames = (*session[:at], made.frames[0], *session[at + 1 :])
            return Made(frames, made.template, f"captured session step {at + 1} of {len(session)}: {made.description}",
                        made.fault, parent=made.parent)
        length = rng.randint(2, MAX_SEQUENCE)
        at = rng.randrange(length)
        values = self._shared_values(rng)
        writers, readers, steps = (self._having(which, pool, values)
                                    for which, pool in enumerate((self.writers, self.readers, self.steps)))
        before = [self._step(rng.choice(writers) if writers and rng.random() < 0.6 else rng.choice(steps), values)
                  for _ in range(at)]
        after_pool = readers or steps
        after = [self._step(rng.choice(after_pool), values) for _ in range(length - at - 1)]
        frames = (*before, made.frames[0], *after)
        tied = ", ".join(f"{k}={v}" for k, v in list(values.items())[:3])
        where = f"step {at + 1} of {length}" + (f" ({tied} in every step)" if tied else "")
        return Made(frames, made.template, f"{where}: {made.description}", made.fault, parent=made.parent)

    def _having(self, which: int, pool: list[int], values: dict[str, int]) -> list[int]:
        """The templates of `pool` (number `which` of writers, readers, steps) that carry a shared
        field (all of `pool` when none does)."""
        if not values:
            return pool
        key = (which, tuple(values))
        tied = self._tied.get(key)
        if tied is None:
            if len(self._tied) >= 4096:  # (bounded: with many shared fields, the sets are many)
                self._tied.clear()
            names = self.names
            tied = self._tied[key] = [i for i in pool if not names[i].isdisjoint(values)] or pool
        return tied

    def _shared_values(self, rng: random.Random) -> dict[str, int]:
        chosen: dict[str, int] = {}
        for name, pool in self.pools.items():
            if rng.random() < 0.5 and pool:
                chosen[name] = rng.choice(pool)
        return chosen

    def _step(self, at: int, values: dict[str, int]) -> bytes:
        """The valid request of template `at` with each shared value that keeps it valid."""
        names = self.names[at]
        key = (at, tuple((name, value) for name, value in values.items() if name in names))
        frame = self._steps.get(key)
        if frame is not None:
            return frame
        template = self.templates[at]
        kept: dict[str, int] = {}
        frame = self.valid[at]
        for name, value in key[1]:
            candidate = template.encode(**{**kept, name: value})
            if not self.protocol.check_request(candidate):
                kept[name], frame = value, candidate
        if len(self._steps) >= 4096:
            self._steps.clear()
        self._steps[key] = frame
        return frame


class ConnectionStrategy(Strategy):
    """Connection-level patterns, deterministic from the case id; the frame is what they send."""

    name = "connection"

    def __init__(self, protocol: Protocol, templates: Sequence[Template], read: bytes, hold: float, connections: int) -> None:
        super().__init__(protocol, templates)
        self.read = read
        self.hold = hold
        self.connections = connections

    def make(self, index: int, rng: random.Random, ctx: Context | None = None) -> Made:
        kind = PATTERNS[index % len(PATTERNS)]
        hold = round(self.hold * (0.5 + rng.random() / 2), 3)
        count = 1 if kind == "slow-read" else max(2, int(self.connections * (0.5 + rng.random() / 2)))
        cut = max(1, min(len(self.read) - 1, rng.randint(1, max(1, len(self.read) - 1))))
        pattern = ConnectionPattern(kind, count, hold, cut)
        return Made((self.read,), f"connection:{kind}", pattern.describe(), pattern=pattern)


GROUPS: dict[str, int] = {"boundary": 24, "structural": 16, "mutation": 32, "sequence": 12, "pairs": 15, "connection": 1}
"""Fuzzing test groups and their weight in every 100 cases of the default schedule."""


@dataclass(frozen=True)
class StrategyOptions:
    """Settings strategies take from the campaign (recorded in its configuration)."""

    hold_time: float = 2.0
    max_connections: int = 100


def build_strategies(protocol: Protocol, templates: Sequence[Template], groups: Sequence[str],
                     dictionary: Dictionary | None = None, read: bytes | None = None,
                     options: StrategyOptions | None = None, sessions: Sequence[Sequence[bytes]] = ()) -> dict[str, Strategy]:
    dictionary = dictionary or Dictionary(protocol.dictionary())
    options = options or StrategyOptions()
    boundary = Boundary(protocol, templates)
    structural = Structural(protocol, templates)
    mutation = Mutation(protocol, templates, dictionary)
    made: dict[str, Strategy] = {"boundary": boundary, "structural": structural, "mutation": mutation}
    if "sequence" in groups:
        made["sequence"] = SequenceStrategy(protocol, templates, [boundary, structural, mutation], dictionary, sessions)
    if "pairs" in groups:
        made["pairs"] = Pairs(protocol, templates, dictionary)
    if "connection" in groups:
        made["connection"] = ConnectionStrategy(protocol, templates, read or protocol.probe().frame, options.hold_time,
                                                options.max_connections)
    return {name: made[name] for name in groups}
