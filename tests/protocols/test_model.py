"""The declarative message model: one declaration builds, parses, checks and exposes boundaries."""

from __future__ import annotations

import pytest

from otfuzz.errors import DecodeError
from otfuzz.protocols.model import REST, Bytes, Checksum, Length, MessageType, UInt


def _sum8(data: bytes) -> int:
    return sum(data) & 0xFF


FRAME = MessageType(
    "frame",
    [
        UInt("magic", 16, default=0xCAFE, minimum=0xCAFE, maximum=0xCAFE),
        Length("length", 8, covers=REST),
        UInt("kind", 8, default=1, enum={1: "read", 2: "write"}),
        UInt("count", 16, endian="little", default=1, minimum=1, maximum=125),
        Length("byte_count", 8, covers=("data",)),
        Bytes("data", size_from="byte_count", max_size=250),
        Checksum("sum", 8, covers=("kind", "count", "byte_count", "data"), function=_sum8),
    ],
    constraints=[lambda v: None if len(v["data"]) == 2 * v["count"] else "byte count disagrees with count"],
)


def test_encode_computes_length_and_checksum_fields() -> None:
    frame = FRAME.encode(count=2, data=b"\x01\x02\x03\x04")
    assert frame.hex() == "cafe" + "09" + "01" + "0200" + "04" + "01020304" + f"{(1 + 2 + 4 + 10) & 0xFF:02x}"


def test_decode_round_trips_encode() -> None:
    frame = FRAME.encode(count=2, data=b"\x01\x02\x03\x04")
    values = FRAME.decode(frame)
    assert values["count"] == 2 and values["data"] == b"\x01\x02\x03\x04" and values["length"] == 9
    assert FRAME.encode({k: v for k, v in values.items() if k not in ("length", "byte_count", "sum")}) == frame


def test_explicit_value_overrides_a_computed_field() -> None:
    frame = FRAME.encode(count=1, data=b"\x00\x00", length=0xFF)
    assert frame[2] == 0xFF


def test_check_reports_wrong_length_limit_and_constraint() -> None:
    bad = FRAME.encode(count=200, data=b"\x00\x00", length=3)
    problems = FRAME.check(bad)
    assert any("length=3" in p for p in problems)
    assert any("count=200 above maximum 125" in p for p in problems)
    assert any("byte count disagrees" in p for p in problems)


def test_check_of_a_valid_frame_is_empty() -> None:
    assert FRAME.check(FRAME.encode(count=1, data=b"\x00\x01")) == []


def test_undefined_enum_value_is_a_violation() -> None:
    assert any("kind=9 is not a defined value" in p for p in FRAME.check(FRAME.encode(kind=9, count=1, data=b"ab")))


def test_decode_of_truncated_frame_raises_decode_error() -> None:
    with pytest.raises(DecodeError):
        FRAME.decode(FRAME.encode(count=1, data=b"ab")[:-3])


def test_trailing_bytes_are_an_error_only_when_exact() -> None:
    frame = FRAME.encode(count=1, data=b"ab") + b"\x00"
    with pytest.raises(DecodeError):
        FRAME.decode(frame)
    FRAME.decode(frame, exact=False)


def test_spans_give_offsets_of_every_field() -> None:
    spans = {s.field.name: (s.offset, s.size) for s in FRAME.spans(count=1, data=b"ab")}
    assert spans == {"magic": (0, 2), "length": (2, 1), "kind": (3, 1), "count": (4, 2), "byte_count": (6, 1),
                     "data": (7, 2), "sum": (9, 1)}


def test_uint_boundary_values_cover_limits_and_type_edges() -> None:
    values = UInt("q", 16, minimum=1, maximum=125).boundary_values()
    for expected in (0, 1, 2, 124, 125, 126, 0xFFFF, 0xFFFE, 0x8000, 0x7FFF, 0xFF, 0x100):
        assert expected in values
    assert len(values) == len(set(values))
    assert all(0 <= v <= 0xFFFF for v in values)


def test_bytes_boundary_values_include_empty_max_and_over_max() -> None:
    sizes = {len(v) for v in Bytes("d", max_size=250).boundary_values()}
    assert {0, 1, 250, 251} <= sizes


def test_little_endian_fields_encode_low_byte_first() -> None:
    assert UInt("x", 32, endian="little").encode(0x01020304) == b"\x04\x03\x02\x01"


def test_unsupported_width_is_rejected_at_declaration() -> None:
    with pytest.raises(ValueError):
        UInt("x", 12)


def test_a_field_may_be_named_values_without_clashing_with_encode() -> None:
    message = MessageType("m", [UInt("count", 8), Bytes("values", size=2)])
    assert message.encode({"count": 1}, values=b"\xff\xff") == b"\x01\xff\xff"


def test_64_bit_fields_round_trip_in_both_byte_orders() -> None:
    message = MessageType("m", [UInt("big", 64, default=0x0102030405060708), UInt("little", 64, "little", default=1)])
    data = message.encode()
    assert data == bytes(range(1, 9)) + b"\x01" + b"\x00" * 7
    assert message.decode(data) == {"big": 0x0102030405060708, "little": 1}
    assert (1 << 64) - 1 in UInt("x", 64).boundary_values()
