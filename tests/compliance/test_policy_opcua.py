"""A conduit policy test of OPC UA against a real asyncua 2.1.0 server with no conduit in front:
every operation comes through, and the marker write is seen on the server itself, although
every answer carries a fresh timestamp, request handle and sequence number."""

from __future__ import annotations

import asyncio
from pathlib import Path

from targets.servers import free_port, script, start_server, stop_server

from otfuzz.compliance.policy import PolicyTestConfig, run_policy_test

READS = ["read", "browse", "translate_browse_paths_to_node_ids", "get_endpoints", "find_servers"]


def test_an_open_path_to_an_opcua_server_lets_the_marker_write_through_and_it_is_observed(tmp_path: Path) -> None:
    port = free_port()
    proc = start_server([*script("opcua_server.py"), "--port", str(port)], port)
    try:
        config = PolicyTestConfig(f"opcua://127.0.0.1:{port}/otfuzz", READS, observe=f"127.0.0.1:{port}", timeout=2.0)
        section = asyncio.run(asyncio.wait_for(run_policy_test(config, tmp_path / "run"), timeout=60))
    finally:
        stop_server(proc)
    ops = {op["name"]: op for op in section["operations"]}
    assert all(ops[name]["outcome"] == "passed" for name in READS)
    assert ops["write"]["outcome"] == "violation" and ops["write"]["changed"] is True and ops["write"]["reply_kind"] == "normal"
    assert ops["read"]["changed"] is None  # reads are not observed
    assert ops["create_subscription"]["changed"] is None and ops["call"]["changed"] is False  # Call changes no variable
