"""Stress against the third-party IEC 104 (c104) and DNP3 (dnp3py) servers on loopback, with each
protocol's own flood message (TESTFR act, REQUEST_LINK_STATUS) at bounded rates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otfuzz.stress.patterns import GROUPS
from stress.conftest import stress
from targets.servers import free_port, script, start_server, stop_server

pytestmark = pytest.mark.integration

SERVERS = {
    "iec104": (lambda port: [*script("iec104_server.py"), "--port", str(port), "--ca", "1"], "iec104://127.0.0.1:{port}?ca=1",
               "TESTFR act"),
    "dnp3": (lambda port: [*script("dnp3_outstation.py"), "--port", str(port)], "dnp3://127.0.0.1:{port}", "request_link_status"),
}


@pytest.fixture(params=sorted(SERVERS))
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, str, str]]:
    pytest.importorskip({"iec104": "c104", "dnp3": "dnp3"}[request.param])
    argv, url, flood = SERVERS[request.param]
    port = free_port()
    proc = start_server(argv(port), port)
    try:
        yield request.param, url.format(port=port), flood
    finally:
        stop_server(proc)


def test_protocol_specific_flood_is_answered_and_the_essential_function_holds(tmp_path: Path, server: tuple[str, str, str]) -> None:
    name, url, flood = server
    # 27 requests/s, not 20: on DNP3's one association every cycle of the 20 Hz essential function
    # displaces the flood connection, and a flood in step with it lost most of its sends to the
    # reconnect (written 0 of 9 in 1 run of 8); out of step, 11 to 13 of 13 go out.
    status, doc, _ = stress(tmp_path, url, ["request-flood", "protocol-flood"], profile="smoke", step_duration=0.5,
                            level1_rate=10.0, level2_rate=27.0)
    assert status == "completed"
    pattern = [p for p in doc["stress"]["patterns"] if p["group"] == "protocol-flood"][0]
    assert flood in pattern["flood"]
    step = pattern["steps"][0]
    offered = step["offered"]
    # DNP3's one association: the monitor's reconnects displace the flood connection, so part of
    # the schedule is skipped as "disconnected"; everything written is answered normally.
    assert offered["written"] + offered["disconnected"] >= 8 and offered["written"] >= 3
    assert step["replies"].get("normal", 0) >= offered["written"] - 2
    assert doc["stress"]["verdicts"]["protocol-flood"]["verdict"] == "pass", doc["stress"]["verdicts"]
    assert doc["stress"]["verdicts"]["recovery"]["verdict"] == "pass"
    if name == "dnp3":
        assert any("one association" in n for n in doc["stress"]["notes"])


def test_datagram_floods_are_answered_and_connection_floods_are_not_applicable(tmp_path: Path, bacnet_device) -> None:
    """BACnet/IP over UDP: request, malformed and Who-Is floods from UDP sockets; no connections to flood."""
    host, port = bacnet_device
    status, doc, _ = stress(tmp_path, f"bacnet://{host}:{port}?device=999", list(GROUPS), profile="smoke",
                            step_duration=0.5, level1_rate=20.0, level2_rate=40.0)
    assert status == "completed"
    verdicts = doc["stress"]["verdicts"]
    assert verdicts["connection-flood"]["verdict"] == "not-run"
    assert verdicts["connection-flood"]["reasons"][0].startswith("not applicable: this protocol runs over datagrams")
    patterns = {p["group"]: p for p in doc["stress"]["patterns"]}
    assert not patterns["connection-flood"]["steps"]
    for group in ("request-flood", "protocol-flood"):
        step = patterns[group]["steps"][0]
        assert step["offered"]["written"] >= 8 and step["replies"].get("normal", 0) >= step["offered"]["written"] - 2, step
        assert verdicts[group]["verdict"] == "pass", verdicts[group]
    assert "Who-Is" in patterns["protocol-flood"]["flood"]
    malformed = patterns["malformed-flood"]["steps"][0]
    assert malformed["offered"]["written"] >= 8 and malformed["replies"].get("normal", 0) == 0  # refused or dropped, never normal
    assert verdicts["recovery"]["verdict"] == "pass"
