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


def test_a_false_no_on_a_real_device_costs_a_recheck_not_a_frame() -> None:
    """The first trial of [write, read] fails for a reason of its own (a slow restart): plain ddmin
    keeps the frame the defect does not need; the recheck of each single removal drops it."""
    asked: list[list[str]] = []

    async def reproduces(items: list[str]) -> bool:
        asked.append(items)
        if items == ["write", "read"] and asked.count(items) == 1:
            return False
        return "write" in items and "read" in items and items.index("write") < items.index("read")

    frames = ["write", "coil", "read"]
    assert _run(ddmin(frames, reproduces, budget=50))[0] == frames
    asked.clear()
    result, trials = _run(ddmin(frames, reproduces, budget=50, recheck=True))
    assert result == ["write", "read"] and trials <= 10
