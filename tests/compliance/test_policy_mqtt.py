"""The conduit policy test for MQTT against a real mosquitto broker with no conduit in front:
every disallowed publish comes through, and the marker writes are seen to change the retained
message of the marker topic, read back on the broker itself."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from targets.mosquitto_broker import start_broker
from targets.servers import HOST, free_port, stop_server

from otfuzz.compliance.policy import PolicyTestConfig, run_policy_test

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("version", ["4", "5"])
def test_marker_publishes_are_observed_on_the_broker_and_reads_pass(tmp_path: Path, version: str) -> None:
    port = free_port()
    proc = start_broker(port)
    try:
        config = PolicyTestConfig(f"mqtt://{HOST}:{port}?version={version}", ["subscribe", "read_retained", "pingreq", 10],
                                  observe=f"{HOST}:{port}", timeout=0.3)
        section = asyncio.run(asyncio.wait_for(run_policy_test(config, tmp_path / "run"), timeout=60))
    finally:
        stop_server(proc)
    ops = {op["name"]: op for op in section["operations"]}
    for name in ("subscribe", "read_retained", "pingreq", "unsubscribe"):
        assert ops[name]["allowed"] and ops[name]["outcome"] == "passed", ops[name]
    for name in ("publish_qos0", "publish_qos1", "publish_qos2", "publish_retained"):
        assert not ops[name]["allowed"] and ops[name]["changed"] is True and ops[name]["outcome"] == "violation", ops[name]
    assert section["summary"]["violations"] >= 4
