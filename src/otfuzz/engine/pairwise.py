"""Covering arrays of strength 2: every pair of values of every pair of fields in some row.

The construction is IPOG (in-parameter-order, Lei and Tai): the first two parameters give every
pair of their values; each further parameter extends every row with the value that covers the
most pairs still missing (horizontal growth), then rows are added for the pairs left (vertical
growth, filling free cells of existing new rows first). It is deterministic: ties go to the
earliest value, so one declaration always gives the same array and replay stays exact.
Parameters come in the order given: callers put the fields with specification limits first, so
the pairs that involve them are covered by the earliest rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

V = TypeVar("V")
FREE = -1


def covering_array(values: Sequence[Sequence[V]]) -> list[tuple[int, ...]]:
    """Rows of value indexes, one per parameter, covering every pair of every two parameters."""
    k = len(values)
    sizes = [len(v) for v in values]
    if k == 0 or any(n == 0 for n in sizes):
        return []
    if k == 1:
        return [(i,) for i in range(sizes[0])]
    rows: list[list[int]] = [[a, b] for a in range(sizes[0]) for b in range(sizes[1])]
    for p in range(2, k):
        missing: set[tuple[int, int, int]] = {(q, a, b) for q in range(p) for a in range(sizes[q]) for b in range(sizes[p])}
        # horizontal growth
        for row in rows:
            best, best_gain = 0, -1
            for b in range(sizes[p]):
                gain = sum(1 for q in range(p) if row[q] != FREE and (q, row[q], b) in missing)
                if gain > best_gain:
                    best, best_gain = b, gain
            row.append(best)
            for q in range(p):
                missing.discard((q, row[q], best))
        # vertical growth
        added: list[list[int]] = []
        for q, a, b in sorted(missing):
            for row in added:
                if row[p] == b and row[q] in (FREE, a):
                    row[q] = a
                    break
            else:
                row = [FREE] * (p + 1)
                row[q], row[p] = a, b
                added.append(row)
        rows += added
    return [tuple(0 if cell == FREE else cell for cell in row) for row in rows]


def pairs_total(sizes: Sequence[int]) -> int:
    return sum(sizes[i] * sizes[j] for i in range(len(sizes)) for j in range(i + 1, len(sizes)))


def coverage_prefix(rows: Sequence[Sequence[int]], sizes: Sequence[int]) -> list[int]:
    """Pairs covered by the first n rows, for every n (index n-1)."""
    covered: set[tuple[int, int, int, int]] = set()
    out = []
    k = len(sizes)
    for row in rows:
        for i in range(k):
            for j in range(i + 1, k):
                covered.add((i, row[i], j, row[j]))
        out.append(len(covered))
    return out
