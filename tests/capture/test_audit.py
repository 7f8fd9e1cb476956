"""Passive conduit audit against the three-zone example, and the bad inputs of both commands."""

from __future__ import annotations

import json
from pathlib import Path

import dpkt
import pytest
from recording import Connection, connection_packets, write_capture

from otfuzz.cli import main

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "three-zone" / "system.yaml"


@pytest.fixture
def plant(modbus_capture, tmp_path: Path) -> Path:
    """Two real pymodbus requests: hmi-1 reading the filtration PLC (allowed by scada-polls-plc)
    and bi-server writing a register through the enterprise gateway (reads only)."""
    read, write = modbus_capture.requests[0], modbus_capture.requests[1]
    packets = connection_packets(Connection([(100.0, True, read)]), ("10.10.1.20", 40000), ("10.10.2.10", 502))
    packets += connection_packets(Connection([(101.0, True, write)]), ("10.10.0.20", 40001), ("10.10.0.1", 1502), isn=9000)
    return write_capture(tmp_path / "plant.pcapng", packets, pcapng=True)


def test_audit_flags_the_enterprise_write_and_allows_the_supervisory_read(plant: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "audit"
    assert main(["capture", "audit", str(plant), "--model", str(EXAMPLE), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "1 flagged" in table and "write_single_register (6)" in table
    document = json.loads((out / "audit.json").read_text())
    flows = {f["client_asset"]: f for f in document["flows"]}
    assert not flows["hmi-1"]["flagged"] and flows["hmi-1"]["channel"] == "supervisory-control/scada-polls-plc"
    assert flows["hmi-1"]["from_zone"] == "supervisory" and flows["hmi-1"]["to_zone"] == "control"
    bad = flows["bi-server"]
    assert bad["flagged"] and bad["server_asset"] == "scada-gateway" and bad["requirements"] == ["SR 5.2"]
    assert "not allowed" in bad["problems"][0]
    fails = [(v["zone"], v["requirement"]) for v in document["verdicts"] if v["verdict"] == "fail"]
    assert fails == [("supervisory", "SR 5.2")]
    assert "<script" not in (out / "audit.html").read_text()
    # otfuzz gap takes the audit folder as conduit evidence: SR 5.2 fails for the supervisory zone
    assert main(["gap", str(EXAMPLE), str(out), "--json"]) == 0
    section = json.loads(capsys.readouterr().out)
    zone = next(z for z in section["zones"] if z["name"] == "supervisory")
    verdict = next(r for r in zone["requirements"] if r["id"] == "SR 5.2")
    assert verdict["verdict"] == "fail" and "capture audit" in verdict["reason"]


def test_audit_flags_a_flow_between_zones_without_a_channel_and_escapes_html(modbus_capture, tmp_path: Path) -> None:
    packets = connection_packets(Connection([(100.0, True, modbus_capture.requests[0])]), ("10.10.0.20", 40000), ("10.10.2.10", 502))
    path = write_capture(tmp_path / "direct.pcap", packets)
    system = tmp_path / "system.yaml"
    system.write_text(EXAMPLE.read_text().replace("system: Riverside water treatment plant", "system: Riverside <script>x</script>"))
    assert main(["capture", "audit", str(path), "--model", str(system), "--out", str(tmp_path / "a")]) == 0
    document = json.loads((tmp_path / "a" / "audit.json").read_text())
    (flow,) = document["flows"]
    assert flow["requirements"] == ["SR 5.1"] and "no conduit channel carries modbus from enterprise to control" in flow["problems"][0]
    html = (tmp_path / "a" / "audit.html").read_text()
    assert "<script>x" not in html and "&lt;script&gt;x" in html


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("otfuzz: error: ") and "\n" not in err
    return err


def test_truncated_capture_is_refused(modbus_capture, tmp_path: Path, capsys) -> None:
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(modbus_capture.path.read_bytes()[:-7])
    assert main(["capture", "import", str(cut), "--out", str(tmp_path / "s")]) == 2
    assert "truncated" in _one_line_error(capsys)
    assert not (tmp_path / "s").exists()


def test_wrong_magic_is_refused(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "notes.pcap"
    bad.write_bytes(b"GIF89a not a capture at all")
    assert main(["capture", "import", str(bad), "--out", str(tmp_path / "s")]) == 2
    assert "not a pcap or pcapng file" in _one_line_error(capsys)


def test_unsupported_link_type_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "usb.pcap"
    with open(path, "wb") as fh:
        dpkt.pcap.Writer(fh, linktype=189).writepkt(b"\x00" * 48, ts=1.0)
    assert main(["capture", "audit", str(path), "--model", str(EXAMPLE)]) == 2
    assert "unsupported link type 189" in _one_line_error(capsys)


def test_capture_with_no_recognised_protocol_is_refused(tmp_path: Path, capsys) -> None:
    packets = connection_packets(Connection([(1.0, True, b"GET / HTTP/1.0\r\n\r\n"), (1.1, False, b"HTTP/1.0 200 OK\r\n\r\n")]),
                                 ("10.0.0.5", 40000), ("10.0.0.7", 8080))
    path = write_capture(tmp_path / "web.pcap", packets)
    assert main(["capture", "import", str(path), "--out", str(tmp_path / "s")]) == 2
    assert "no supported protocol recognised" in _one_line_error(capsys)
    assert main(["capture", "audit", str(path), "--model", str(EXAMPLE)]) == 2
    assert "no supported protocol recognised" in _one_line_error(capsys)


def test_model_that_does_not_check_is_refused(plant: Path, tmp_path: Path, capsys) -> None:
    model = tmp_path / "system.yaml"
    model.write_text(EXAMPLE.read_text().replace("server: plc-filtration", "server: plc-nowhere"))
    assert main(["capture", "audit", str(plant), "--model", str(model), "--out", str(tmp_path / "a")]) == 2
    assert "plc-nowhere" in _one_line_error(capsys)
    assert not (tmp_path / "a").exists()
