"""Campaigns against a real BACnet/IP device (bacpypes3 0.0.110) over the UDP transport: every
anomaly recorded is confirmed by replay, none is target-level on a healthy device, a read-only
campaign leaves the device as it found it, and the policy test runs over datagrams."""

from __future__ import annotations

import asyncio
import shlex
import socket
import sys
from pathlib import Path

import pytest

from otfuzz.cli import main
from otfuzz.protocols.bacnet import RPM_ONE_TYPE, BACnetIP, object_identifier
from otfuzz.report.json_report import validate_results
from otfuzz.report.results import load_results
from otfuzz.transport import open_connection
from targets.bacnet_fixture import BACNET_INSTANCE, start_bacnet_device
from targets.servers import TARGETS, free_port, stop_server

pytestmark = pytest.mark.integration

URL = "bacnet://127.0.0.1:{port}?device=%d" % BACNET_INSTANCE


def _snapshot(port: int) -> list[bytes]:
    """Everything a write or a subscription could change, read back through the device itself."""
    protocol = BACnetIP({"device": str(BACNET_INSTANCE)})
    reads = [RPM_ONE_TYPE.encode(object_id=object_identifier(kind, instance), property_id=8)  # all properties
             for kind, instance in ((2, 1), (2, 2), (5, 1), (10, 1))]
    reads.append(RPM_ONE_TYPE.encode(object_id=object_identifier(8, BACNET_INSTANCE), property_id=152))  # COV subscriptions

    async def run() -> list[bytes]:
        conn = await open_connection(protocol, "127.0.0.1", port, 1.0)
        try:
            out = []
            for frame in reads:
                result = await conn.exchange(frame, 1.0)
                assert result.outcome == "reply", frame.hex()
                out.append(result.reply[4:])  # the invoke id differs per read: compare from the NPDU on
            return [r[:3] + r[4:] for r in out]
        finally:
            conn.close()

    return asyncio.run(run())


def test_campaign_against_bacpypes3_finds_only_confirmed_reply_level_anomalies(tmp_path: Path) -> None:
    port = free_port(socket.SOCK_DGRAM)
    server = [sys.executable, str(TARGETS / "bacnet_device.py"), "--port", str(port), "--instance", str(BACNET_INSTANCE)]
    run = tmp_path / "run"
    assert main(["run", URL.format(port=port), "--cases", "400", "--seed", "3", "--out", str(run), "--quiet",
                 "--target-cmd", shlex.join(server), "--minimise-budget", "8", "--confirm-time", "30"]) == 0
    doc = load_results(run)
    validate_results(doc)
    assert doc["totals"]["cases"] == 400
    assert doc["totals"]["replies"].get("normal", 0) > 20  # invoke ids, segments and notifications handled right
    assert doc["target"]["identity"] == {"vendor": "otfuzz test lab", "model": "bacpypes3 test device", "firmware_revision": "0.0.110"}
    classes = {a["class"] for a in doc["anomalies"]}
    assert classes <= {"spec-violation", "malformed-reply"}, classes  # bacpypes3 survives everything in these cases
    # bacpypes3 drops confirmed requests it cannot decode instead of rejecting them: each such
    # silence is a spec violation, found again on replay
    silent = [a for a in doc["anomalies"] if a["reply_detail"].startswith("no answer: a confirmed request must be answered")]
    assert silent and all(a["confirmation"]["status"] in ("confirmed", "not replayed: confirmation time budget exhausted")
                          for a in silent)
    assert all(a["confirmation"]["status"] != "not reproduced" for a in doc["anomalies"] if a["class"] == "malformed-reply")


def test_read_only_campaign_leaves_every_value_and_subscription_as_it_was(tmp_path: Path) -> None:
    proc, port = start_bacnet_device()
    try:
        before = _snapshot(port)
        assert main(["run", URL.format(port=port) + "&source_port=fresh", "--cases", "300", "--seed", "8", "--read-only",
                     "--concurrency", "2", "--out", str(tmp_path / "run"), "--quiet", "--no-confirm"]) == 0
        after = _snapshot(port)
    finally:
        stop_server(proc)
    doc = load_results(tmp_path / "run")
    assert doc["totals"]["cases"] == 300 and doc["totals"]["replies"].get("normal", 0) > 20
    assert after == before


def test_policy_test_over_datagrams_sees_every_write_a_direct_endpoint_lets_through(bacnet_device, tmp_path: Path) -> None:
    host, port = bacnet_device
    run = tmp_path / "policy"
    status = main(["policy-test", URL.format(port=port), "--allow", "read", "--observe", f"{host}:{port}",
                   "--out", str(run), "--timeout", "0.5"])
    assert status in (0, 1)
    section = load_results(run)["policy"]
    by_name = {op["name"]: op for op in section["operations"]}
    assert by_name["read_property"]["outcome"] == "passed"
    # no conduit in front of the device: the writes reach it, and the marker values show on the inside read
    for name in ("write_property", "write_property_multiple"):
        assert by_name[name]["outcome"] == "violation" and by_name[name]["changed"] is True, by_name[name]
    assert by_name["reinitialize_device"]["outcome"] == "skipped"  # disruptive: not sent by default
