"""Stress against the third-party IEC 104 (c104) and DNP3 (dnp3py) servers on loopback, with each
protocol's own flood message (TESTFR act, REQUEST_LINK_STATUS) at bounded rates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

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
    status, doc, _ = stress(tmp_path, url, ["request-flood", "protocol-flood"], profile="smoke", step_duration=0.5,
                            level1_rate=10.0, level2_rate=20.0)
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
