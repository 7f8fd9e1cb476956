"""Delta debugging finds a 1-minimal reproducer within its trial budget."""

from __future__ import annotations

import asyncio

from otfuzz.engine.minimise import ddmin


def _run(coro):
    return asyncio.run(coro)


def test_ddmin_finds_the_two_items_that_matter() -> None:
    async def reproduces(items: list[int]) -> bool:
        return 3 in items and 17 in items

    result, trials = _run(ddmin(list(range(40)), reproduces, budget=500))
    assert result == [3, 17]
    assert trials < 100


def test_ddmin_keeps_order_of_the_remaining_items() -> None:
    async def reproduces(items: list[str]) -> bool:
        return "".join(items).find("ab") >= 0

    result, _ = _run(ddmin(list("xxaxxbxxabyy"), reproduces, budget=500))
    assert "".join(result) == "ab"


def test_ddmin_stops_at_the_budget_with_a_still_reproducing_input() -> None:
    calls: list[int] = []

    async def reproduces(items: list[int]) -> bool:
        calls.append(len(items))
        return 0 in items

    result, trials = _run(ddmin(list(range(1000)), reproduces, budget=5))
    assert trials == 5 and len(calls) == 5
    assert 0 in result and len(result) < 1000
