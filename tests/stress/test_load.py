"""The load generator against real listeners on loopback: offered load is accounted for exactly,
and what the target does (not reading, closing) is charged to the target, not to otfuzz."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.stress.load import LoadGenerator, LoadStats
from otfuzz.stress.floods import valid_flood
from otfuzz.stress.patterns import Step

pytestmark = pytest.mark.integration


def _run(port: int, step: Step, flood=None) -> LoadStats:  # type: ignore[no-untyped-def]
    modbus = ModbusTCP()
    stats = LoadStats()

    async def main() -> None:
        gen = LoadGenerator(modbus, "127.0.0.1", port, 1.0, 200.0, asyncio.Event())
        await gen.run(step, flood or valid_flood(modbus), stats)
        await asyncio.sleep(0.1)

    asyncio.run(main())
    return stats


def _accounted(stats: LoadStats) -> int:
    return stats.written + stats.backpressure + stats.disconnected + stats.tool_shortfall


def test_rate_step_offers_its_schedule_and_every_request_is_answered(degrading_server: Callable[..., tuple[str, int]]) -> None:
    _, port = degrading_server()
    stats = _run(port, Step("request-flood", "rate", 1.0, 400.0, 400.0, connections=4))
    assert stats.intended == _accounted(stats)
    assert 380 <= stats.written <= 400 and stats.tool_shortfall == 0
    assert stats.answered == stats.written and stats.replies == {"normal": stats.written}
    assert stats.peak_open == 4 and stats.open == 0  # all closed again


def test_idle_and_half_open_steps_hold_every_connection_for_the_step(degrading_server: Callable[..., tuple[str, int]]) -> None:
    _, port = degrading_server()
    for kind in ("idle", "half-open"):
        stats = _run(port, Step("connection-flood", kind, 0.5, connections=40))
        assert stats.peak_open == 40 and stats.connects == 40 and stats.closed_by_target == 0, kind


def test_churn_step_connects_and_disconnects_at_its_rate(degrading_server: Callable[..., tuple[str, int]]) -> None:
    _, port = degrading_server()
    stats = _run(port, Step("connection-flood", "churn", 1.0, 50.0, 50.0))
    assert 45 <= stats.connects <= 50 and not stats.connect_failures


def test_a_target_that_stops_reading_is_charged_with_backpressure_not_otfuzz() -> None:
    # A listener that accepts but never reads: the kernel buffers fill and writing must pause.
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        stats = _run(port, Step("request-flood", "rate", 2.0, 300000.0, 300000.0, connections=1))
    assert stats.backpressure > 0
    assert stats.intended == _accounted(stats)
    assert stats.tool_shortfall < stats.intended * 0.1


def test_a_target_closing_connections_is_charged_as_disconnected_and_reconnected(
        degrading_server: Callable[..., tuple[str, int]]) -> None:
    # An absurd MBAP length makes the degrading server close the connection, every time.
    _, port = degrading_server()
    from otfuzz.stress.patterns import FloodFrames

    bad = FloodFrames((bytes.fromhex("0001000000ff0103"),), "absurd length", (True,))
    stats = _run(port, Step("malformed-flood", "rate", 1.0, 100.0, 100.0), bad)
    assert stats.closed_by_target >= 2 and stats.connects >= 3
    assert stats.intended == _accounted(stats)
