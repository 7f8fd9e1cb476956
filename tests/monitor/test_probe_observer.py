"""A health probe witnessed by an observer connection (Protocol.probe_observer), in the campaign's
HealthProbe and in the stress run's essential-function monitor, against real mosquitto brokers:
one that delivers, and one whose ACL lets anonymous clients subscribe to the probe topic but not
publish to it, so that in MQTT 3.1.1 it acknowledges the probe (PUBACK) and drops it."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from targets.mosquitto_broker import running_broker, start_broker
from targets.servers import HOST, free_port, stop_server

from otfuzz.monitor.probe import HealthProbe, probe_exchange
from otfuzz.protocols.mqtt import MQTT
from otfuzz.stress.monitor import Cycle, EssentialMonitor, essential_function
from otfuzz.transport import open_connection
from otfuzz.transport.target import Target

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def delivering() -> Iterator[int]:
    with running_broker() as port:
        yield port


@pytest.fixture(scope="module")
def dropping(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """Anonymous clients may read the probe topic and write nothing: publishes are acknowledged and dropped."""
    acl = tmp_path_factory.mktemp("acl") / "acl"
    acl.write_text("topic read $otfuzz/probe\n")
    with running_broker([f"acl_file {acl}"]) as port:
        yield port


@pytest.mark.parametrize("version", ["4", "5"])
def test_the_probe_passes_when_the_observer_receives_it_and_keeps_both_connections(delivering: int, version: str) -> None:
    proto = MQTT({"version": version})

    async def run() -> tuple:
        probe = HealthProbe(proto, HOST, delivering, deadline=2.0)
        try:
            baseline = await probe.learn_baseline(5)
            first = await probe.check()
            kept = (probe._kept, probe._observer)
            second = await probe.check()
            return baseline, first, second, kept, (probe._kept, probe._observer)
        finally:
            probe.close()

    baseline, first, second, kept, still = asyncio.run(run())
    assert baseline is not None and baseline.samples == 5
    assert first.ok and second.ok and first.latency is not None
    assert kept[0] is not None and kept[1] is not None and still == kept  # one round trip per probe afterwards


def test_a_broker_that_acknowledges_but_does_not_deliver_fails_the_probe(dropping: int) -> None:
    proto = MQTT({"version": "4"})

    async def run() -> tuple:
        # what the probe alone would say: MQTT 3.1.1 acknowledges a publish the ACL drops
        conn = await open_connection(proto, HOST, dropping, 2.0)
        try:
            alone = await probe_exchange(proto, proto.probe().frame, conn, None, 2.0)
        finally:
            conn.close()
        probe = HealthProbe(proto, HOST, dropping, deadline=0.5)
        try:
            return alone, await probe.check(), await probe.learn_baseline(2)
        finally:
            probe.close()

    alone, witnessed, baseline = asyncio.run(run())
    assert alone == ("ok", alone[1])
    assert not witnessed.ok and witnessed.reason == "unobserved"
    assert baseline is None  # a campaign would stop before its first case


def test_in_mqtt_5_the_same_broker_refuses_the_probe_outright(dropping: int) -> None:
    async def run():
        probe = HealthProbe(MQTT({"version": "5"}), HOST, dropping, deadline=0.5)
        try:
            return await probe.check()
        finally:
            probe.close()

    result = asyncio.run(run())
    assert not result.ok and result.reason == "bad-reply"  # PUBACK 0x87 Not authorized


def test_a_dead_broker_is_refused_for_the_observer_too() -> None:
    port = free_port()
    proc = start_broker(port)

    async def run() -> tuple:
        probe = HealthProbe(MQTT(), HOST, port, deadline=1.0)
        try:
            before = await probe.check()
            stop_server(proc)
            return before, await probe.check()
        finally:
            probe.close()

    try:
        before, after = asyncio.run(run())
    finally:
        stop_server(proc)
    assert before.ok and not after.ok and after.reason == "refused"


def _cycles(port: int, seconds: float) -> list[Cycle]:
    proto = MQTT()
    cycles: list[Cycle] = []
    fn = essential_function(proto, None, None, 0.1, 0.1)

    async def main() -> None:
        monitor = EssentialMonitor(Target("mqtt", HOST, port), HOST, port, fn, 30.0, cycles.append)
        monitor.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            monitor.stop()

    asyncio.run(main())
    return cycles


def test_the_stress_monitor_needs_the_observer_too(delivering: int, dropping: int) -> None:
    good, bad = _cycles(delivering, 1.5), _cycles(dropping, 1.5)
    assert len(good) >= 5 and all(c.ok for c in good)
    assert len(bad) >= 3 and not any(c.ok for c in bad)
    assert {c.reason for c in bad} == {"unobserved"}
