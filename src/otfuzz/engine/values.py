"""Values worth trying in a field: its boundaries, its defined values and their neighbours, the
protocol's values with a meaning, classic magic numbers, and what the target itself reported.

The dictionary has three layers. The protocol module declares values with meaning in its
specification by field name (`Protocol.dictionary()`: coil ON/OFF, control codes, qualifiers);
the engine adds magic values every fuzzer tries (0xDEAD, 0x7FFF, powers of two +-1); and the
campaign adds values seen in the target's own replies (addresses, counts, identifiers), which
only feedback-driven cases use, recording how many of them were known, so replay stays exact.
"""

from __future__ import annotations

from functools import lru_cache
from collections.abc import Iterable, Mapping, Sequence

from otfuzz.protocols.model import Bytes, Field, UInt

MAGIC_16 = (0xDEAD, 0xBEEF, 0xCAFE, 0x1234, 0x5555, 0xAAAA, 0x7FFF, 0x8000)
MAX_OBSERVED = 256
"""Values remembered from replies (oldest first; the list only grows, so a prefix is stable)."""


def magic_values(bits: int) -> list[int]:
    """Classic magic numbers that fit `bits`: the 16-bit ones (and their 32-bit doubles), and
    every power of two with its neighbours."""
    return list(_magic(bits))


@lru_cache(maxsize=64)
def _magic(bits: int) -> tuple[int, ...]:
    """Built once per width (asked for once per mutated field)."""
    top = (1 << bits) - 1
    values = [v for v in MAGIC_16 if v <= top]
    if bits >= 32:
        values += [0xDEADBEEF, 0xCAFEBABE, 0x7FFFFFFF, 0x80000000]
    for n in range(1, bits):
        values += [(1 << n) - 1, 1 << n, (1 << n) + 1]
    out: list[int] = []
    for value in values:
        if 0 <= value <= top and value not in out:
            out.append(value)
    return tuple(out)


def interesting_values(f: Field, meaningful: Sequence[int | bytes] = (), limit: int = 12) -> list[int | bytes]:
    """The values pairwise testing combines for one field, most telling first, at most `limit`:
    zero and the type maximum, every spec limit and limit+-1, every defined enum value and one
    undefined value next to each defined run, the protocol's meaningful values."""
    if isinstance(f, Bytes):
        sized = f.boundary_values()
        return list(dict.fromkeys([*(v for v in meaningful if isinstance(v, bytes)), *sized]))[:limit]
    if not isinstance(f, UInt):
        return []
    top = f.type_max
    candidates: list[int] = [0, top]
    for bound in (f.minimum, f.maximum):
        if bound is not None:
            candidates += [bound, bound - 1, bound + 1]
    if f.enum:
        defined = sorted(f.enum)
        candidates += defined
        for value in defined:  # one undefined value just past each defined run
            if value + 1 not in f.enum:
                candidates.append(value + 1)
        if defined[0] - 1 not in f.enum:
            candidates.append(defined[0] - 1)
    candidates += [v for v in meaningful if isinstance(v, int)]
    candidates += [1, top - 1]
    out: list[int | bytes] = []
    for value in candidates:
        if 0 <= value <= top and value not in out:
            out.append(value)
    return out[:limit]


class Dictionary:
    """Values for a field by name: meaningful ones, magic ones, and the target's own."""

    def __init__(self, meaningful: Mapping[str, Sequence[int | bytes]] | None = None) -> None:
        self.meaningful = {name: list(values) for name, values in (meaningful or {}).items()}
        self.observed: list[int] = []

    def observe(self, values: Iterable[int]) -> None:
        for value in values:
            if len(self.observed) >= MAX_OBSERVED:
                return
            if value not in self.observed:
                self.observed.append(value)

    def candidates(self, f: Field, observed: int = 0) -> list[int | bytes]:
        """Values to draw from for `f`: its meaningful values, magic values that fit it, and the
        first `observed` values the target reported."""
        meaningful = [v for v in self.meaningful.get(f.name, ()) if _fits(f, v)]
        if isinstance(f, Bytes):
            # register blocks and data strings hold words too: a magic word lands in their last one
            return meaningful * 3 + list(MAGIC_16) * 3 + self.observed[:observed]
        if not isinstance(f, UInt):
            return []
        seen = [v for v in self.observed[:observed] if 0 <= v <= f.type_max]
        core = [v for v in (*MAGIC_16, 0xDEADBEEF, 0x7FFFFFFF) if v <= f.type_max]
        # meaningful and classic values weigh more than the long tail of powers of two
        return meaningful * 3 + core * 4 + magic_values(f.bits) + seen * 2


def _fits(f: Field, value: int | bytes) -> bool:
    if isinstance(f, UInt):
        return isinstance(value, int) and 0 <= value <= f.type_max
    return isinstance(value, bytes)


def reply_numbers(reply: bytes, skip: int = 0, limit: int = 16) -> list[int]:
    """16-bit big- and little-endian words of a reply past `skip` header bytes: what a target
    reports (register values, addresses, counts) in the units most ICS protocols use."""
    out: list[int] = []
    body = reply[skip:]
    for i in range(0, max(0, len(body) - 1), 2):
        for value in (int.from_bytes(body[i:i + 2], "big"), int.from_bytes(body[i:i + 2], "little")):
            if value not in out:
                out.append(value)
        if len(out) >= limit:
            break
    return out[:limit]
