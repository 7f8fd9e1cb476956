"""Delta debugging (Zeller's ddmin) over any sequence, with a trial budget.

Used twice per anomaly: over the sequence of cases since the last healthy probe, then over the
bytes of the last message; `simpler_frames` adds the field-aware step between the two. Each trial may restart a real device, so the budget is in trials and
the result is the smallest input seen that still reproduced, even when the budget runs out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from otfuzz.errors import DecodeError
from otfuzz.protocols.base import Protocol
from otfuzz.protocols.model import Checksum, Length, UInt

T = TypeVar("T")


async def ddmin(items: Sequence[T], reproduces: Callable[[list[T]], Awaitable[bool]], budget: int,
                recheck: bool = False, trim: Callable[[list[T]], list[T]] | None = None) -> tuple[list[T], int]:
    """Shrink `items` to a 1-minimal subsequence for which `reproduces` holds.

    `items` itself is assumed to reproduce. Returns (smallest found, trials used). With `recheck`,
    each single removal from the result is tried once more: a trial on a real device can fail
    for a reason of its own (a slow restart on a loaded machine), and one false "does not
    reproduce" keeps an item the defect does not need, such as a frame that then labels the
    finding by the wrong request. `trim`, called right after a candidate reproduced, may cut it
    further by what that trial showed (a crash replay cuts the frames sent to a dead target).
    """
    current, trials = await _ddmin(items, reproduces, budget, trim)
    while recheck and len(current) >= 2 and trials < budget:
        for i in range(len(current)):
            if trials >= budget:
                return current, trials
            trials += 1
            candidate = current[:i] + current[i + 1:]
            if await reproduces(candidate):
                current, used = await _ddmin(trim(candidate) if trim else candidate, reproduces, budget - trials, trim)
                trials += used
                break
        else:
            break
    return current, trials


async def _ddmin(items: Sequence[T], reproduces: Callable[[list[T]], Awaitable[bool]], budget: int,
                 trim: Callable[[list[T]], list[T]] | None = None) -> tuple[list[T], int]:
    current = list(items)
    granularity = 2
    trials = 0
    seen: set[tuple[int, ...]] = set()
    while len(current) >= 2 and trials < budget:
        size = len(current)
        chunks = [range(i * size // granularity, (i + 1) * size // granularity) for i in range(granularity)]
        reduced = False
        # Try each complement (remove one chunk); subsets are the complements' special case at n=2.
        for chunk in chunks:
            if trials >= budget:
                break
            keep = [i for i in range(size) if i not in chunk]
            if not keep:
                continue
            key = (size, *keep)
            if key in seen:
                continue
            seen.add(key)
            trials += 1
            candidate = [current[i] for i in keep]
            if await reproduces(candidate):
                current = trim(candidate) if trim else candidate
                granularity = max(granularity - 1, 2)
                reduced = True
                break
        if not reduced:
            if granularity >= size:
                break
            granularity = min(size, granularity * 2)
    return current, trials


def simpler_frames(protocol: Protocol, frame: bytes) -> list[bytes]:
    """Frames like `frame` with one departure from the valid request undone, simplest first.

    Byte-level delta debugging can only delete bytes: it cannot set a field back to its valid
    value or make a length field agree again, so a fuzzed frame that breaks three rules stays
    with three even when one of them is the defect. These candidates undo one field at a time
    (a value to the nearest allowed one or back to the template's, a computed length or checksum
    recomputed, bytes after the first frame dropped), and the valid request itself comes first: a defect that needs no rule
    broken at all then says so.
    """
    request_type = protocol.request_type(frame)
    template = next((t for t in protocol.templates() if t.name == request_type), None)
    candidates: list[bytes] = []
    if template is not None:
        candidates.append(template.encode())
    framed = protocol.frame_length(frame)
    if framed is not None and 0 < framed < len(frame):
        candidates.append(frame[:framed])
    repaired = protocol.repair(frame)
    if repaired != frame:
        candidates.append(repaired)
    if template is not None:
        message = template.message
        try:
            values, _ = message.decode_prefix(frame)
        except DecodeError:
            values = None
        if values is not None:
            valid = {**message.defaults(), **dict(template.values)}
            changes: list[dict[str, object]] = []
            for f in message.fields:
                value = values.get(f.name)
                if isinstance(f, (Length, Checksum)):
                    changes.append({k: v for k, v in values.items() if k != f.name})
                    continue
                if isinstance(f, UInt) and isinstance(value, int):
                    # The nearest allowed value first: it keeps whatever else the value does
                    # (an address range that still runs past the end), then the template's.
                    low = f.minimum if f.minimum is not None else value
                    high = f.maximum if f.maximum is not None else value
                    nearest = min(max(value, low), high)
                    if nearest != value:
                        changes.append({**values, f.name: nearest})
                if value != valid.get(f.name, f.default):
                    changes.append({**values, f.name: valid.get(f.name, f.default)})
            for changed in changes:
                try:
                    candidates.append(message.encode(changed))
                except (ValueError, KeyError, TypeError):
                    continue
    out: list[bytes] = []
    for candidate in candidates:
        if candidate != frame and candidate not in out:
            out.append(candidate)
    return out
