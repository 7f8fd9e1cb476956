"""Delta debugging (Zeller's ddmin) over any sequence, with a trial budget.

Used twice per anomaly: over the sequence of cases since the last healthy probe, then over the
bytes of the last message. Each trial may restart a real device, so the budget is in trials and
the result is the smallest input seen that still reproduced, even when the budget runs out.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


async def ddmin(items: Sequence[T], reproduces: Callable[[list[T]], Awaitable[bool]], budget: int) -> tuple[list[T], int]:
    """Shrink `items` to a 1-minimal subsequence for which `reproduces` holds.

    `items` itself is assumed to reproduce. Returns (smallest found, trials used).
    """
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
                current = candidate
                granularity = max(granularity - 1, 2)
                reduced = True
                break
        if not reduced:
            if granularity >= size:
                break
            granularity = min(size, granularity * 2)
    return current, trials
