"""Modbus/TCP module: declarations, request checks, reply classification and session framing,
proven by hand-built frames and against real servers (pymodbus 3.16.1 and our faulty server)."""

from __future__ import annotations

import signal
import socket
import time

import pytest
from targets.servers import server_stderr

from hypothesis import given, settings
from module_robustness import exercise, near
from otfuzz.errors import OtfuzzError
from otfuzz.protocols import protocol_class
from otfuzz.protocols.base import ReplyKind, Template
from otfuzz.protocols.model import Length
from otfuzz.protocols.modbus import _FUNCTIONS, ModbusSession, ModbusTCP

MODBUS = ModbusTCP()
MBAP_NAMES = ["transaction_id", "protocol_id", "length", "unit_id", "function_code"]


def template(name: str, protocol: ModbusTCP = MODBUS) -> Template:
    return next(t for t in protocol.templates() if t.name == name)


def adu(pdu_hex: str, tid: int = 7, unit: int = 1, protocol_id: int = 0, length: int | None = None) -> bytes:
    """A Modbus/TCP frame around a PDU given as hex (test input, deliberately independent of the module)."""
    body = bytes([unit]) + bytes.fromhex(pdu_hex.replace(" ", ""))
    size = len(body) if length is None else length
    return tid.to_bytes(2, "big") + protocol_id.to_bytes(2, "big") + size.to_bytes(2, "big") + body


def kind(request: bytes, reply: bytes) -> ReplyKind:
    return MODBUS.classify(request, reply).kind


# -- declarations and templates --------------------------------------------------------------

REQUIRED = {(1, None), (2, None), (3, None), (4, None), (5, None), (6, None), (7, None), (11, None), (12, None),
            (15, None), (16, None), (17, None), (20, None), (21, None), (22, None), (23, None), (24, None), (43, 14)}
REQUIRED |= {(8, sub) for sub in (0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 20)}


def _code_and_sub(frame: bytes) -> tuple[int, int | None]:
    code = frame[7]
    if code == 8:
        return code, int.from_bytes(frame[8:10], "big")
    if code == 43:
        return code, frame[8]
    return code, None


def test_templates_cover_every_public_function_code_and_diagnostic_sub_function() -> None:
    assert {_code_and_sub(t.encode()) for t in MODBUS.templates()} == REQUIRED


@pytest.mark.parametrize("tpl", MODBUS.templates(), ids=lambda t: t.name)
def test_every_template_is_a_valid_request_that_round_trips(tpl: Template) -> None:
    frame = tpl.encode()
    values = tpl.message.decode(frame)
    for name, value in tpl.values.items():
        assert values[name] == value, name
    assert values["length"] == len(frame) - 6 and values["protocol_id"] == 0
    plain = {k: v for k, v in values.items() if not isinstance(tpl.message.field_named(k), Length)}
    assert tpl.message.encode(plain) == frame
    assert tpl.message.check(frame) == []
    assert MODBUS.check_request(frame) == []


@pytest.mark.parametrize("message", MODBUS.message_types(), ids=lambda m: m.name)
def test_every_message_type_starts_with_the_named_mbap_fields(message) -> None:
    assert [f.name for f in message.fields[:5]] == MBAP_NAMES


def test_write_and_disruptive_flags_follow_the_specification() -> None:
    writes = {_code_and_sub(t.encode()) for t in MODBUS.templates() if t.writes}
    disruptive = {_code_and_sub(t.encode()) for t in MODBUS.templates() if t.disruptive}
    assert disruptive == {(8, 1), (8, 4)}
    assert writes == {(5, None), (6, None), (15, None), (16, None), (21, None), (22, None), (23, None),
                      (8, 1), (8, 3), (8, 4), (8, 10), (8, 20)}
    for tpl in MODBUS.templates():
        assert MODBUS.is_write(tpl.encode()) == (tpl.writes or tpl.disruptive), tpl.name


@pytest.mark.parametrize(
    ("name", "field", "low", "high"),
    [("read_coils", "quantity", 1, 2000), ("read_discrete_inputs", "quantity", 1, 2000),
     ("read_holding_registers", "quantity", 1, 125), ("read_input_registers", "quantity", 1, 125),
     ("write_multiple_coils", "quantity", 1, 1968), ("write_multiple_registers", "quantity", 1, 123),
     ("read_write_multiple_registers", "read_quantity", 1, 125),
     ("read_write_multiple_registers", "write_quantity", 1, 121)],
)
def test_spec_quantity_limits_are_declared_as_field_limits(name: str, field: str, low: int, high: int) -> None:
    declared = template(name).message.field_named(field)
    assert (declared.minimum, declared.maximum) == (low, high)
    assert {low - 1, low, high, high + 1} <= set(declared.boundary_values())


def test_compiled_decoder_agrees_with_the_model_on_templates_and_faults() -> None:
    frames = []
    for tpl in MODBUS.templates():
        frames.append(tpl.encode())
        frames += [frame for _, frame in MODBUS.structural_faults(tpl)]
    checked = 0
    for func in _FUNCTIONS:
        for frame in frames:
            try:
                expected = func.message.decode_prefix(frame)
            except ValueError:
                with pytest.raises(ValueError):
                    func.decoder.decode_prefix(frame)
                continue
            assert func.decoder.decode_prefix(frame) == expected
            assert func.decoder.violations(expected[0]) == func.message.violations(expected[0])
            checked += 1
    assert checked > 500


def test_registry_resolves_the_modbus_scheme() -> None:
    assert protocol_class("modbus") is ModbusTCP
    assert ModbusTCP.default_port == 502 and ModbusTCP.schemes == ("modbus",)


def test_options_set_unit_and_probe_address_and_reject_bad_values() -> None:
    custom = ModbusTCP({"unit": "17", "probe_address": "300"})
    assert custom.probe().frame[6] == 17 and custom.probe().frame[8:12] == bytes.fromhex("012c0001")
    assert all(t.values["unit_id"] == 17 for t in custom.templates())
    for bad in ({"unit": "256"}, {"unit": "x"}, {"probe_address": "70000"}, {"colour": "red"}):
        with pytest.raises(OtfuzzError):
            ModbusTCP(bad)


def test_describe_names_the_function_and_its_fields() -> None:
    assert MODBUS.describe(template("read_holding_registers").encode()) == \
        "read holding registers (fc 3) unit 1: address=0 quantity=10"
    assert "diagnostics: force listen only mode (fc 8)" in MODBUS.describe(template("diagnostics/force_listen_only_mode").encode())
    assert "undefined function code 0x09" in MODBUS.describe(adu("09"))
    assert "user-defined function code 0x41" in MODBUS.describe(adu("41"))
    assert "truncated" in MODBUS.describe(adu("0300"))
    assert "fragment" in MODBUS.describe(b"\x00\x01")


# -- check_request ---------------------------------------------------------------------------

VIOLATIONS = [
    ("protocol id not 0", adu("0300000001", protocol_id=1), "protocol_id=1"),
    # The MBAP length delimits the ADU: a short length truncates the PDU (the rest is the next request).
    ("length field too short", adu("0300000001", length=5), "truncated"),
    ("length field too long", adu("0300000001", length=0xFFFF), "length=65535"),
    ("short frame", b"\x00\x01\x00\x00\x00\x02\x01", "shorter than an MBAP header"),
    ("function code 0", adu("00"), "function code 0 is not a valid function"),
    ("reserved function code", adu("09"), "function code 9 (0x09) is reserved"),
    ("unassigned function code", adu("13"), "function code 19 (0x13) is not a defined Modbus function"),
    ("exception bit in request", adu("83 0000 0001"), "exception bit set"),
    ("read coils quantity 0", adu("01 0000 0000"), "quantity=0 below minimum 1"),
    ("read coils quantity 2001", adu("01 0000 07d1"), "quantity=2001 above maximum 2000"),
    ("read inputs quantity 2001", adu("02 0000 07d1"), "quantity=2001 above maximum 2000"),
    ("read holding quantity 126", adu("03 0000 007e"), "quantity=126 above maximum 125"),
    ("read input registers quantity 0", adu("04 0000 0000"), "quantity=0 below minimum 1"),
    ("address overflow", adu("03 ffff 0002"), "address+quantity=65537 runs past the last address"),
    ("coil value neither on nor off", adu("05 0000 1234"), "value=4660 is not a defined value"),
    ("truncated read", adu("03 0000"), "read_holding_registers truncated"),
    ("trailing bytes", adu("03 0000 0001 00"), "1 trailing bytes"),
    ("write coils quantity 1969", adu("0f 0000 07b1 f7" + "00" * 247), "quantity=1969 above maximum 1968"),
    ("write coils byte count disagrees", adu("0f 0000 000a 01 cd"), "byte_count=1 but quantity=10 needs 2"),
    ("write registers quantity 124", adu("10 0000 007c f8" + "00" * 248), "quantity=124 above maximum 123"),
    ("write registers byte count disagrees", adu("10 0000 0002 02 0001"), "byte_count=2 but quantity=2 needs 4"),
    ("write registers data shorter than byte count", adu("10 0000 0002 04 0001"), "truncated"),
    ("read/write read quantity 126", adu("17 0000 007e 0000 0001 02 0000"), "read_quantity=126 above maximum 125"),
    ("read/write write quantity 122", adu("17 0000 0001 0000 007a f4" + "00" * 244), "write_quantity=122 above maximum 121"),
    ("read/write byte count disagrees", adu("17 0000 0001 0000 0002 02 0000"), "write_byte_count=2 but write_quantity=2 needs 4"),
    ("read/write write overflow", adu("17 0000 0001 ffff 0002 04 00000000"), "write_address+write_quantity=65537"),
    ("undefined diagnostics sub-function", adu("08 0013 0000"), "sub_function=19 is not a defined value"),
    ("diagnostics counter with data", adu("08 000b 0001"), "data=1 is not a defined value"),
    ("restart option data", adu("08 0001 1234"), "data=4660 is not a defined value"),
    ("delimiter low byte not zero", adu("08 0003 0a01"), "the byte after the delimiter must be 00"),
    ("device id code 5", adu("2b 0e 05 00"), "read_device_id_code=5 is not a defined value"),
    ("undefined MEI type", adu("2b 0c 00"), "mei_type=12 is not a defined value"),
    ("file record reference type 5", adu("14 07 05 0004 0001 0002"), "reference_type=5"),
    ("file record number 10000", adu("14 07 06 0004 2710 0002"), "record_number=10000 above maximum 9999"),
    ("file read byte count disagrees", adu("14 08 06 0004 0001 0002"), "byte_count=8 but 7 bytes"),
    ("file read second sub-request bad", adu("14 0e 06 0004 0001 0002 07 0004 0001 0002"), "sub-request 2: reference_type=7"),
    ("file read reply too large", adu("14 07 06 0004 0001 0080"), "above the 253-byte PDU"),
    ("file write record length disagrees", adu("15 0d 06 0004 0007 0002 06af04be100d"), "sub-request 2: file_number"),
    ("file write data length disagrees", adu("15 0f 06 0004 0007 0003 06af04be100d"), "request_data_length=15 but 13"),
    ("oversized ADU", adu("10 0000 007b f6" + "00" * 246 + "0000"), "exceeds the 260-byte maximum"),
]


@pytest.mark.parametrize(("label", "frame", "expected"), VIOLATIONS, ids=[v[0] for v in VIOLATIONS])
def test_check_request_reports_each_kind_of_violation(label: str, frame: bytes, expected: str) -> None:
    problems = MODBUS.check_request(frame)
    assert any(expected in p for p in problems), problems


def test_check_request_accepts_vendor_function_codes_and_other_mei_types() -> None:
    assert MODBUS.check_request(adu("41 0102")) == []
    assert MODBUS.check_request(adu("64")) == []
    assert MODBUS.check_request(adu("2b 0d 0001")) == []
    assert MODBUS.check_request(adu("08 0000 a537 beef")) == []  # return query data echoes any length


# -- classify --------------------------------------------------------------------------------

READ3 = adu("03 0000 0005")
REPLY3 = adu("03 0a 0000 0001 0002 0003 0004")

# (request, real pymodbus 3.16.1 reply captured on loopback)
REAL_REPLIES = {
    "read coils": (adu("01 0000 0010", tid=2), bytes.fromhex("0002000000050101025555")),
    "read holding registers": (adu("03 0000 0005", tid=1), bytes.fromhex("00010000000d01030a00000001000200030004")),
    "read input registers": (adu("04 0000 0003", tid=4), bytes.fromhex("00040000000901040603e803e903ea")),
    "write single coil": (adu("05 0000 ff00"), bytes.fromhex("00070000000601050000ff00")),
    "read exception status": (adu("07"), bytes.fromhex("000700000003010700")),
    "diagnostics counter": (adu("08 000b 0000"), bytes.fromhex("0007000000060108000b0000")),
    "comm event counter": (adu("0b"), bytes.fromhex("000700000006010b00000000")),
    "comm event log": (adu("0c"), bytes.fromhex("000700000009010c06000000000000")),
    "write multiple coils": (adu("0f 0000 000a 02 cd01"), bytes.fromhex("000700000006010f0000000a")),
    "report server id": (adu("11"), bytes.fromhex("0007000000190111166f7466757a7a2d746573742d504d2d332e31362e31ff")),
    "write file record": (adu("15 0d 06 0004 0007 0003 06af04be100d"),
                          bytes.fromhex("00070000001001150d0600040007000306af04be100d")),
    "mask write": (adu("16 0004 ffff 0000"), bytes.fromhex("00070000000801160004ffff0000")),
    "read/write registers": (adu("17 0003 0006 000e 0003 06 000e000f0010"),
                             bytes.fromhex("00070000000f01170c000300040005000600070008")),
    "read fifo": (adu("18 0000"), bytes.fromhex("00070000000e0118000a00040000000100020003")),
    "device identification": (adu("2b 0e 01 00", tid=6), bytes.fromhex(
        "000600000021012b0e0183000003000b6f7466757a7a2d746573740102504d0206332e31362e31")),
}


@pytest.mark.parametrize("name", sorted(REAL_REPLIES))
def test_real_pymodbus_replies_classify_as_normal(name: str) -> None:
    request, reply = REAL_REPLIES[name]
    verdict = MODBUS.classify(request, reply)
    assert verdict.kind is ReplyKind.NORMAL, verdict


def test_exception_reply_is_exception_with_code_and_name() -> None:
    verdict = MODBUS.classify(READ3, adu("83 02"))
    assert verdict.kind is ReplyKind.EXCEPTION and verdict.detail == "exception 0x02 illegal data address"


def test_fc_0x80_rejection_counts_as_exception_only_for_requests_that_do_not_decode() -> None:
    assert kind(adu("09"), adu("80 01")) is ReplyKind.EXCEPTION
    assert kind(adu("41"), adu("80 01")) is ReplyKind.EXCEPTION
    assert kind(adu("03 0000 00c8"), adu("80 01")) is ReplyKind.EXCEPTION  # pymodbus on quantity 200
    assert kind(b"\x00\x07\x00\x00\x00\x01\x01", adu("80 01")) is ReplyKind.EXCEPTION
    assert kind(READ3, adu("80 01")) is ReplyKind.MALFORMED  # a valid request deserves fc 0x83


MALFORMED = [
    ("does not parse", READ3, bytes.fromhex("000700000003"), "too short"),
    ("wrong length field", READ3, adu("03 0a 0000 0001 0002 0003 0004", length=20), "wrong length field"),
    ("wrong transaction id", READ3, adu("03 0a 0000 0001 0002 0003 0004", tid=8), "wrong transaction id 8"),
    ("wrong unit id", READ3, adu("03 0a 0000 0001 0002 0003 0004", unit=2), "wrong unit id 2"),
    ("protocol id in reply", READ3, adu("03 0a 0000 0001 0002 0003 0004", protocol_id=1), "protocol id 1"),
    ("function code echo wrong", READ3, adu("04 0a 0000 0001 0002 0003 0004"), "function code echo wrong"),
    ("exception with wrong function code", READ3, adu("84 02"), "function code echo wrong"),
    ("exception of wrong size", READ3, adu("83 02 00"), "exception reply of 10 bytes"),
    ("byte count disagrees with quantity", READ3, adu("03 08 0000 0001 0002 0003"), "byte_count=8 but quantity=5"),
    ("byte count disagrees with data", READ3, adu("03 0a 0000 0001 0002 0003"), "does not parse"),
    ("coil byte count", adu("01 0000 0010"), adu("01 01 55"), "byte_count=1 but quantity=16"),
    ("write single register not echoed", adu("06 0001 0001"), adu("06 0001 0002"), "does not echo"),
    ("write multiple echoes other quantity", adu("10 0002 0002 04 00020003"), adu("10 0002 0003"), "quantity=3"),
    ("write multiple reply too long", adu("10 0002 0002 04 00020003"), adu("10 0002 0002 00"), "does not parse"),
    ("diagnostic counter without value", adu("08 000b 0000"), adu("08 000b"), "does not parse"),
    ("listen-only answered", adu("08 0004 0000"), adu("08 0004"), "reply of 10 bytes"),
    ("event log byte count", adu("0c"), adu("0c 07 0000 0000 0000"), "byte_count=7 but 6"),
    ("fifo byte count", adu("18 0000"), adu("18 0008 0004 0000000100020003"), "byte_count=8 but 10"),
    ("fifo count above 31", adu("18 0000"), adu("18 0042 0020" + "0000" * 32), "fifo_count=32 above maximum 31"),
    ("device id object count", adu("2b 0e 01 00"), adu("2b 0e 01 83 00 00 02 00 01 41"), "number_of_objects=2 but 1"),
    ("device id object overruns", adu("2b 0e 01 00"), adu("2b 0e 01 83 00 00 01 00 05 41"), "claims 5 bytes"),
    ("device id code not echoed", adu("2b 0e 01 00"), adu("2b 0e 02 83 00 00 00"), "does not echo 1"),
    ("file record data size", adu("14 07 06 0004 0001 0002"), bytes.fromhex(
        "00070000001901141615065345525645522044554d4d59205245434f52442e"), "record data of [20] bytes"),
]


@pytest.mark.parametrize(("label", "request_", "reply", "why"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_classify_reports_each_kind_of_malformed_reply(label: str, request_: bytes, reply: bytes, why: str) -> None:
    verdict = MODBUS.classify(request_, reply)
    assert verdict.kind is ReplyKind.MALFORMED and why in verdict.detail, verdict


def test_differing_echo_of_an_invalid_request_is_normal_so_the_engine_sees_a_spec_violation() -> None:
    request = adu("05 0000 1234")  # pymodbus answers this with value ff00
    assert MODBUS.check_request(request)
    assert kind(request, adu("05 0000 ff00")) is ReplyKind.NORMAL
    assert kind(adu("05 0000 0000"), adu("05 0000 ff00")) is ReplyKind.MALFORMED


def test_normal_reply_to_a_vendor_function_code_is_normal() -> None:
    assert kind(adu("41 01"), adu("41 0102")) is ReplyKind.NORMAL


def test_probe_ok_accepts_only_a_well_formed_answer_to_the_probe() -> None:
    frame = MODBUS.probe().frame
    good = frame[:4] + bytes.fromhex("0005 01 03 02 0000")
    assert MODBUS.probe_ok(good)
    assert not MODBUS.probe_ok(frame[:4] + bytes.fromhex("0003 01 83 02"))
    assert not MODBUS.probe_ok(good[:-1])
    assert not MODBUS.probe_ok(b"")


def test_parse_identity_reads_vendor_product_and_revision() -> None:
    request, reply = REAL_REPLIES["device identification"]
    reply = MODBUS.identify()[0][:2] + reply[2:]
    assert MODBUS.parse_identity(reply) == {"vendor": "otfuzz-test", "product_code": "PM", "revision": "3.16.1"}
    assert MODBUS.parse_identity(reply[:-3]) == {}
    assert MODBUS.parse_identity(b"garbage") == {}


# -- is_write ---------------------------------------------------------------------------------


def test_is_write_is_robust_to_garbage_and_conservative_about_unknown_effects() -> None:
    for frame in (b"", b"\x00", b"\xff" * 7, adu("03"), adu("08"), adu("2b"), bytes(range(256))):
        MODBUS.is_write(frame)  # never raises
    assert not MODBUS.is_write(adu("03 0000 0001"))
    assert not MODBUS.is_write(adu("08 000b 0000"))
    assert not MODBUS.is_write(adu("00")) and not MODBUS.is_write(adu("ff"))
    assert MODBUS.is_write(adu("08 0063 0000"))  # undefined diagnostics sub-function
    assert MODBUS.is_write(adu("08"))  # sub-function unknown
    assert MODBUS.is_write(adu("5a 0024"))  # 90: UMAS, can stop a PLC
    assert MODBUS.is_write(adu("41"))  # vendor code, unknown effect
    assert MODBUS.is_write(adu("2b 0d 00"))  # CANopen general reference


def test_is_write_finds_a_write_hidden_behind_a_short_length_field() -> None:
    hidden = adu("03 0000 0001", length=6) + adu("06 0001 0001")
    assert MODBUS.check_request(hidden) == []  # the first request is a valid read...
    assert MODBUS.is_write(hidden)  # ...but the target parses the rest as a write


# -- session framing --------------------------------------------------------------------------


def test_session_frames_a_reply_split_over_chunks() -> None:
    session = MODBUS.session()
    for chunk in (REPLY3[:3], REPLY3[3:7], REPLY3[7:-1]):
        session.feed(chunk)
        assert session.next_reply() is None
    session.feed(REPLY3[-1:])
    assert session.next_reply() == REPLY3 and session.next_reply() is None and session.leftover() == b""


def test_session_splits_two_replies_in_one_chunk() -> None:
    session = ModbusSession()
    second = adu("83 02")
    session.feed(REPLY3 + second + second[:4])
    assert session.next_reply() == REPLY3 and session.next_reply() == second
    assert session.next_reply() is None and session.leftover() == second[:4]


@pytest.mark.parametrize("length", [0, 1, 255, 0xFFFF])
def test_session_returns_the_whole_buffer_when_the_length_is_absurd(length: int) -> None:
    session = MODBUS.session()
    junk = adu("03 02 0000", length=length) + b"\x01\x02"
    session.feed(junk)
    reply = session.next_reply()
    assert reply == junk and session.leftover() == b""
    assert kind(READ3, reply) is ReplyKind.MALFORMED


# -- structural faults ------------------------------------------------------------------------


def _faults(tpl: Template) -> list[tuple[str, bytes]]:
    return list(MODBUS.structural_faults(tpl))


@pytest.mark.parametrize("tpl", MODBUS.templates(), ids=lambda t: t.name)
def test_structural_faults_are_distinct_flagged_frames(tpl: Template) -> None:
    faults = _faults(tpl)
    frames = [frame for _, frame in faults]
    assert len(faults) >= 15 and len(set(frames)) == len(frames) and tpl.encode() not in frames
    # vendor codes may be valid; return-query-data carries any amount of data, so a cut one is valid
    valid = {"undefined function code 0x41", "undefined function code 0x64"}
    if tpl.name == "diagnostics/return_query_data":
        valid |= {"cut mid-PDU, length adjusted", "one trailing byte counted in the length",
                  "four trailing bytes counted in the length", "MBAP length one short"}
    for description, frame in faults:
        if description not in valid:
            assert MODBUS.check_request(frame), description
    descriptions = " | ".join(d for d, _ in faults)
    for expected in ("MBAP length one short", "MBAP length one long", "MBAP length zero", "MBAP length 0xFFFF",
                     "truncated to the MBAP header", "trailing byte", "protocol id 1",
                     "protocol id 0xFFFF", "undefined function code 0x00", "undefined function code 0xff"):
        assert expected in descriptions
    assert ("cut mid-PDU" in descriptions) == (len(tpl.encode()) > 8)
    assert ("| byte_count one more" in descriptions) == (tpl.name in {"write_multiple_coils", "write_multiple_registers"})
    assert ("write_byte_count one less" in descriptions) == (tpl.name == "read_write_multiple_registers")


# -- against pymodbus 3.16.1 ------------------------------------------------------------------


def exchange(address: tuple[str, int], frames: list[bytes], timeout: float = 1.0) -> list[bytes | None]:
    """Send each frame on one connection and frame its reply with the module's session (None: silence)."""
    replies: list[bytes | None] = []
    with socket.create_connection(address, timeout=timeout) as sock:
        session = MODBUS.session()
        for frame in frames:
            sock.sendall(frame)
            replies.append(_receive(sock, session, timeout))
    return replies


def _receive(sock: socket.socket, session: ModbusSession, timeout: float) -> bytes | None:
    deadline = time.monotonic() + timeout
    while (reply := session.next_reply()) is None:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return None
        if not chunk:
            return None
        session.feed(chunk)
    return reply


# pymodbus deviations the module must report: it answers listen-only mode (the specification says
# never) and returns a fixed dummy record whatever record length was asked for.
PYMODBUS_MALFORMED = {"diagnostics/force_listen_only_mode", "read_file_record"}


@pytest.mark.integration
def test_pymodbus_answers_every_template_as_the_module_expects(pymodbus_server: tuple[str, int]) -> None:
    templates = sorted(MODBUS.templates(), key=lambda t: t.disruptive)  # disruptive ones last
    replies = exchange(pymodbus_server, [t.encode() for t in templates])
    for tpl, reply in zip(templates, replies):
        assert reply is not None, tpl.name
        verdict = MODBUS.classify(tpl.encode(), reply)
        expected = ReplyKind.MALFORMED if tpl.name in PYMODBUS_MALFORMED else ReplyKind.NORMAL
        assert verdict.kind is expected, (tpl.name, verdict)


@pytest.mark.integration
def test_pymodbus_rejections_and_spec_violations_are_classified(pymodbus_server: tuple[str, int]) -> None:
    cases = [
        (adu("03 0000 00c8"), ReplyKind.EXCEPTION, True),  # quantity 200: fc 0x80 exception 01
        (adu("03 1388 0001"), ReplyKind.EXCEPTION, False),  # address 5000 outside the datastore: 0x83 02
        (adu("2b 0e 05 00"), ReplyKind.EXCEPTION, True),  # read device id code 5: 0xab 03
        (adu("09"), ReplyKind.EXCEPTION, True),
        (adu("41"), ReplyKind.EXCEPTION, False),
        (adu("05 0000 1234"), ReplyKind.NORMAL, True),  # accepted although neither ON nor OFF
        (adu("08 0013 0000"), ReplyKind.NORMAL, True),  # undefined sub-function 19 echoed
        (adu("14 07 05 0004 0001 0002"), ReplyKind.MALFORMED, True),  # reference type 5 answered with a dummy
    ]
    replies = exchange(pymodbus_server, [frame for frame, _, _ in cases])
    for (frame, expected, invalid), reply in zip(cases, replies):
        assert reply is not None, frame.hex()
        assert MODBUS.classify(frame, reply).kind is expected, (frame.hex(), reply.hex())
        assert bool(MODBUS.check_request(frame)) == invalid, frame.hex()
    exception = MODBUS.classify(cases[1][0], replies[1])
    assert exception.detail == "exception 0x02 illegal data address"


@pytest.mark.integration
def test_a_reply_to_a_request_with_trailing_bytes_is_judged_against_the_fields_the_server_read(pymodbus_server: tuple[str, int]) -> None:
    """pymodbus reads a write's fields and ignores what follows: its echo of those fields is a
    correct reply (the request's trailing bytes are the request's spec violation, reported as
    such), while a reply that is no echo of them at all is still malformed."""
    frames = [adu("06 0003 0007 abcd"), adu("05 0000 ff00 00"), adu("16 0004 00f2 0025 0102 03")]
    replies = exchange(pymodbus_server, frames)
    for frame, reply in zip(frames, replies):
        assert reply is not None and len(reply) < len(frame), frame.hex()
        assert MODBUS.classify(frame, reply).kind is ReplyKind.NORMAL, (frame.hex(), reply.hex())
        assert any("trailing bytes" in p for p in MODBUS.check_request(frame)), frame.hex()
    # cut short: pymodbus answers a whole echo of its own reading, the request's violation again
    (short,) = exchange(pymodbus_server, [adu("08 000a 00")])
    assert short is not None and len(short) == len(adu("08 000a 0000"))
    assert MODBUS.classify(adu("08 000a 00"), short).kind is ReplyKind.NORMAL and MODBUS.check_request(adu("08 000a 00"))
    wrong = replies[0][:-1] + b"\x08"  # value 8 echoed for 7
    assert MODBUS.classify(frames[0], wrong).kind is ReplyKind.MALFORMED
    # trailing bytes and an undefined value: pymodbus answers what it made of the fields (ON for
    # 0x26ff, data 0 for 0x0100), the right shape; the request's violations are the finding
    lenient = [adu("05 0000 26ff 00"), adu("08 000a 0100 abab")]
    for frame, reply in zip(lenient, exchange(pymodbus_server, lenient)):
        assert reply is not None and MODBUS.classify(frame, reply).kind is ReplyKind.NORMAL, (frame.hex(), reply.hex())


@pytest.mark.integration
def test_pymodbus_probe_and_identity(fresh_pymodbus: tuple[str, int]) -> None:
    protocol = ModbusTCP({"unit": "9", "probe_address": "42"})
    probe_reply, identity_reply = exchange(fresh_pymodbus, [protocol.probe().frame, protocol.identify()[0]])
    assert probe_reply is not None and protocol.probe_ok(probe_reply)
    assert probe_reply[-2:] == (42).to_bytes(2, "big")  # holding register i holds i
    assert identity_reply is not None
    assert protocol.parse_identity(identity_reply) == {"vendor": "otfuzz-test", "product_code": "PM", "revision": "3.16.1"}


@pytest.mark.integration
def test_pymodbus_never_answers_a_structural_fault_with_a_malformed_reply(pymodbus_server: tuple[str, int]) -> None:
    tpl = template("read_holding_registers")
    for description, frame in _faults(tpl):
        (reply,) = exchange(pymodbus_server, [frame], timeout=0.25)
        if reply is not None:
            assert MODBUS.classify(frame, reply).kind is not ReplyKind.MALFORMED, description
    assert exchange(pymodbus_server, [MODBUS.probe().frame])[0] is not None


# -- against the faulty server ----------------------------------------------------------------

SUPPORTED = {"read_coils", "read_discrete_inputs", "read_holding_registers", "read_input_registers",
             "write_single_coil", "write_single_register", "diagnostics/return_query_data",
             "write_multiple_coils", "write_multiple_registers"}


@pytest.mark.integration
def test_faulty_server_without_faults_is_a_correct_modbus_server(faulty_server) -> None:
    address = faulty_server()
    templates = list(MODBUS.templates())
    for tpl, reply in zip(templates, exchange(address, [t.encode() for t in templates])):
        assert reply is not None, tpl.name
        verdict = MODBUS.classify(tpl.encode(), reply)
        if tpl.name in SUPPORTED:
            assert verdict.kind is ReplyKind.NORMAL, (tpl.name, verdict)
        else:
            assert verdict == verdict.__class__(ReplyKind.EXCEPTION, "exception 0x01 illegal function"), tpl.name
    invalid = [(adu("03 0000 0000"), 3), (adu("01 0000 07d1"), 3), (adu("03 2710 0001"), 2), (adu("05 0000 1234"), 3),
               (adu("0f 0000 000a 01 cd"), 3), (adu("10 0000 0002 02 0001"), 3), (adu("08 0001 0000"), 1)]
    for (frame, code), reply in zip(invalid, exchange(address, [f for f, _ in invalid])):
        assert reply is not None
        assert MODBUS.classify(frame, reply).detail.startswith(f"exception 0x{code:02x}"), frame.hex()


@pytest.mark.integration
def test_faulty_server_drops_bad_protocol_ids_and_closes_on_absurd_length(faulty_server) -> None:
    address = faulty_server()
    dropped, answered = exchange(address, [adu("03 0000 0001", protocol_id=1), READ3], timeout=0.3)
    assert dropped is None and answered is not None and kind(READ3, answered) is ReplyKind.NORMAL
    with socket.create_connection(address, timeout=2) as sock:
        sock.sendall(adu("03 0000 0001", length=255))
        assert sock.recv(100) == b""  # closed by the server


@pytest.mark.integration
def test_specviolation_fault_answers_out_of_limit_quantities_normally(faulty_server) -> None:
    address = faulty_server("specviolation:3", "specviolation:1")
    frames = [adu("03 0000 0000"), adu("01 0000 07d1"), adu("04 0000 0000")]
    replies = exchange(address, frames)
    for frame, reply in zip(frames[:2], replies[:2]):
        assert reply is not None and kind(frame, reply) is ReplyKind.NORMAL and MODBUS.check_request(frame)
    assert replies[2] is not None and kind(frames[2], replies[2]) is ReplyKind.EXCEPTION  # fc 4 not faulty


@pytest.mark.integration
def test_malformed_fault_is_classified_malformed_only_at_its_address(faulty_server) -> None:
    address = faulty_server("malformed:3:50")
    frames = [adu("03 0032 0002"), adu("03 0033 0002")]
    bad, good = exchange(address, frames)
    assert bad is not None and good is not None
    verdict = MODBUS.classify(frames[0], bad)
    assert verdict.kind is ReplyKind.MALFORMED and "transaction id" in verdict.detail
    fixed_tid = frames[0][:2] + bad[2:]
    assert MODBUS.classify(frames[0], fixed_tid).kind is ReplyKind.MALFORMED  # byte count 5 for 4 data bytes
    assert kind(frames[1], good) is ReplyKind.NORMAL


@pytest.mark.integration
def test_crash_fault_kills_the_server_with_sigsegv(faulty_server) -> None:
    host, port = faulty_server("crash:6:1")
    proc = faulty_server.process(port)
    assert exchange((host, port), [READ3])[0] is not None
    (reply,) = exchange((host, port), [template("write_single_register").encode()])
    assert reply is None
    assert proc.wait(timeout=5) == -signal.SIGSEGV
    assert "faulty_modbus: crash triggered by fc=6" in server_stderr(proc)


@pytest.mark.integration
def test_hang_fault_blocks_every_connection_then_recovers(faulty_server) -> None:
    address = faulty_server("hang:6", hang_seconds=1.0)
    with socket.create_connection(address, timeout=3) as hanging:
        hanging.sendall(template("write_single_register").encode())
        time.sleep(0.1)
        started = time.monotonic()
        (other,) = exchange(address, [READ3], timeout=3)  # another connection waits for the hang too
        assert other is not None and time.monotonic() - started >= 0.7
        session = MODBUS.session()
        assert _receive(hanging, session, 3) is not None
    started = time.monotonic()
    assert exchange(address, [READ3])[0] is not None and time.monotonic() - started < 0.5


@pytest.mark.integration
def test_unresponsive_fault_silences_every_connection(faulty_server) -> None:
    address = faulty_server("unresponsive:6")
    before, trigger, after = exchange(address, [READ3, template("write_single_register").encode(), READ3], timeout=0.3)
    assert before is not None and trigger is None and after is None
    with socket.create_connection(address, timeout=1):  # still accepts connections
        pass
    assert exchange(address, [READ3], timeout=0.3) == [None]


@pytest.mark.integration
def test_degrade_fault_delays_every_later_reply(faulty_server) -> None:
    address = faulty_server("degrade:6", degrade_ms=200)
    started = time.monotonic()
    assert exchange(address, [READ3])[0] is not None
    assert time.monotonic() - started < 0.15
    exchange(address, [template("write_single_register").encode()])
    started = time.monotonic()
    (reply,) = exchange(address, [READ3])
    assert reply is not None and kind(READ3, reply) is ReplyKind.NORMAL and time.monotonic() - started >= 0.18


@pytest.mark.integration
def test_reset_fault_resets_the_connection_without_answering(faulty_server) -> None:
    address = faulty_server("reset:3:7")
    with socket.create_connection(address, timeout=2) as sock:
        sock.sendall(adu("03 0007 0001"))
        with pytest.raises(ConnectionResetError):
            sock.recv(100)
    assert exchange(address, [READ3])[0] is not None


def test_bytes_after_the_mbap_length_belong_to_the_next_request() -> None:
    valid = adu("0300000001")
    assert MODBUS.check_request(valid + valid) == []
    assert MODBUS.check_request(valid + b"\x00") == []
    assert MODBUS.frame_length(valid + valid) == len(valid)


def test_repair_makes_the_mbap_length_and_protocol_id_consistent() -> None:
    mutated = bytes.fromhex("0001 0007 0009 01 03 0000 0001 ff".replace(" ", ""))
    repaired = MODBUS.repair(mutated)
    assert repaired[2:6] == b"\x00\x00\x00\x07" and repaired[6:] == mutated[6:]
    assert MODBUS.repair(b"\x00\x01") == b"\x00\x01"


_POOL = [t.encode() for t in MODBUS.templates()] + [f for t in MODBUS.templates() for _, f in MODBUS.structural_faults(t)]


@settings(max_examples=400, deadline=None)
@given(near(_POOL), near(_POOL + [REPLY3]))
def test_no_input_makes_the_module_raise(request: bytes, reply: bytes) -> None:
    """Fuzzed requests and hostile replies are data, never a crash of otfuzz itself."""
    exercise(MODBUS, request, reply)


def test_reply_to_the_next_request_in_the_stream_is_classified_against_that_request() -> None:
    # A target that drops a frame with a foreign protocol id and answers the request after it
    # in the same stream is right; the reply must not count as a malformed answer to the first.
    dropped = adu("0c", tid=0x0100, protocol_id=0x377F)
    second = adu("03 0000 0005", tid=1)
    reply = adu("03 0a 0000 0001 0002 0003 0004", tid=1)
    assert kind(dropped + second, reply) is ReplyKind.NORMAL
    assert kind(dropped + second, adu("04 0a 0000 0001 0002 0003 0004", tid=1)) is ReplyKind.MALFORMED  # still checked
    verdict = MODBUS.classify(dropped + second, adu("03 0a 0000 0001 0002 0003 0004", tid=2))
    assert verdict.kind is ReplyKind.MALFORMED and "wrong transaction id 2, request had 256" in verdict.detail


def test_a_truncated_write_still_names_the_byte_count_that_disagrees_with_its_quantity() -> None:
    # fc 15, quantity 4 needs 1 byte, byte_count says 128, then the data is cut: both are true.
    problems = MODBUS.check_request(adu("0f 0000 0004 80 ff"))
    assert any("truncated" in p for p in problems), problems
    assert "byte_count=128 but quantity=4 needs 1 (one bit per coil)" in problems
    assert not any("byte_count" in p for p in MODBUS.check_request(adu("0f 0000 0010 02 ff")))  # cut, count right


def test_a_reply_with_the_same_transaction_id_answers_the_request_it_matches_in_unit_and_function() -> None:
    # Both frames carry transaction id 1; the target drops the first (protocol id 0xcf6a) and
    # answers the second: its reply is judged against the second.
    dropped = adu("80 0000", tid=1, unit=0x80, protocol_id=0xCF6A)
    second = adu("03 0000 0001", tid=1)
    assert kind(dropped + second, adu("03 02 0000", tid=1)) is ReplyKind.NORMAL
    assert "wrong unit id" in MODBUS.classify(dropped + second, adu("03 02 0000", tid=1, unit=9)).detail
