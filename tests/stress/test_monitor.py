"""The essential-function monitor: its options, and its cycles against a real server and a dead port."""

from __future__ import annotations

import asyncio
import os

import pytest

from otfuzz.errors import OtfuzzError
from otfuzz.protocols.modbus import ModbusTCP
from otfuzz.transport.target import Target
from otfuzz.stress.monitor import Cycle, EssentialMonitor, ResourceMonitor, essential_function
from targets.servers import free_port

READ_HR5 = "000100000006010300050001"


def test_default_essential_function_is_the_protocols_health_probe() -> None:
    modbus = ModbusTCP()
    fn = essential_function(modbus, None, None, 0.1, 0.05)
    assert fn.request == modbus.probe().frame and fn.mode == "probe"


def test_expected_answer_with_wildcards_matches_only_the_bytes_it_pins() -> None:
    fn = essential_function(ModbusTCP(), READ_HR5, "???? 0000 0005 01 03 02 0005", 0.1, 0.05)
    modbus = ModbusTCP()
    assert fn.judge(modbus, bytes.fromhex("abcd00000005010302" + "0005")) == "ok"
    assert fn.judge(modbus, bytes.fromhex("abcd00000005010302" + "0006")) == "bad-reply"
    assert fn.as_record()["expect_hex"] == "????00000005010302" + "0005"


def test_user_request_without_expected_answer_needs_a_normal_reply() -> None:
    modbus = ModbusTCP()
    fn = essential_function(modbus, READ_HR5, None, 0.1, 0.05)
    assert fn.judge(modbus, bytes.fromhex("00010000000501030200050000")[:11]) == "ok"
    assert fn.judge(modbus, bytes.fromhex("000100000003018302")) == "exception"


@pytest.mark.parametrize("request_hex, expect_hex, cadence, deadline, message", [
    ("000100000006010600010001", None, 0.1, 0.05, "must be a read"),
    ("0001000000060103", None, 0.1, 0.05, "not a valid modbus request"),
    ("zz", None, 0.1, 0.05, "hex"),
    (READ_HR5, None, 0.1, 0.2, "at most the cadence"),
    (None, "00", 0.1, 0.05, "needs --essential-request"),
])
def test_bad_essential_function_options_are_refused_with_the_fix(request_hex: str | None, expect_hex: str | None,
                                                                  cadence: float, deadline: float, message: str) -> None:
    with pytest.raises(OtfuzzError, match=message):
        essential_function(ModbusTCP(), request_hex, expect_hex, cadence, deadline)


def _collect(port: int, seconds: float) -> list[Cycle]:
    cycles: list[Cycle] = []
    fn = essential_function(ModbusTCP(), None, None, 0.05, 0.05)

    async def main() -> None:
        monitor = EssentialMonitor(Target("modbus", "127.0.0.1", port), "127.0.0.1", port, fn, 30.0, cycles.append)
        monitor.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.to_thread(monitor.stop)
        assert not monitor.alive

    asyncio.run(main())
    return cycles


@pytest.mark.integration
def test_monitor_keeps_its_cadence_and_sees_good_answers_from_pymodbus(pymodbus_server: tuple[str, int]) -> None:
    cycles = _collect(pymodbus_server[1], 1.5)
    assert len(cycles) >= 15
    assert all(c.ok for c in cycles[1:]), [c for c in cycles if not c.ok]
    gaps = [b.t - a.t for a, b in zip(cycles, cycles[1:])]
    assert all(abs(g - 0.05) < 1e-6 for g in gaps)  # scheduled cycles, not "whenever it got round to it"


def test_monitor_counts_every_cycle_against_a_dead_port_as_missed() -> None:
    cycles = _collect(free_port(), 0.6)
    assert len(cycles) >= 5
    assert not any(c.ok for c in cycles) and {c.reason for c in cycles} <= {"refused", "overrun"}


def test_resource_monitor_samples_descriptors_threads_and_memory_of_a_process() -> None:
    monitor = ResourceMonitor(os.getpid())
    before = monitor.sample()
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(5)]
    try:
        after = monitor.sample()
    finally:
        for fd in held:
            os.close(fd)
    assert before is not None and after is not None
    assert after["fds"] - before["fds"] == 5
    assert after["threads"] >= 1 and after["rss_mb"] > 1


def test_resource_monitor_refuses_a_pid_that_does_not_exist() -> None:
    with pytest.raises(OtfuzzError, match="no process"):
        ResourceMonitor(2**22 + 12345)
