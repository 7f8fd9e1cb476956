"""Campaigns and a stress run against Debian's mosquitto 2.0 in MQTT 3.1.1 and 5.0: the session
keeps identifiers and QoS flows right, probing needs a second client to receive the probe, every
anomaly recorded is confirmed and is one of mosquitto's known leniencies (no crash, hang or reset
of otfuzz's own making), and a read-only campaign publishes nothing a `#` subscriber sees and
leaves every retained message as it was."""

from __future__ import annotations

import shlex
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from stress.conftest import stress
from targets.mosquitto_broker import command, start_broker, version, write_config
from targets.servers import HOST, free_port, stop_server

from otfuzz.cli import main
from otfuzz.report.json_report import validate_results
from otfuzz.report.results import load_results

pytestmark = pytest.mark.integration

# Spec violations of mosquitto 2.0.11 (tests/protocols/test_mqtt.py pins each): it accepts these.
LENIENCIES = (
    "remaining_length=# encoded in # bytes, the minimum is #",  # over-long Remaining Length
    "bytes after the last field of PINGREQ", "but PINGREQ requires #",  # PINGREQ body and flags unchecked
    "bytes after the last field of PUBREL", "bytes after the last field of PUBREC", "but PUBREC requires #",
    "but PUBACK requires #", "but PUBCOMP requires #",  # flags of PUBACK and PUBCOMP unchecked
    "authentication_data without an authentication_method",
    "share name of # bytes", "shared subscription without a topic filter", "no_local=# on a shared subscription",
    "packet_type=# (SUBACK) is sent by the server only",
)


def _campaign(tmp_path: Path, version_option: str, cases: int) -> dict:
    port = free_port()
    config = write_config(tmp_path / "mosquitto.conf", port)
    run = tmp_path / "run"
    status = main(["run", f"mqtt://{HOST}:{port}?version={version_option}", "--cases", str(cases), "--seed", "3", "--out",
                   str(run), "--quiet", "--target-cmd", shlex.join(command(config)), "--minimise-budget", "8",
                   "--confirm-time", "30"])
    assert status == 0
    doc = load_results(run)
    validate_results(doc)
    return doc


@pytest.mark.parametrize("version_option", ["4", "5"])
def test_campaign_against_mosquitto_confirms_every_anomaly_and_each_is_a_known_leniency(tmp_path: Path,
                                                                                        version_option: str) -> None:
    doc = _campaign(tmp_path, version_option, 400)
    assert doc["totals"]["cases"] == 400
    assert doc["totals"]["replies"].get("normal", 0) > 30  # identifiers and QoS flows stayed right
    assert doc["totals"]["replies"].get("exception", 0) > 10  # refusals were named, not taken for malformed
    assert doc["target"]["identity"] == {"product": "mosquitto", "revision": version()}
    assert "second client" in doc["liveness"]["method"]
    assert all(p["ok"] for p in doc["probes"])
    classes = {a["class"] for a in doc["anomalies"]}
    assert classes <= {"spec-violation"}, [(a["class"], a["description"], a["reply_detail"]) for a in doc["anomalies"]]
    for anomaly in doc["anomalies"]:
        assert anomaly["confirmation"]["status"] == "confirmed", anomaly["description"]
    for finding in doc["findings"]:  # every distinct behaviour is one of mosquitto's known leniencies
        assert finding["confirmation"]["status"] == "confirmed", finding["title"]
        assert any(words in rule for rule in finding["violated_rules"] for words in LENIENCIES), finding["key"]


class Watcher:
    """An independent MQTT 3.1.1 client (hand-built packets) subscribed to one filter: it collects
    every PUBLISH the broker delivers, from a thread, for a bounded time."""

    def __init__(self, port: int, topic_filter: bytes) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=2.0)
        self.sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00")  # clean session, keep alive 0
        assert self.sock.recv(4) == b"\x20\x02\x00\x00"
        body = b"\x00\x07" + len(topic_filter).to_bytes(2, "big") + topic_filter + b"\x00"
        self.sock.sendall(bytes([0x82, len(body)]) + body)
        self.buffer = b""
        self.published: list[tuple[bytes, bytes, bool]] = []  # (topic, payload, retain flag)
        self.acknowledged = False
        self._read_until(lambda: self.acknowledged, 2.0)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _packets(self) -> list[bytes]:
        """Whole packets in the buffer (removed from it); PUBLISHes recorded on the way."""
        out = []
        while len(self.buffer) >= 2:
            length, shift, at = 0, 0, 1
            while at < len(self.buffer) and self.buffer[at] & 0x80:
                length |= (self.buffer[at] & 0x7F) << shift
                shift, at = shift + 7, at + 1
            if at >= len(self.buffer):
                break
            length |= self.buffer[at] << shift
            end = at + 1 + length
            if len(self.buffer) < end:
                break
            packet, self.buffer = self.buffer[:end], self.buffer[end:]
            if packet[0] >> 4 == 9:
                self.acknowledged = True
            if packet[0] >> 4 == 3:
                body = packet[at + 1:]
                size = int.from_bytes(body[:2], "big")
                self.published.append((body[2:2 + size], body[2 + size:], bool(packet[0] & 1)))
            out.append(packet)
        return out

    def _read_until(self, done, seconds: float) -> None:
        """Read and parse until `done()` or the time is up."""
        deadline = time.monotonic() + seconds
        while not done() and time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, min(0.2, deadline - time.monotonic())))
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            if not data:
                return
            self.buffer += data
            self._packets()

    def _run(self) -> None:
        for _ in range(100_000):  # bounded; stopped by the test long before
            if self.stop.is_set():
                return
            self._read_until(lambda: False, 0.1)

    def start(self) -> Watcher:
        self.thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


RETAINED = {b"plant/line1/temperature": b"21.5", b"otfuzz/test/retained": b"set by the plant", b"otfuzz/test": b"last value"}


@pytest.fixture
def plant_broker() -> Iterator[int]:
    """A broker holding retained messages, as a plant's would."""
    port = free_port()
    proc = start_broker(port)
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            sock.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x00\x00\x00")
            assert sock.recv(4) == b"\x20\x02\x00\x00"
            for n, (topic, payload) in enumerate(RETAINED.items(), start=1):
                body = len(topic).to_bytes(2, "big") + topic + n.to_bytes(2, "big") + payload
                sock.sendall(bytes([0x33, len(body)]) + body)  # QoS 1, retained
                assert sock.recv(4) == bytes([0x40, 2, 0, n])
        yield port
    finally:
        stop_server(proc)


def _retained(port: int) -> dict[bytes, bytes]:
    """The retained messages, read back through the broker by a fresh subscriber on #."""
    watcher = Watcher(port, b"#")
    try:
        watcher._read_until(lambda: len([p for p in watcher.published if p[2]]) >= len(RETAINED), 2.0)
        return {topic: payload for topic, payload, retained in watcher.published if retained}
    finally:
        watcher.sock.close()


@pytest.mark.parametrize("version_option", ["4", "5"])
def test_read_only_campaign_publishes_nothing_and_leaves_retained_messages_unchanged(plant_broker: int, tmp_path: Path,
                                                                                     version_option: str) -> None:
    assert _retained(plant_broker) == RETAINED
    everything = Watcher(plant_broker, b"#").start()
    probes = Watcher(plant_broker, b"$otfuzz/#").start()
    try:
        status = main(["run", f"mqtt://{HOST}:{plant_broker}?version={version_option}", "--cases", "600", "--seed", "4",
                       "--read-only", "--out", str(tmp_path / "r"), "--quiet", "--probe-interval", "0.2", "--no-confirm",
                       "--recovery-timeout", "2"])  # a valid request left unanswered: waited for 2 s, not 10
    finally:
        everything.close()
        probes.close()
    assert status == 0
    # no publish from otfuzz reached a plant subscriber on # (the retained messages its own
    # subscription brought carry the retain flag; a live delivery never does, in 3.1.1)
    assert [p for p in everything.published if not p[2]] == []
    assert {topic for topic, _, _ in everything.published} <= set(RETAINED)
    # the health probes are the one publish a read-only campaign sends, on the $ topic # does not match
    assert len(probes.published) >= 5 and {topic for topic, _, _ in probes.published} == {b"$otfuzz/probe"}
    assert _retained(plant_broker) == RETAINED
    doc = load_results(tmp_path / "r")
    assert doc["totals"]["cases"] == 600 and doc["totals"]["replies"].get("normal", 0) > 20


def test_stress_smoke_floods_a_read_and_the_observed_probe_holds(tmp_path: Path) -> None:
    port = free_port()
    proc = start_broker(port)
    try:
        status, doc, _ = stress(tmp_path, f"mqtt://{HOST}:{port}", ["request-flood", "protocol-flood"], profile="smoke",
                                step_duration=0.5, level1_rate=20.0, level2_rate=40.0, cadence=0.1, deadline=0.1)
    finally:
        stop_server(proc)
    assert status == "completed"
    floods = {p["group"]: p for p in doc["stress"]["patterns"]}
    assert "SUBSCRIBE" in floods["request-flood"]["flood"] and "PINGREQ" in floods["protocol-flood"]["flood"]
    step = floods["protocol-flood"]["steps"][0]
    assert step["offered"]["written"] >= 8 and step["replies"].get("normal", 0) >= step["offered"]["written"] - 2
    assert doc["stress"]["verdicts"]["recovery"]["verdict"] == "pass"
    assert doc["stress"]["verdicts"]["request-flood"]["verdict"] == "pass", doc["stress"]["verdicts"]
