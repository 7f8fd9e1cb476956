"""Stress against the third-party OPC UA server (asyncua 2.1.0) on loopback: the flood is the
module's Read of ServerStatus.State on opened sessions, each patched with its sequence number
and request handle, at bounded rates."""

from __future__ import annotations

from pathlib import Path

import pytest

from stress.conftest import stress
from targets.servers import free_port, script, start_server, stop_server

pytestmark = pytest.mark.integration


def test_opcua_read_flood_is_answered_and_the_essential_function_holds(tmp_path: Path) -> None:
    port = free_port()
    proc = start_server([*script("opcua_server.py"), "--port", str(port)], port)
    try:
        status, doc, _ = stress(tmp_path, f"opcua://127.0.0.1:{port}/otfuzz", ["request-flood", "protocol-flood"],
                                profile="smoke", step_duration=0.5, level1_rate=10.0, level2_rate=20.0)
    finally:
        stop_server(proc)
    assert status == "completed"
    pattern = [p for p in doc["stress"]["patterns"] if p["group"] == "protocol-flood"][0]
    assert "ServerStatus_State" in pattern["flood"]
    step = pattern["steps"][0]
    assert step["offered"]["written"] >= 3 and step["replies"].get("normal", 0) >= step["offered"]["written"] - 2
    assert doc["stress"]["verdicts"]["protocol-flood"]["verdict"] == "pass", doc["stress"]["verdicts"]
    assert doc["stress"]["verdicts"]["recovery"]["verdict"] == "pass"
