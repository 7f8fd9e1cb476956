"""Capture import: real exchanges captured on loopback come back as seeds with their real values."""

from __future__ import annotations

import json
from pathlib import Path

import dpkt
import pytest
from recording import Connection, connection_packets, write_capture

from otfuzz.capture.flows import build_flows
from otfuzz.capture.pcap import read_packets
from otfuzz.capture.seeds import captured_seeds, import_capture, load_seed_file
from otfuzz.cli import main
from otfuzz.protocols.modbus import ModbusTCP


def _steps(document: dict, protocol: str) -> list[dict]:
    endpoint = next(e for e in document["endpoints"] if e["protocol"] == protocol)
    return [s for session in endpoint["sessions"] for s in session["steps"]]


def test_modbus_import_keeps_real_values_despite_retransmission_reordering_and_overlap(modbus_capture, tmp_path: Path) -> None:
    written, document = import_capture(modbus_capture.path, tmp_path)
    counts = document["counts"]
    assert counts["retransmitted_segments"] == 1
    assert counts["out_of_order_segments"] == 1
    assert counts["overlapping_segments"] == 1
    assert counts["conflicting_overlaps"] == 0 and counts["unread_bytes"] == 0
    (endpoint,) = document["endpoints"]
    assert endpoint["protocol"] == "modbus" and endpoint["server"] == "10.0.0.9:502"
    by_type = {r["type"]: r for r in endpoint["requests"]}
    assert set(by_type) == {"read_holding_registers", "write_single_register", "read_coils", "read_input_registers"}
    assert by_type["read_holding_registers"]["values"]["address"] == 17
    assert by_type["write_single_register"]["values"] == {**by_type["write_single_register"]["values"], "address": 40, "value": 7}
    assert by_type["write_single_register"]["writes"] is True
    steps = _steps(document, "modbus")
    # the session is the client's requests in order, each with the server's own reply
    assert [bytes.fromhex(s["request"]) for s in steps] == modbus_capture.requests
    assert bytes.fromhex(steps[0]["reply"])[-6:] == bytes.fromhex("001100120013")
    assert all(s["reply"] and s["reply"][:4] == s["request"][:4] for s in steps)  # transaction ids match
    assert load_seed_file(written)[1] == document["sha256"]


def test_seed_file_round_trips_into_templates_of_the_target_module(modbus_capture, tmp_path: Path) -> None:
    written, document = import_capture(modbus_capture.path, tmp_path)
    seeds = captured_seeds(ModbusTCP(), "modbus", 502, written, document["sha256"])
    assert list(seeds.requests) == modbus_capture.requests
    assert [t.encode() for t in seeds.templates] == modbus_capture.requests
    assert seeds.sessions == (tuple(modbus_capture.requests),)
    data = json.loads(written.read_text())
    data["endpoints"][0]["requests"][0]["frame"] = "00"
    written.write_text(json.dumps(data))
    with pytest.raises(Exception, match="changed after import"):
        load_seed_file(written)


def test_dnp3_on_another_port_is_recognised_by_parsing_from_pcapng(dnp3_capture, tmp_path: Path) -> None:
    _, document = import_capture(dnp3_capture.path, tmp_path)
    (endpoint,) = document["endpoints"]
    assert endpoint["protocol"] == "dnp3" and endpoint["server"] == "10.0.0.20:21000"
    assert {r["type"] for r in endpoint["requests"]} == {"read_class_0", "read_binary_inputs"}
    # the second read of each type had other sequence numbers: normalised, they are one request each
    assert sorted(r["count"] for r in endpoint["requests"]) == [2, 2]
    assert document["counts"]["retransmitted_segments"] == 1
    assert all(s["reply"] for s in _steps(document, "dnp3") if not s["control"])


def test_iec104_link_traffic_is_recognised_but_only_asdus_become_request_types(iec104_capture, tmp_path: Path) -> None:
    _, document = import_capture(iec104_capture.path, tmp_path)
    (endpoint,) = document["endpoints"]
    assert endpoint["protocol"] == "iec104"
    assert {r["type"] for r in endpoint["requests"]} == {"general_interrogation", "set_point_scaled"}
    set_point = next(r for r in endpoint["requests"] if r["type"] == "set_point_scaled")
    assert set_point["values"]["ioa"] == 14 and set_point["values"]["ca"] == 47
    steps = _steps(document, "iec104")
    assert steps[0]["control"] and steps[0]["reply"]  # STARTDT act, confirmed
    assert document["counts"]["out_of_order_segments"] == 1
    assert endpoint["counts"]["unparsed"] == 0


def test_unknown_flows_and_unparsed_requests_are_counted_and_listed(modbus_capture, tmp_path: Path) -> None:
    junk = Connection([(1000.0, True, b"HELLO unknown protocol\r\n"), (1000.1, False, b"hi\r\n")])
    odd = Connection([(1001.0, True, bytes.fromhex("000100000006016300000001")), (1001.1, False, bytes.fromhex("00010000000301e301"))])
    packets = connection_packets(junk, ("10.0.0.5", 40100), ("10.0.0.7", 7777))
    packets += connection_packets(odd, ("10.0.0.5", 40101), ("10.0.0.9", 502), isn=5000)
    path = write_capture(tmp_path / "mixed.pcap", packets)
    _, document = import_capture(path, tmp_path / "seeds")
    assert document["counts"]["unknown_flows"] == 1
    assert document["unknown_flows"][0]["server"] == "10.0.0.7:7777"
    assert document["counts"]["unparsed_requests"] == 1
    assert document["endpoints"][0]["unparsed"][0]["frame"] == "000100000006016300000001"


def test_overlapping_segments_that_disagree_keep_the_first_bytes_and_are_counted(tmp_path: Path) -> None:
    frame = bytes.fromhex("000100000006010300110003")
    packets = connection_packets(Connection([(10.0, True, frame)]), ("10.0.0.5", 40000), ("10.0.0.9", 502))
    data_at = next(i for i, (_, raw) in enumerate(packets) if dpkt.ethernet.Ethernet(raw).data.data.data)
    eth = dpkt.ethernet.Ethernet(packets[data_at][1])
    tcp = eth.data.data
    rogue = dpkt.tcp.TCP(sport=tcp.sport, dport=tcp.dport, seq=tcp.seq + 8, ack=tcp.ack, flags=tcp.flags, data=b"\xff\xff\xff\xff")
    eth.data.data = rogue
    eth.data.len = len(eth.data)
    packets.insert(data_at + 1, (packets[data_at][0] + 0.0001, bytes(eth)))
    path = write_capture(tmp_path / "overlap.pcap", packets)
    (flow,) = build_flows(read_packets(path), frozenset({502}))
    assert flow.to_server.data == frame
    assert flow.to_server.stats.conflicting == 1


def test_capture_import_command_writes_the_seed_file(modbus_capture, tmp_path: Path, capsys) -> None:
    assert main(["capture", "import", str(modbus_capture.path), "--out", str(tmp_path / "seeds")]) == 0
    out = capsys.readouterr().out
    assert "modbus 10.0.0.9:502: 4 distinct requests" in out
    assert (tmp_path / "seeds" / "plant.seeds.json").is_file()


def test_udp_datagrams_form_one_flow_recognised_by_port(tmp_path: Path) -> None:
    from recording import udp_packet

    from otfuzz.protocols import default_instance

    bacnet = default_instance("bacnet")
    frames = [t.encode() for t in bacnet.templates()[:3]]
    packets = [(1.0 + i, udp_packet(("10.0.0.5", 50000), ("10.0.0.40", 47808), f)) for i, f in enumerate(frames)]
    _, document = import_capture(write_capture(tmp_path / "bacnet.pcap", packets), tmp_path / "seeds")
    (endpoint,) = document["endpoints"]
    assert (endpoint["protocol"], endpoint["transport"], endpoint["server"]) == ("bacnet", "udp", "10.0.0.40:47808")
    assert [r["frame"] for r in endpoint["requests"]] == [f.hex() for f in frames]
