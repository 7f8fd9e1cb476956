"""Declarative message model shared by every protocol module.

A message type is a table of typed, named fields. The one declaration builds valid messages,
parses replies, reports which fields break their specification limits, and tells the mutators
where the field boundaries are (offsets, widths, limits). Computed fields (lengths, checksums)
are filled in on encode unless a value is given explicitly, which is how structural faults such
as a wrong length field are expressed. Pure code: no sockets, no clocks, no randomness.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from otfuzz.errors import DecodeError

REST = "*rest*"
"""`Length(covers=REST)` counts every field after the length field itself."""


@dataclass(frozen=True)
class UInt:
    """An unsigned integer of 8, 16, 24, 32 or 64 bits with optional specification limits.

    `minimum`/`maximum` are the limits the specification allows (a value outside them must be
    rejected by a conforming peer); `enum` names the defined values (others are undefined).
    """

    name: str
    bits: int = 8
    endian: str = "big"
    default: int = 0
    minimum: int | None = None
    maximum: int | None = None
    enum: Mapping[int, str] | None = None

    def __post_init__(self) -> None:
        if self.bits not in (8, 16, 24, 32, 64):
            raise ValueError(f"field {self.name}: unsupported width {self.bits}")
        if self.endian not in ("big", "little"):
            raise ValueError(f"field {self.name}: endian must be 'big' or 'little'")

    @property
    def width(self) -> int:
        return self.bits // 8

    @property
    def type_max(self) -> int:
        return (1 << self.bits) - 1

    def encode(self, value: int) -> bytes:
        return (int(value) & self.type_max).to_bytes(self.width, self.endian)

    def decode(self, data: bytes, offset: int) -> tuple[int, int]:
        end = offset + self.width
        if end > len(data):
            raise DecodeError(f"{self.name}: need {self.width} bytes at offset {offset}, have {len(data) - offset}")
        return int.from_bytes(data[offset:end], self.endian), end

    def violation(self, value: int) -> str | None:
        """Why `value` breaks the specification, or None when it is allowed."""
        if self.minimum is not None and value < self.minimum:
            return f"{self.name}={value} below minimum {self.minimum}"
        if self.maximum is not None and value > self.maximum:
            return f"{self.name}={value} above maximum {self.maximum}"
        if self.enum is not None and value not in self.enum:
            return f"{self.name}={value} is not a defined value"
        return None

    def boundary_values(self) -> list[int]:
        """Values at and around the limits: where implementations get their checks wrong."""
        top = self.type_max
        sign = 1 << (self.bits - 1)
        candidates: list[int] = [0, 1, top, top - 1, sign, sign - 1, sign + 1]
        return self._with_limits(candidates, [0xFF, 0x100] if self.bits > 8 else [])

    def _with_limits(self, candidates: list[int], more: list[int]) -> list[int]:
        """`candidates`, each limit and the enum's ends and one past them, then `more`: each
        once, in order, within 0..type_max."""
        for limit in (self.minimum, self.maximum):
            if limit is not None:
                candidates += [limit - 1, limit, limit + 1]
        if self.enum:
            defined = sorted(self.enum)
            candidates += [defined[0] - 1, defined[-1] + 1]
        seen: list[int] = []
        for value in candidates + more:
            if 0 <= value <= self.type_max and value not in seen:
                seen.append(value)
        return seen


@dataclass(frozen=True)
class Length(UInt):
    """An unsigned length field computed on encode from the encoded size of other fields.

    `covers` names the fields counted (or REST for everything after this field); the value is
    `size // unit + adjust`, so a register count can be declared as a length in 2-byte units.
    """

    covers: Sequence[str] | str = REST
    unit: int = 1
    adjust: int = 0


@dataclass(frozen=True)
class VarInt(UInt):
    """An unsigned integer of 1..`max_bytes` bytes, seven bits per byte, least significant group
    first, the top bit of a byte saying that another follows (MQTT's Variable Byte Integer).

    Encoding always uses the fewest bytes; an over-long encoding (0x80 0x00 for 0) is a fault to
    write as bytes. `bits` is unused: the width depends on the value.
    """

    max_bytes: int = 4

    def __post_init__(self) -> None:
        if not 1 <= self.max_bytes <= 8:
            raise ValueError(f"field {self.name}: max_bytes must be 1..8")

    @property
    def width(self) -> int:
        """The widest encoding (the placeholder size of a field not yet computed)."""
        return self.max_bytes

    @property
    def type_max(self) -> int:
        return (1 << (7 * self.max_bytes)) - 1

    def encode(self, value: int) -> bytes:
        value = int(value) & self.type_max
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    def decode(self, data: bytes, offset: int) -> tuple[int, int]:
        value = 0
        for n in range(self.max_bytes):
            if offset + n >= len(data):
                raise DecodeError(f"{self.name}: variable byte integer cut after {n} bytes at offset {offset}")
            byte = data[offset + n]
            value |= (byte & 0x7F) << (7 * n)
            if not byte & 0x80:
                return value, offset + n + 1
        raise DecodeError(f"{self.name}: variable byte integer longer than {self.max_bytes} bytes at offset {offset}")

    def boundary_values(self) -> list[int]:
        """Where the encoded width changes (127/128, 16383/16384...), the limits and the maximum."""
        candidates = [0, 1]
        for n in range(1, self.max_bytes + 1):
            candidates += [(1 << (7 * n)) - 1, 1 << (7 * n)]
        return self._with_limits(candidates, [])


@dataclass(frozen=True)
class VarLength(VarInt, Length):
    """A length field encoded as a variable byte integer (MQTT's Remaining Length and Property
    Length). Lengths are computed last field first, so a variable length that covers another
    one (the Remaining Length covering a Property Length) sees that one's real width."""


@dataclass(frozen=True)
class Checksum(UInt):
    """A checksum computed on encode by `function` over the encoded bytes of `covers`."""

    covers: Sequence[str] | str = ()
    function: Callable[[bytes], int] | None = None


@dataclass(frozen=True)
class Bytes:
    """A byte string: fixed `size`, sized by another field (`size_from`, in `unit`s), or the rest.

    `max_size` is the specification limit used by the boundary strategy.
    """

    name: str
    size: int | None = None
    size_from: str | None = None
    unit: int = 1
    default: bytes = b""
    max_size: int | None = None

    def decode(self, data: bytes, offset: int, values: Mapping[str, Any]) -> tuple[bytes, int]:
        if self.size is not None:
            size = self.size
        elif self.size_from is not None:
            size = int(values[self.size_from]) * self.unit
        else:
            size = len(data) - offset
        end = offset + size
        if end > len(data):
            raise DecodeError(f"{self.name}: need {size} bytes at offset {offset}, have {len(data) - offset}")
        return bytes(data[offset:end]), end

    def violation(self, value: bytes) -> str | None:
        if self.size is not None and len(value) != self.size:
            return f"{self.name} has {len(value)} bytes, not {self.size}"
        if self.max_size is not None and len(value) > self.max_size:
            return f"{self.name} has {len(value)} bytes, above maximum {self.max_size}"
        return None

    def boundary_values(self) -> list[bytes]:
        sizes = [0, 1]
        if self.max_size is not None:
            sizes += [self.max_size, self.max_size + 1]
        if self.size is not None:
            sizes += [max(self.size - 1, 0), self.size + 1]
        sizes.append(255)
        out: list[bytes] = []
        for size in sizes:
            for fill in (0x00, 0xFF):
                value = bytes([fill]) * size
                if value not in out:
                    out.append(value)
        return out


Field = UInt | Bytes


@dataclass(frozen=True)
class FieldSpan:
    """Where a field sits in an encoded message: what the mutators aim at."""

    field: Field
    offset: int
    size: int


class Head(NamedTuple):
    """The leading run of fixed-width big-endian integers of a layout, unpacked in one call."""

    struct: struct.Struct
    names: tuple[str, ...]


_STRUCT_CODES = {8: "B", 16: "H", 32: "I", 64: "Q"}


@dataclass(frozen=True)
class MessageType:
    """A named, declared message layout.

    `constraints` are cross-field rules of the specification (for example "byte count equals
    2 x quantity"): callables returning a violation text or None. They never change encoding.
    """

    name: str
    fields: Sequence[Field]
    constraints: Sequence[Callable[[Mapping[str, Any]], str | None]] = field(default_factory=tuple)
    doc: str = ""

    def __post_init__(self) -> None:
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            raise ValueError(f"message {self.name}: duplicate field names")

    def field_named(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    # -- building -----------------------------------------------------------------------------

    def defaults(self) -> dict[str, Any]:
        return {f.name: f.default for f in self.fields if not isinstance(f, (Length, Checksum))}

    def encode(self, values: Mapping[str, Any] | None = None, /, **more: Any) -> bytes:
        """Encode a message; computed fields are filled unless given explicitly."""
        return b"".join(part for _, part in self._encode_parts(values, more))

    def spans(self, values: Mapping[str, Any] | None = None, /, **more: Any) -> list[FieldSpan]:
        """Offsets and sizes of every field in the encoding of `values`."""
        out: list[FieldSpan] = []
        offset = 0
        for f, part in self._encode_parts(values, more):
            out.append(FieldSpan(f, offset, len(part)))
            offset += len(part)
        return out

    def _encode_parts(self, values: Mapping[str, Any] | None, more: Mapping[str, Any]) -> list[tuple[Field, bytes]]:
        merged = self.defaults()
        if values:
            merged.update(values)
        merged.update(more)
        parts: dict[str, bytes] = {}
        for f in self.fields:
            if isinstance(f, Bytes):
                parts[f.name] = bytes(merged.get(f.name, f.default))
            elif not isinstance(f, (Length, Checksum)) or f.name in merged:
                parts[f.name] = f.encode(merged.get(f.name, f.default))
        names = [f.name for f in self.fields]
        # Lengths first (checksums usually cover them), the last field first: a length that
        # covers a later length of variable width must count that one's real width.
        for f in reversed(self.fields):
            if isinstance(f, Length) and f.name not in parts:
                covered = self._covered(f, names)
                size = sum(len(parts.get(n, b"\0" * _static_width(self.field_named(n)))) for n in covered)
                parts[f.name] = f.encode(size // f.unit + f.adjust)
        for f in self.fields:
            if isinstance(f, Checksum) and f.name not in parts:
                if f.function is None:
                    raise ValueError(f"checksum {f.name} has no function")
                covered = self._covered(f, names)
                parts[f.name] = f.encode(f.function(b"".join(parts[n] for n in covered)))
        return [(f, parts[f.name]) for f in self.fields]

    @staticmethod
    def _covered(f: Length | Checksum, names: list[str]) -> Sequence[str]:
        if f.covers == REST:
            return names[names.index(f.name) + 1 :]
        return list(f.covers)

    # -- parsing ------------------------------------------------------------------------------

    def decode(self, data: bytes, *, exact: bool = True) -> dict[str, Any]:
        """Parse `data`; with `exact`, trailing bytes are an error. Raises DecodeError."""
        values, end = self.decode_prefix(data)
        if exact and end != len(data):
            raise DecodeError(f"{self.name}: {len(data) - end} unexpected trailing bytes")
        return values

    @cached_property
    def head(self) -> Head:
        """Compiled once: decoding is on every case's path, so the common header costs one unpack."""
        names: list[str] = []
        codes = ""
        for f in self.fields:
            if not isinstance(f, UInt) or isinstance(f, VarInt) or f.bits not in _STRUCT_CODES or f.endian != "big":
                break
            names.append(f.name)
            codes += _STRUCT_CODES[f.bits]
        return Head(struct.Struct(">" + codes), tuple(names))

    @cached_property
    def limited_fields(self) -> tuple[Field, ...]:
        """Fields whose value can break a limit (computed fields are checked against content instead)."""
        return tuple(
            f for f in self.fields
            if not isinstance(f, (Length, Checksum))
            and ((isinstance(f, UInt) and (f.minimum is not None or f.maximum is not None or f.enum is not None))
                 or (isinstance(f, Bytes) and (f.size is not None or f.max_size is not None)))
        )

    def decode_prefix(self, data: bytes, offset: int = 0) -> tuple[dict[str, Any], int]:
        values: dict[str, Any] = {}
        fields = self.fields
        head = self.head
        if head.names and len(data) - offset >= head.struct.size:
            values.update(zip(head.names, head.struct.unpack_from(data, offset)))
            offset += head.struct.size
            fields = fields[len(head.names):]
        return values, self._decode_fields(fields, data, offset, values)

    @staticmethod
    def _decode_fields(fields: Sequence[Field], data: bytes, offset: int, values: dict[str, Any]) -> int:
        """Decode `fields` into `values` from `offset`; on a DecodeError, `values` holds those before it."""
        for f in fields:
            if isinstance(f, Bytes):
                values[f.name], offset = f.decode(data, offset, values)
            else:
                values[f.name], offset = f.decode(data, offset)
        return offset

    def check(self, data: bytes) -> list[str]:
        """Every way `data` departs from the specification: parse errors, computed fields
        that disagree with the content, field limits and cross-field constraints."""
        try:
            values = self.decode(data)
        except DecodeError as exc:
            return [str(exc)]
        problems = self.violations(values)
        expected = self.encode({k: v for k, v in values.items() if not isinstance(self.field_named(k), (Length, Checksum))})
        if expected != bytes(data):
            for f, span in zip(self.fields, self.spans(values)):
                if isinstance(f, (Length, Checksum)):
                    good = self.decode(expected)[f.name]
                    if values[f.name] != good:
                        problems.append(f"{f.name}={values[f.name]} but content says {good}")
        return problems

    def decode_partial(self, data: bytes) -> dict[str, Any]:
        """The fields of a truncated message that were whole, in order up to the first cut one: what
        a target that parses field by field has read before it notices the cut."""
        values: dict[str, Any] = {}
        try:
            self._decode_fields(self.fields, data, 0, values)
        except (DecodeError, KeyError):
            pass
        return values

    def violations(self, values: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        for f in self.limited_fields:
            if f.name in values:
                problem = f.violation(values[f.name])
                if problem:
                    problems.append(problem)
        for rule in self.constraints:
            problem = rule(values)
            if problem:
                problems.append(problem)
        return problems


def _static_width(f: Field) -> int:
    if isinstance(f, UInt):
        return f.width
    return f.size or 0


def fields_of(types: Iterable[MessageType]) -> list[tuple[MessageType, Field]]:
    """Every (message type, field) pair: the search space of the boundary strategy."""
    return [(t, f) for t in types for f in t.fields]
