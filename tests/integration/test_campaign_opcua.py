"""Campaigns against a real OPC UA server (asyncua 2.1.0): the session keeps the secure channel
and the session right, every target-level anomaly is one pinned asyncua bug, and a read-only
campaign leaves the server's values as they were."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from asyncua import ua

from otfuzz.cli import main
from otfuzz.protocols.opcua import parse_messages
from otfuzz.report.json_report import validate_results
from otfuzz.report.results import load_results
from targets.servers import TARGETS, free_port, start_server, stop_server

OPTIONS = "node=ns=2;i=1001&object=ns=2;i=1000&method=ns=2;i=1010"
WATCHED = ((2, 1001), (2, 1003), (2, 1004))  # Setpoint, Counter, Marker: the writable variables


def _server(port: int) -> list[str]:
    return [sys.executable, str(TARGETS / "opcua_server.py"), "--port", str(port)]


def _campaign(tmp_path: Path, port: int, cases: int, *extra: str) -> dict:
    run = tmp_path / "run"
    status = main(["run", f"opcua://127.0.0.1:{port}/otfuzz?{OPTIONS}", "--cases", str(cases), "--seed", "3",
                   "--out", str(run), "--quiet", "--minimise-budget", "12", "--confirm-time", "40", *extra])
    assert status == 0
    doc = load_results(run)
    validate_results(doc)
    return doc


DECODE = """
import resource, sys
from asyncua import ua
from asyncua.common.utils import Buffer
from asyncua.ua.ua_binary import struct_from_binary
resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))
body = bytes.fromhex(sys.argv[1])
try:
    struct_from_binary(getattr(ua, sys.argv[2]), Buffer(body))
except MemoryError:
    sys.exit(3)
except Exception:
    sys.exit(0)
"""


def _asyncua_decoder_exhausts_memory(frame: bytes) -> bool:
    """True when asyncua's decoder, given a message of `frame`, runs out of 512 MiB of memory."""
    for message in parse_messages(frame)[0]:
        _, name = message.service()
        if name is None:
            continue
        done = subprocess.run([sys.executable, "-c", DECODE, message.body.hex(), name], timeout=120, check=False)
        if done.returncode == 3:
            return True
    return False


def test_opcua_campaign_against_asyncua_keeps_the_session_and_every_target_anomaly_is_the_pinned_bug(tmp_path: Path) -> None:
    port = free_port()
    # a valid request left unanswered (the server dropped the session) is waited for 4 s, not 10
    doc = _campaign(tmp_path, port, 400, "--target-cmd", shlex.join(_server(port)), "--recovery-timeout", "4")
    assert doc["totals"]["cases"] == 400
    assert doc["totals"]["replies"].get("normal", 0) > 30  # channel, token, sequence numbers and session kept right
    assert "ActivateSession" in doc["liveness"]["method"]
    for anomaly in doc["anomalies"]:
        if anomaly["class"] in ("crash", "hang", "unresponsive-after", "degradation"):
            # The one target-level bug of asyncua 2.1.0 this module finds: its decoder builds a
            # list as long as a Variant array of Null elements says (tests/protocols/test_opcua.py
            # pins it). Lenient decoding may reach such a Variant anywhere in a mutated body, so
            # the proof is asyncua's own decoder running out of memory on the reproducer.
            frame = bytes.fromhex(anomaly["reproducer"]["frames_hex"][-1])
            assert _asyncua_decoder_exhausts_memory(frame), (anomaly["class"], anomaly["description"])
        else:
            # Reply-level only. asyncua decodes in Python on the event loop, so on a loaded machine
            # (the whole suite on two cores) a reply now and then comes later than the learned
            # bound: a slow reply is a true observation there, not a lost session.
            assert anomaly["class"] in ("spec-violation", "malformed-reply", "slow-reply"), anomaly["class"]
            assert anomaly["confirmation"]["status"] in ("confirmed", "not reproduced")


def _values(port: int) -> list[object]:
    """The watched variables' values, read through the server by asyncua's own client."""
    from asyncua import Client

    async def read() -> list[object]:
        async with Client(f"opc.tcp://127.0.0.1:{port}/otfuzz", timeout=5) as client:
            return [await client.get_node(ua.NodeId(ident, ns)).read_value() for ns, ident in WATCHED]

    return asyncio.run(read())


def test_a_read_only_campaign_leaves_every_value_unchanged(tmp_path: Path) -> None:
    port = free_port()
    proc = start_server(_server(port), port)
    try:
        before = _values(port)
        # what is sent, not what it finds; a valid request left unanswered waits 2 s, not 10
        doc = _campaign(tmp_path, port, 300, "--read-only", "--no-confirm", "--recovery-timeout", "2")
        assert doc["totals"]["cases"] == 300 and doc["totals"]["replies"].get("normal", 0) > 20
        assert _values(port) == before == [21.5, 7, 0.0]
    finally:
        stop_server(proc)


@pytest.mark.parametrize("url", ["opcua://127.0.0.1:4840/x?security=basic256", "opcua://127.0.0.1:4840?node=ns=2;q=1"])
def test_bad_url_options_stop_with_one_line_and_status_2(tmp_path: Path, capsys, url: str) -> None:
    assert main(["run", url, "--cases", "5", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "opcua:" in err
