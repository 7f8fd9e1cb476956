"""Variable byte integers in the message model (MQTT's Remaining Length and Property Length):
minimal encoding, decoding limits, nested variable lengths, and the fixed-width head that must
stop before them."""

from __future__ import annotations

import pytest

from otfuzz.errors import DecodeError
from otfuzz.protocols.model import REST, Bytes, Length, MessageType, UInt, VarInt, VarLength

# The MQTT 5.0 table of 1.5.5: the widest value of each width and the first of the next.
WIDTHS = [(0, "00"), (127, "7f"), (128, "8001"), (16383, "ff7f"), (16384, "808001"), (2097151, "ffff7f"),
          (2097152, "80808001"), (268435455, "ffffff7f")]

PACKET = MessageType(
    "packet",
    [
        UInt("header", 8, default=0x30),
        VarLength("remaining_length", covers=REST),
        Length("name_length", 16, covers=("name",)),
        Bytes("name", size_from="name_length", default=b"a/b"),
        VarLength("property_length", covers=("properties",)),
        Bytes("properties", size_from="property_length"),
        Bytes("payload"),
    ],
)


@pytest.mark.parametrize("value, encoded", WIDTHS)
def test_a_variable_byte_integer_uses_the_fewest_bytes_and_decodes_back(value: int, encoded: str) -> None:
    field = VarInt("n")
    assert field.encode(value).hex() == encoded
    assert field.decode(bytes.fromhex(encoded) + b"\xaa", 0) == (value, len(encoded) // 2)


def test_over_long_encodings_decode_to_the_same_value_and_a_fifth_byte_is_an_error() -> None:
    field = VarInt("n")
    assert field.decode(bytes.fromhex("80808000"), 0) == (0, 4)
    with pytest.raises(DecodeError, match="longer than 4 bytes"):
        field.decode(bytes.fromhex("8080808001"), 0)
    with pytest.raises(DecodeError, match="cut after 2 bytes"):
        field.decode(bytes.fromhex("8080"), 0)


def test_boundary_values_sit_where_the_width_changes_and_at_the_limits() -> None:
    values = VarInt("n", maximum=1000).boundary_values()
    assert [v for v, _ in WIDTHS] == [v for v in values if v in dict(WIDTHS)]
    assert {999, 1000, 1001} <= set(values) and 1 << 28 not in values
    assert VarInt("n").type_max == 268435455


def test_a_remaining_length_counts_the_real_width_of_a_nested_property_length() -> None:
    small = PACKET.encode(properties=b"\x01" * 3, payload=b"x")
    assert small.hex() == "30" + "0a" + "0003" + "612f62" + "03" + "010101" + "78"
    big = PACKET.encode(properties=b"\x01" * 200, payload=b"")
    # property length 200 takes two bytes: 2 + 3 + 2 + 200 = 207, itself two bytes
    assert big[1:3] == bytes.fromhex("cf01") and big[8:10] == bytes.fromhex("c801")
    assert len(big) == 1 + 2 + 207


def test_packets_with_variable_lengths_round_trip_and_check_clean() -> None:
    frame = PACKET.encode(properties=b"\x02" * 130, payload=b"hello")
    values = PACKET.decode(frame)
    assert values["remaining_length"] == len(frame) - 3 and values["property_length"] == 130
    assert values["payload"] == b"hello"
    assert PACKET.check(frame) == []
    assert any("remaining_length=9" in p for p in PACKET.check(PACKET.encode(remaining_length=9)))


def test_spans_give_each_variable_length_its_encoded_width() -> None:
    spans = {s.field.name: (s.offset, s.size) for s in PACKET.spans(properties=b"\x00" * 128)}
    assert spans["remaining_length"] == (1, 2) and spans["property_length"] == (8, 2)


def test_the_fixed_width_head_stops_before_a_variable_length() -> None:
    assert PACKET.head.names == ("header",)
    assert PACKET.decode(PACKET.encode())["name"] == b"a/b"


def test_variable_length_limits_are_checked_like_integer_limits() -> None:
    limited = MessageType("m", [VarInt("n", minimum=1, maximum=300)])
    assert limited.check(limited.encode(n=301)) == ["n=301 above maximum 300"]
    assert limited.check(limited.encode(n=0)) == ["n=0 below minimum 1"]
