"""MQTT 3.1.1 and 5.0 (OASIS), the client side against a broker, sans-IO.

Covered: every control packet a client sends (CONNECT with will, credentials and MQTT 5
properties, PUBLISH at QoS 0/1/2 and retained, PUBACK/PUBREC/PUBREL/PUBCOMP, SUBSCRIBE with
wildcards and shared subscriptions `$share/{name}/{filter}`, UNSUBSCRIBE, PINGREQ, DISCONNECT and,
in 5.0, AUTH) declared with the message model, the Remaining Length and Property Length as
variable byte integers (`VarLength`), strings as a 2-byte length and UTF-8 bytes, MQTT 5
properties as (identifier, value) fields (faults append duplicate, unknown or misplaced ones
with `with_properties`). Replies are walked by one parser (`parse_packet`)
that also judges requests: the Remaining Length must use the fewest bytes, strings must be
well-formed UTF-8 without U+0000, properties must be defined for their packet, appear once
(user properties excepted) and keep their limits.

`check_request` lists only what a broker must refuse (3.1.1 closes the connection on any
protocol violation, 5.0 answers a reason code of 0x80 or above or DISCONNECT with one, or closes
it): a sender's MUST NOT that the receiver may tolerate (DUP set at QoS 0, a Subscription
Identifier in a client's PUBLISH, a payload not matching its Payload Format Indicator, an
undefined reason code in a client's PUBACK/PUBREC/PUBREL/PUBCOMP) is sent as a fault but not
reported. A broker closing the connection on a malformed packet is the
standard's own answer, never a finding.

Packet identifiers. Templates carry packet identifier 1 (`PACKET_ID_AUTO`) wherever the client
allocates one (PUBLISH at QoS 1 and 2, SUBSCRIBE, UNSUBSCRIBE, PUBREL); `MQTTSession.prepare`
replaces it by the connection's next identifier not in use, so identifiers are unique per
connection while any other field is faulty. Any other value is sent as it is: faults about
identifiers (0, one in use) keep theirs. PUBACK, PUBREC and PUBCOMP answer identifiers the
broker chose and are never rewritten.

Which packet is the reply to a request (`MQTTSession.feed`): CONNACK to CONNECT, PUBACK or PUBREC
to PUBLISH at QoS 1 or 2, PUBCOMP to PUBREL, PUBREL to PUBREC, SUBACK to SUBSCRIBE, UNSUBACK to
UNSUBSCRIBE, PINGRESP to PINGREQ, AUTH to AUTH, matched by type and identifier; a DISCONNECT from
the broker (5.0) always is. Answers owed to earlier packets of the same frame (or to an earlier
request) are dropped. The QoS 2 flow goes on by itself: a PUBREC is answered with PUBREL and its
PUBCOMP dropped, and every PUBLISH the broker delivers (we subscribe to what we publish) is
acknowledged (PUBACK, or PUBREC and then PUBCOMP to its PUBREL) through `take_output` and never
taken for a reply. The `read_retained` request is a SUBSCRIBE followed by PINGREQ: its reply is
the retained messages the broker sends for the filter, then the PINGRESP.

Connection state. A frame that starts with CONNECT is sent on a fresh connection without the
session's own CONNECT (`needs_opening` is False), so CONNECT templates test the handshake. A
packet before CONNECT is written as PINGREQ followed by that packet: the PINGREQ itself is the
first violation, and such a frame also goes out on a fresh connection. A second CONNECT is
written after an UNSUBSCRIBE (a frame that does not start with CONNECT). A DISCONNECT sent, or
one received from a 5.0 broker, ends the session (`Session.ended`): no further frame goes out
on that connection.

Writes (`is_write`, conservative). Every PUBLISH is a write, retained or not, at any QoS: it
changes what other clients receive. So is a CONNECT with a will (the broker publishes the will
when the connection drops), one asking the broker to keep the session after the connection
(clean session 0, or a Session Expiry Interval above 0), and a DISCONNECT with reason 0x04
(publish the will). SUBSCRIBE and UNSUBSCRIBE are not writes: they change only our own session's
subscriptions, which end with our clean session when the connection closes, and no other client
sees them. The exception is a SUBSCRIBE to a shared subscription (`$share/` anywhere in it):
joining a share group takes messages away from the group's other members, so it counts as a
write. AUTH and PINGREQ are not writes.

The health probe is a PUBLISH at QoS 1 to the probe topic (`?probe_topic=`, by default
`$otfuzz/probe`): it passes when the broker acknowledges it with PUBACK and a second client
(`probe_observer()`, whose opening subscribes to the probe topic) receives it. The default topic
starts with `$`, which the wildcard filters `#` and `+/...` of other clients never match (MQTT
4.7.2), so a plant's monitoring subscribers do not see probes; the probe is the one publish a
read-only campaign sends. Identity is what the broker publishes, retained, at
`$SYS/broker/version` (mosquitto, and others that keep the `$SYS` convention).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from otfuzz.errors import OtfuzzError
from otfuzz.protocols.base import OptionSpec, Probe, Protocol, ReplyKind, ReplyVerdict, Session, Template, distinct_faults
from otfuzz.protocols.model import REST, Bytes, Field, Length, MessageType, UInt, VarInt, VarLength

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
PACKET_NAMES: Mapping[int, str] = MappingProxyType({
    0: "reserved packet type 0", CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH", PUBACK: "PUBACK",
    PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP", SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK",
    UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ", PINGRESP: "PINGRESP",
    DISCONNECT: "DISCONNECT", AUTH: "AUTH",
})  # fmt: skip
SERVER_ONLY = frozenset({CONNACK, SUBACK, UNSUBACK, PINGRESP})
CLIENT_ONLY = frozenset({CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ})
# Fixed header flags every packet type but PUBLISH must carry (MQTT 2.1.3).
FIXED_FLAGS: Mapping[int, int] = MappingProxyType({t: 2 if t in (PUBREL, SUBSCRIBE, UNSUBSCRIBE) else 0
                                                   for t in range(1, 16) if t != PUBLISH})
PACKET_ID_AUTO = 1
"""The packet identifier templates carry where the session allocates one (module docstring)."""
MAX_REMAINING = (1 << 28) - 1

# MQTT 5.0 reason codes (2.4) and which packets may carry each (tables 3-1 .. 3-13).
REASON_CODES: Mapping[int, str] = MappingProxyType({
    0x00: "Success", 0x01: "Granted QoS 1", 0x02: "Granted QoS 2", 0x04: "Disconnect with Will Message",
    0x10: "No matching subscribers", 0x11: "No subscription existed", 0x18: "Continue authentication",
    0x19: "Re-authenticate", 0x80: "Unspecified error", 0x81: "Malformed Packet", 0x82: "Protocol Error",
    0x83: "Implementation specific error", 0x84: "Unsupported Protocol Version", 0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password", 0x87: "Not authorized", 0x88: "Server unavailable", 0x89: "Server busy",
    0x8A: "Banned", 0x8B: "Server shutting down", 0x8C: "Bad authentication method", 0x8D: "Keep Alive timeout",
    0x8E: "Session taken over", 0x8F: "Topic Filter invalid", 0x90: "Topic Name invalid",
    0x91: "Packet Identifier in use", 0x92: "Packet Identifier not found", 0x93: "Receive Maximum exceeded",
    0x94: "Topic Alias invalid", 0x95: "Packet too large", 0x96: "Message rate too high", 0x97: "Quota exceeded",
    0x98: "Administrative action", 0x99: "Payload format invalid", 0x9A: "Retain not supported",
    0x9B: "QoS not supported", 0x9C: "Use another server", 0x9D: "Server moved",
    0x9E: "Shared Subscriptions not supported", 0x9F: "Connection rate exceeded", 0xA0: "Maximum connect time",
    0xA1: "Subscription Identifiers not supported", 0xA2: "Wildcard Subscriptions not supported",
})  # fmt: skip
_PUBACK_CODES = frozenset({0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99})
_PUBREL_CODES = frozenset({0x00, 0x92})
REASONS_BY_PACKET: Mapping[int, frozenset[int]] = MappingProxyType({
    CONNACK: frozenset({0x00, *range(0x80, 0x8B), 0x8C, 0x90, 0x95, 0x97, *range(0x99, 0xA0)}),
    PUBACK: _PUBACK_CODES, PUBREC: _PUBACK_CODES, PUBREL: _PUBREL_CODES, PUBCOMP: _PUBREL_CODES,
    SUBACK: frozenset({0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2}),
    UNSUBACK: frozenset({0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91}),
    DISCONNECT: frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90,
                           *range(0x93, 0xA3)}),
    AUTH: frozenset({0x00, 0x18, 0x19}),
})  # fmt: skip
# Reason codes only one side may send (the tables' "Sent by" column).
CLIENT_DISCONNECT_CODES = frozenset({0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x90, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99})
CLIENT_AUTH_CODES = frozenset({0x18, 0x19})
# MQTT 3.1.1 CONNACK return codes (3.2.2.3).
RETURN_CODES: Mapping[int, str] = MappingProxyType({
    0: "Connection Accepted", 1: "unacceptable protocol version", 2: "identifier rejected", 3: "Server unavailable",
    4: "bad user name or password", 5: "not authorized",
})  # fmt: skip


MIN_CONNACK = 16  # bytes a CONNACK with a few properties takes: a smaller Maximum Packet Size leaves it no room


@dataclass(frozen=True)
class PropertySpec:
    """One MQTT 5 property (2.2.2.2): its value type, the packets that may carry it, its limits."""

    name: str
    kind: str  # byte, u16, u32, varint, string, binary, pair
    packets: frozenset[str]
    minimum: int | None = None
    maximum: int | None = None
    repeatable: bool = False

    @property
    def title(self) -> str:
        return self.name.replace("_", " ")


_PUB = frozenset({"PUBLISH", "WILL"})
_EVERY = frozenset({"CONNECT", "CONNACK", "PUBLISH", "WILL", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBSCRIBE", "SUBACK",
                    "UNSUBSCRIBE", "UNSUBACK", "DISCONNECT", "AUTH"})
PROPERTIES: Mapping[int, PropertySpec] = MappingProxyType({
    0x01: PropertySpec("payload_format_indicator", "byte", _PUB),
    0x02: PropertySpec("message_expiry_interval", "u32", _PUB),
    0x03: PropertySpec("content_type", "string", _PUB),
    0x08: PropertySpec("response_topic", "string", _PUB),
    0x09: PropertySpec("correlation_data", "binary", _PUB),
    0x0B: PropertySpec("subscription_identifier", "varint", frozenset({"PUBLISH", "SUBSCRIBE"}), 1, MAX_REMAINING),
    0x11: PropertySpec("session_expiry_interval", "u32", frozenset({"CONNECT", "CONNACK", "DISCONNECT"})),
    0x12: PropertySpec("assigned_client_identifier", "string", frozenset({"CONNACK"})),
    0x13: PropertySpec("server_keep_alive", "u16", frozenset({"CONNACK"})),
    0x15: PropertySpec("authentication_method", "string", frozenset({"CONNECT", "CONNACK", "AUTH"})),
    0x16: PropertySpec("authentication_data", "binary", frozenset({"CONNECT", "CONNACK", "AUTH"})),
    0x17: PropertySpec("request_problem_information", "byte", frozenset({"CONNECT"}), maximum=1),
    0x18: PropertySpec("will_delay_interval", "u32", frozenset({"WILL"})),
    0x19: PropertySpec("request_response_information", "byte", frozenset({"CONNECT"}), maximum=1),
    0x1A: PropertySpec("response_information", "string", frozenset({"CONNACK"})),
    0x1C: PropertySpec("server_reference", "string", frozenset({"CONNACK", "DISCONNECT"})),
    0x1F: PropertySpec("reason_string", "string", frozenset({"CONNACK", "PUBACK", "PUBREC", "PUBREL", "PUBCOMP", "SUBACK",
                                                            "UNSUBACK", "DISCONNECT", "AUTH"})),
    0x21: PropertySpec("receive_maximum", "u16", frozenset({"CONNECT", "CONNACK"}), minimum=1),
    0x22: PropertySpec("topic_alias_maximum", "u16", frozenset({"CONNECT", "CONNACK"})),
    0x23: PropertySpec("topic_alias", "u16", frozenset({"PUBLISH"}), minimum=1),
    0x24: PropertySpec("maximum_qos", "byte", frozenset({"CONNACK"}), maximum=1),
    0x25: PropertySpec("retain_available", "byte", frozenset({"CONNACK"}), maximum=1),
    0x26: PropertySpec("user_property", "pair", _EVERY, repeatable=True),
    0x27: PropertySpec("maximum_packet_size", "u32", frozenset({"CONNECT", "CONNACK"}), minimum=1),
    0x28: PropertySpec("wildcard_subscription_available", "byte", frozenset({"CONNACK"}), maximum=1),
    0x29: PropertySpec("subscription_identifier_available", "byte", frozenset({"CONNACK"}), maximum=1),
    0x2A: PropertySpec("shared_subscription_available", "byte", frozenset({"CONNACK"}), maximum=1),
})  # fmt: skip
_PROPERTY_IDS = {spec.name: pid for pid, spec in PROPERTIES.items()}

SHARE_PREFIX = b"$share/"
IDENTITY_TOPIC = b"$SYS/broker/version"


# -- declarations ---------------------------------------------------------------------------


def _fixed(first: int, covers: Sequence[str] | str = REST) -> list[Field]:
    """Byte 1 (packet type in bits 7-4, flags in 3-0) and the Remaining Length."""
    return [UInt("type_and_flags", 8, default=first), VarLength("remaining_length", covers=covers, maximum=MAX_REMAINING)]


def _string(name: str, default: bytes = b"") -> list[Field]:
    """A UTF-8 string or binary data: 2-byte length, then the bytes."""
    return [Length(f"{name}_length", 16, covers=(name,)), Bytes(name, size_from=f"{name}_length", default=default, max_size=0xFFFF)]


def _property(name: str, default: Any, prefix: str = "") -> list[Field]:
    """One MQTT 5 property as its identifier and value fields."""
    pid = _PROPERTY_IDS[name]
    spec = PROPERTIES[pid]
    full = name if name.startswith(prefix) else prefix + name
    ident = VarInt(f"{full}_id", default=pid)
    limits = {"minimum": spec.minimum, "maximum": spec.maximum}
    if spec.kind == "byte":
        return [ident, UInt(full, 8, default=default, **limits)]
    if spec.kind in ("u16", "u32"):
        return [ident, UInt(full, 16 if spec.kind == "u16" else 32, default=default, **limits)]
    if spec.kind == "varint":
        return [ident, VarInt(full, default=default, **limits)]
    if spec.kind == "pair":
        return [ident, *_string(f"{full}_key", default[0]), *_string(f"{full}_value", default[1])]
    return [ident, *_string(full, default)]


def _properties(props: Sequence[tuple[str, Any]], prefix: str = "") -> list[Field]:
    """A property block: the Property Length, then the declared properties (faults append
    duplicate, unknown or misplaced ones with `with_properties`)."""
    fields: list[Field] = []
    for name, default in props:
        fields += _property(name, default, prefix)
    return [VarLength(f"{prefix}property_length", covers=tuple(f.name for f in fields)), *fields]


def _connect_flags(*, clean: bool = True, will_qos: int | None = None, will_retain: bool = False,
                   username: bool = False, password: bool = False) -> int:
    flags = 0x02 if clean else 0
    if will_qos is not None:
        flags |= 0x04 | (will_qos << 3) | (0x20 if will_retain else 0)
    return flags | (0x80 if username else 0) | (0x40 if password else 0)


def connect_message(version: int, *, will: bool = False, username: bool = False, password: bool = False,
                    keep_alive: int = 60) -> MessageType:
    """CONNECT: variable header, properties (5.0), client id, will, user name, password."""
    flags = _connect_flags(will_qos=1 if will else None, username=username, password=password)
    fields: list[Field] = [*_fixed(CONNECT << 4), *_string("protocol_name", b"MQTT"), UInt("protocol_level", 8, default=version),
                           UInt("connect_flags", 8, default=flags), UInt("keep_alive", 16, default=keep_alive)]
    if version == 5:
        fields += _properties([("session_expiry_interval", 0), ("receive_maximum", 32), ("maximum_packet_size", 1 << 20),
                               ("topic_alias_maximum", 0), ("request_problem_information", 1),
                               ("user_property", (b"otfuzz", b"connect"))])
    fields += _string("client_id")
    if will:
        if version == 5:
            fields += _properties([("will_delay_interval", 0), ("payload_format_indicator", 1),
                                   ("message_expiry_interval", 60), ("content_type", b"text/plain")], prefix="will_")
        fields += [*_string("will_topic"), *_string("will_payload", b"otfuzz will")]
    if username:
        fields += _string("username", b"otfuzz")
    if password:
        fields += _string("password", b"otfuzz")
    suffix = "_will" if will else "_credentials" if username or password else ""
    return MessageType(f"connect{suffix}", fields, doc="CONNECT with clean session and a client id the broker assigns")


def publish_message(version: int, qos: int, *, retain: bool = False, props: Sequence[tuple[str, Any]] = (),
                    name: str = "") -> MessageType:
    fields: list[Field] = [*_fixed((PUBLISH << 4) | (qos << 1) | (1 if retain else 0)), *_string("topic")]
    if qos:
        fields.append(UInt("packet_id", 16, default=PACKET_ID_AUTO))
    if version == 5:
        fields += _properties(props)
    fields.append(Bytes("payload", default=f"otfuzz qos {qos}".encode()))
    return MessageType(name or f"publish_qos{qos}", fields)


def ack_message(kind: int, version: int, *, reason: bool = False, props: Sequence[tuple[str, Any]] = ()) -> MessageType:
    """PUBACK, PUBREC, PUBREL or PUBCOMP; in 5.0 optionally with a reason code and properties."""
    fields: list[Field] = [*_fixed((kind << 4) | FIXED_FLAGS[kind]), UInt("packet_id", 16, default=PACKET_ID_AUTO)]
    if version == 5 and reason:
        fields += [UInt("reason_code", 8, enum=dict.fromkeys(REASONS_BY_PACKET[kind], "")), *_properties(props)]
    return MessageType(PACKET_NAMES[kind].lower(), fields)


def subscribe_message(version: int, filters: Sequence[tuple[bytes, int]], *, props: Sequence[tuple[str, Any]] = (),
                      name: str = "subscribe", then_pingreq: bool = False) -> MessageType:
    body: list[Field] = [UInt("packet_id", 16, default=PACKET_ID_AUTO)]
    if version == 5:
        body += _properties(props)
    for n, (topic_filter, options) in enumerate(filters, start=1):
        suffix = "" if n == 1 else f"_{n}"
        body += [*_string(f"topic_filter{suffix}", topic_filter), UInt(f"options{suffix}", 8, default=options)]
    fields = [*_fixed((SUBSCRIBE << 4) | 2, tuple(f.name for f in body) if then_pingreq else REST), *body]
    if then_pingreq:
        fields += [UInt("pingreq", 8, default=PINGREQ << 4), UInt("pingreq_remaining_length", 8)]
    return MessageType(name, fields)


def unsubscribe_message(version: int, topic_filter: bytes) -> MessageType:
    fields: list[Field] = [*_fixed((UNSUBSCRIBE << 4) | 2), UInt("packet_id", 16, default=PACKET_ID_AUTO)]
    if version == 5:
        fields += _properties([("user_property", (b"otfuzz", b"unsubscribe"))])
    return MessageType("unsubscribe", [*fields, *_string("topic_filter", topic_filter)])


def disconnect_message(version: int) -> MessageType:
    fields: list[Field] = _fixed(DISCONNECT << 4)
    if version == 5:
        fields += [UInt("reason_code", 8, enum=dict.fromkeys(CLIENT_DISCONNECT_CODES, "")),
                   *_properties([("reason_string", b"otfuzz case")])]
    return MessageType("disconnect", fields)


def auth_message() -> MessageType:
    """AUTH (5.0 only): re-authenticate with a method the CONNECT never named."""
    return MessageType("auth", [*_fixed(AUTH << 4), UInt("reason_code", 8, default=0x19, enum=dict.fromkeys(CLIENT_AUTH_CODES, "")),
                                *_properties([("authentication_method", b"otfuzz"), ("authentication_data", b"\x00\x01")])])


PINGREQ_MESSAGE = MessageType("pingreq", _fixed(PINGREQ << 4))
PACKET = MessageType("packet", [*_fixed(0), Bytes("body")], doc="any packet: byte 1, Remaining Length, the rest")
_REMAINING = VarInt("remaining_length")
_ACKS = {kind: ack_message(kind, 4) for kind in (PUBACK, PUBREC, PUBREL, PUBCOMP)}


def packet(first: int, body: bytes) -> bytes:
    """Any packet from its first byte and body, the Remaining Length computed."""
    return PACKET.encode(type_and_flags=first, body=body)


def _ack(kind: int, packet_id: int) -> bytes:
    return _ACKS[kind].encode(packet_id=packet_id)


def with_properties(template: Template, extra: bytes, prefix: str = "", **values: Any) -> bytes:
    """The template (with `values`) with `extra` appended to its property block (`prefix`
    "will_" for the will properties), the Property Length and Remaining Length recomputed."""
    merged = {**template.values, **values}
    frame = template.message.encode(merged)
    spans = {s.field.name: s for s in template.message.spans(merged)}
    length = spans[f"{prefix}property_length"]
    covered = [spans[name] for name in length.field.covers]  # type: ignore[union-attr]
    start = length.offset + length.size
    end = covered[-1].offset + covered[-1].size if covered else start
    head = _header(frame)
    assert isinstance(head, tuple)
    packet_end = 1 + head[1] + head[0]
    props = frame[start:end] + extra
    body = frame[1 + head[1]:length.offset] + _REMAINING.encode(len(props)) + props + frame[end:packet_end]
    return packet(frame[0], body) + frame[packet_end:]


# -- framing and parsing --------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    """One control packet as its fixed header frames it."""

    raw: bytes
    length_width: int  # bytes the Remaining Length took

    @property
    def type(self) -> int:
        return self.raw[0] >> 4

    @property
    def flags(self) -> int:
        return self.raw[0] & 0x0F

    @property
    def body(self) -> bytes:
        return self.raw[1 + self.length_width:]

    @property
    def name(self) -> str:
        return PACKET_NAMES[self.type]

    @property
    def qos(self) -> int:
        return (self.flags >> 1) & 3


def _header(data: bytes | bytearray, at: int = 0) -> tuple[int, int] | str | None:
    """(Remaining Length, its width) of the packet at `at`; None when cut short, or why it does not frame."""
    value = 0
    for n in range(4):
        if at + 1 + n >= len(data):
            return None
        byte = data[at + 1 + n]
        value |= (byte & 0x7F) << (7 * n)
        if not byte & 0x80:
            return value, n + 1
    return "remaining_length is longer than 4 bytes"


def split_packets(data: bytes) -> tuple[list[Packet], bytes, str | None]:
    """Frame `data`: the complete packets, the bytes left, and why those do not frame (None:
    nothing left, or a packet cut short)."""
    out: list[Packet] = []
    pos = 0
    while pos < len(data):
        head = _header(data, pos)
        if head is None:
            return out, bytes(data[pos:]), None
        if isinstance(head, str):
            return out, bytes(data[pos:]), head
        remaining, width = head
        end = pos + 1 + width + remaining
        if end > len(data):
            return out, bytes(data[pos:]), None
        out.append(Packet(bytes(data[pos:end]), width))
        pos = end
    return out, b"", None


class _Short(Exception):
    """A field runs past the end of its packet (the problem is already recorded)."""


class _Reader:
    """Walks a packet body field by field, recording every problem as "<field>=<value> <rule>"."""

    def __init__(self, data: bytes, problems: list[str], notes: list[str] | None = None) -> None:
        self.data = data
        self.pos = 0
        self.problems = problems
        self.notes = notes if notes is not None else []  # what a receiver MAY refuse (Protocol.may_reject)

    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, size: int, name: str) -> bytes:
        if size > self.left():
            self.problems.append(f"{name} needs {size} bytes, {self.left()} left")
            raise _Short(name)
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def integer(self, name: str, size: int) -> int:
        return int.from_bytes(self.take(size, name), "big")

    def varint(self, name: str) -> int:
        head = _header(b"\0" + self.data[self.pos:self.pos + 4])
        if not isinstance(head, tuple):
            self.problems.append(f"{name} is not a variable byte integer of at most 4 bytes")
            raise _Short(name)
        value, width = head
        self.pos += width
        if width > len(_REMAINING.encode(value)):
            self.problems.append(f"{name}={value} encoded in {width} bytes, the minimum is {len(_REMAINING.encode(value))}")
        return value

    def binary(self, name: str) -> bytes:
        size = self.integer(f"{name}_length", 2)
        if size > self.left():
            self.problems.append(f"{name}_length={size} but {self.left()} bytes follow")
            raise _Short(name)
        return self.take(size, name)

    def string(self, name: str) -> bytes:
        data = self.binary(name)
        problem = utf8_problem(name, data)
        if problem:
            self.problems.append(problem)
        else:
            advice = utf8_advisory(name, data)
            if advice:
                self.notes.append(advice)
        return data

    def rest(self) -> bytes:
        out = self.data[self.pos:]
        self.pos = len(self.data)
        return out


def utf8_problem(name: str, data: bytes) -> str | None:
    """Why `data` is not an MQTT UTF-8 string (ill-formed, surrogates, U+0000), or None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"{name} has ill-formed UTF-8 at byte {exc.start}"
    if "\x00" in text:
        return f"{name} contains U+0000 at byte {data.index(0)}"
    return None


def utf8_advisory(name: str, data: bytes) -> str | None:
    """Code points a string SHOULD NOT hold and a receiver MAY refuse (MQTT 3.1.1 1.5.3, 5.0
    1.5.4): control characters and Unicode non-characters. `data` is well-formed UTF-8."""
    for n, char in enumerate(data.decode("utf-8")):
        point = ord(char)
        if 0x01 <= point <= 0x1F or 0x7F <= point <= 0x9F:
            return f"{name} contains the control character U+{point:04X}"
        if 0xFDD0 <= point <= 0xFDEF or point & 0xFFFE == 0xFFFE:
            return f"{name} contains the non-character U+{point:04X}"
    return None


def topic_name_problems(name: str, topic: bytes) -> list[str]:
    out = []
    for wildcard in (b"+", b"#"):
        if wildcard in topic:
            out.append(f"{name} contains the wildcard {wildcard.decode()} at byte {topic.index(wildcard)}")
    return out


def topic_filter_problems(name: str, topic_filter: bytes, version: int) -> list[str]:
    """Wildcard placement (4.7.1) and, in 5.0, the shape of a shared subscription (4.8.2)."""
    if not topic_filter:
        return [f"{name} of 0 bytes"]
    out: list[str] = []
    if version == 5 and topic_filter.startswith(SHARE_PREFIX):
        share, sep, inner = topic_filter[len(SHARE_PREFIX):].partition(b"/")
        if not share:
            out.append(f"{name} share name of 0 bytes")
        elif b"+" in share or b"#" in share:
            out.append(f"{name} share name contains a wildcard")
        if not inner:
            out.append(f"{name} shared subscription without a topic filter")
            return out
        topic_filter = inner
    levels = topic_filter.split(b"/")
    for n, level in enumerate(levels):
        if b"#" in level and (level != b"#" or n != len(levels) - 1):
            out.append(f"{name} has # in level {n} that is not a whole last level")
        if b"+" in level and level != b"+":
            out.append(f"{name} has + in level {n} that is not a whole level")
    return out


def topic_matches(topic_filter: bytes, topic: bytes) -> bool:
    """Does `topic` match `topic_filter` (4.7: + one level, # the rest, $ topics not by wildcards)?"""
    if topic.startswith(b"$") and topic_filter[:1] in (b"+", b"#"):
        return False
    want, have = topic_filter.split(b"/"), topic.split(b"/")
    for n, level in enumerate(want):
        if level == b"#":
            return True
        if n >= len(have) or (level != b"+" and level != have[n]):
            return False
    return len(want) == len(have)


@dataclass
class Parsed:
    """What `parse_packet` learned of one packet: its fields and every problem."""

    packet: Packet
    version: int
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the receiver MAY refuse
    packet_id: int | None = None
    reason_code: int | None = None
    properties: dict[int, list[Any]] = field(default_factory=dict)
    topic: bytes | None = None
    payload: bytes = b""
    filters: list[tuple[bytes, int]] = field(default_factory=list)
    codes: bytes = b""
    connect_flags: int | None = None
    connect_level: int | None = None
    will_properties: dict[int, list[Any]] = field(default_factory=dict)


def _read_properties(reader: _Reader, packet_name: str, prefix: str = "") -> dict[int, list[Any]]:
    """A property block (2.2.2): every property, checked against its packet, count and limits."""
    length = reader.varint(f"{prefix}property_length")
    if length > reader.left():
        reader.problems.append(f"{prefix}property_length={length} but {reader.left()} bytes follow")
        raise _Short(f"{prefix}property_length")
    block = _Reader(reader.take(length, f"{prefix}properties"), reader.problems, reader.notes)
    found: dict[int, list[Any]] = {}
    where = "the will properties" if packet_name == "WILL" else packet_name
    try:
        while block.left():
            pid = block.varint(f"{prefix}property_id")
            spec = PROPERTIES.get(pid)
            if spec is None:
                reader.problems.append(f"{prefix}property_id={pid} is not defined")
                break
            if packet_name not in spec.packets:
                reader.problems.append(f"{prefix}property_id={pid} ({spec.title}) is not allowed in {where}")
            kind = spec.kind
            if kind in ("byte", "u16", "u32"):
                value: Any = block.integer(spec.name, {"byte": 1, "u16": 2, "u32": 4}[kind])
            elif kind == "varint":
                value = block.varint(spec.name)
            elif kind == "string":
                value = block.string(spec.name)
            elif kind == "binary":
                value = block.binary(spec.name)
            else:
                value = (block.string(f"{spec.name}_key"), block.string(f"{spec.name}_value"))
            found.setdefault(pid, []).append(value)
    except _Short:
        pass
    for pid, values in found.items():
        spec = PROPERTIES[pid]
        if len(values) > 1 and not spec.repeatable and not (pid == 0x0B and packet_name == "PUBLISH"):
            reader.problems.append(f"{prefix}property_id={pid} ({spec.title}) appears {len(values)} times")
        for value in values:
            if isinstance(value, int):
                if spec.minimum is not None and value < spec.minimum:
                    reader.problems.append(f"{prefix}{spec.name}={value} below minimum {spec.minimum}")
                if spec.maximum is not None and value > spec.maximum:
                    reader.problems.append(f"{prefix}{spec.name}={value} above maximum {spec.maximum}")
    return found


def parse_packet(pkt: Packet, version: int, *, client: bool) -> Parsed:
    """Parse one packet as sent by a client (`client`) or by a broker, in MQTT `version` (4 or 5).

    A CONNECT brings its own version (its protocol level). Problems are what a conforming
    receiver must refuse; `Parsed.problems` is empty for a valid packet.
    """
    out = Parsed(pkt, version)
    problems = out.problems
    kind = pkt.type
    if kind == 0 or (kind == AUTH and version != 5):
        problems.append(f"packet_type={kind} is reserved" + (" in MQTT 3.1.1" if kind == AUTH else ""))
        return out
    if client and kind in SERVER_ONLY:
        problems.append(f"packet_type={kind} ({pkt.name}) is sent by the server only")
        return out
    if not client and kind in CLIENT_ONLY:
        problems.append(f"packet_type={kind} ({pkt.name}) is sent by clients only")
        return out
    if kind == PUBLISH:
        if pkt.qos == 3:
            problems.append("qos=3 is not a QoS level")
            return out
    elif pkt.flags != FIXED_FLAGS[kind]:
        problems.append(f"flags={pkt.flags} but {pkt.name} requires {FIXED_FLAGS[kind]}")
    minimum = len(_REMAINING.encode(len(pkt.body)))
    if pkt.length_width > minimum:
        problems.append(f"remaining_length={len(pkt.body)} encoded in {pkt.length_width} bytes, the minimum is {minimum}")
    reader = _Reader(pkt.body, problems, out.notes)
    try:
        _PARSERS[kind](reader, out, client)
        if reader.left():
            problems.append(f"{reader.left()} bytes after the last field of {pkt.name}")
    except _Short:
        pass
    return out


def _parse_connect(r: _Reader, out: Parsed, client: bool) -> None:
    problems = out.problems
    name = r.binary("protocol_name")
    level = r.integer("protocol_level", 1)
    flags = r.integer("connect_flags", 1)
    r.integer("keep_alive", 2)
    out.connect_level, out.connect_flags = level, flags
    if name not in (b"MQTT", b"MQIsdp"):
        problems.append(f"protocol_name of {len(name)} bytes is not MQTT")
    elif name == b"MQTT" and level not in (4, 5):
        problems.append(f"protocol_level={level} is not 4 (3.1.1) or 5 (5.0)")
    elif name == b"MQIsdp" and level != 3:
        problems.append(f"protocol_level={level} is not 3 for protocol name MQIsdp")
    version = out.version = 5 if level == 5 else 4
    will, will_qos, clean = flags & 0x04, (flags >> 3) & 3, flags & 0x02
    if flags & 0x01:
        problems.append(f"connect_flags={flags} has the reserved bit 0 set")
    if not will and (will_qos or flags & 0x20):
        problems.append(f"connect_flags={flags} sets will QoS or will retain without the will flag")
    if will_qos == 3:
        problems.append("will_qos=3 is not a QoS level")
    if version == 4 and flags & 0x40 and not flags & 0x80:
        problems.append(f"connect_flags={flags} sets the password flag without the user name flag")
    if version == 5:
        out.properties = _read_properties(r, "CONNECT")
        if 0x16 in out.properties and 0x15 not in out.properties:
            problems.append("authentication_data without an authentication_method")
    client_id = r.string("client_id")
    if version == 4 and not client_id and not clean:
        problems.append("client_id of 0 bytes with clean_session=0")
    if will:
        if version == 5:
            out.will_properties = _read_properties(r, "WILL", "will_")
        out.topic = r.string("will_topic")
        problems += topic_name_problems("will_topic", out.topic)
        if not out.topic:
            problems.append("will_topic of 0 bytes")
        r.binary("will_payload")
    if flags & 0x80:
        r.string("username")
    if flags & 0x40:
        r.binary("password")


def _parse_connack(r: _Reader, out: Parsed, client: bool) -> None:
    flags = r.integer("acknowledge_flags", 1)
    out.connect_flags = flags
    out.reason_code = r.integer("reason_code" if out.version == 5 else "return_code", 1)
    if flags & 0xFE:
        out.problems.append(f"acknowledge_flags={flags} has reserved bits set")
    if out.version == 5:
        out.properties = _read_properties(r, "CONNACK")


def _parse_publish(r: _Reader, out: Parsed, client: bool) -> None:
    out.topic = r.string("topic")
    if out.packet.qos:
        out.packet_id = r.integer("packet_id", 2)
        if out.packet_id == 0:
            out.problems.append("packet_id=0 is not allowed")
    if out.version == 5:
        out.properties = _read_properties(r, "PUBLISH")
    out.problems.extend(topic_name_problems("topic", out.topic))
    if not out.topic and (out.version == 4 or 0x23 not in out.properties):
        out.problems.append("topic of 0 bytes" + (" without a topic_alias" if out.version == 5 else ""))
    out.payload = r.rest()


def _parse_ack(r: _Reader, out: Parsed, client: bool) -> None:
    """PUBACK, PUBREC, PUBREL, PUBCOMP: identifier, then in 5.0 an optional reason and properties."""
    out.packet_id = r.integer("packet_id", 2)
    if out.packet_id == 0:
        out.problems.append("packet_id=0 is not allowed")
    if out.version == 5 and r.left():
        # an undefined reason code from a client is a sender's fault the broker may ignore, or
        # refuse: a note, not a broken rule
        _reason(r, out, REASONS_BY_PACKET[out.packet.type], note=client)
        if r.left():
            out.properties = _read_properties(r, out.packet.name)


def _reason(r: _Reader, out: Parsed, allowed: frozenset[int], note: bool = False) -> None:
    code = out.reason_code = r.integer("reason_code", 1)
    if code not in allowed:
        (out.notes if note else out.problems).append(f"reason_code={code} is not a reason code of {out.packet.name}")


def _identified(r: _Reader, out: Parsed) -> None:
    """The packet identifier (never 0) and, in 5.0, the properties that open SUBSCRIBE,
    UNSUBSCRIBE, SUBACK and UNSUBACK."""
    out.packet_id = r.integer("packet_id", 2)
    if out.packet_id == 0:
        out.problems.append("packet_id=0 is not allowed")
    if out.version == 5:
        out.properties = _read_properties(r, out.packet.name)


def _parse_subscribe(r: _Reader, out: Parsed, client: bool) -> None:
    _identified(r, out)
    while r.left():
        topic_filter = r.string("topic_filter")
        out.filters.append((topic_filter, r.integer("options", 1)))
    if not out.filters:
        out.problems.append("topic_filter count=0, at least 1 required")
    for topic_filter, options in out.filters:
        out.problems.extend(topic_filter_problems("topic_filter", topic_filter, out.version))
        if options & 3 == 3:
            out.problems.append(f"options={options} requests QoS 3")
        if out.version == 4 and options & 0xFC:
            out.problems.append(f"options={options} has reserved bits 2-7 set")
        if out.version == 5:
            if options & 0xC0:
                out.problems.append(f"options={options} has reserved bits 6-7 set")
            if (options >> 4) & 3 == 3:
                out.problems.append("retain_handling=3 is not defined")
            if options & 0x04 and topic_filter.startswith(SHARE_PREFIX):
                out.problems.append("no_local=1 on a shared subscription")


def _parse_unsubscribe(r: _Reader, out: Parsed, client: bool) -> None:
    _identified(r, out)
    while r.left():
        out.filters.append((r.string("topic_filter"), 0))
    if not out.filters:
        out.problems.append("topic_filter count=0, at least 1 required")
    for topic_filter, _ in out.filters:
        out.problems.extend(topic_filter_problems("topic_filter", topic_filter, out.version))


def _parse_suback(r: _Reader, out: Parsed, client: bool) -> None:
    _identified(r, out)
    out.codes = r.rest()


def _parse_unsuback(r: _Reader, out: Parsed, client: bool) -> None:
    _identified(r, out)
    if out.version == 5:
        out.codes = r.rest()


def _parse_empty(r: _Reader, out: Parsed, client: bool) -> None:
    """PINGREQ and PINGRESP have no variable header (and in 3.1.1, DISCONNECT neither)."""


def _parse_disconnect(r: _Reader, out: Parsed, client: bool) -> None:
    if out.version == 5 and r.left():
        _reason(r, out, CLIENT_DISCONNECT_CODES if client else REASONS_BY_PACKET[DISCONNECT] - {0x04})
        if r.left():
            out.properties = _read_properties(r, "DISCONNECT")


def _parse_auth(r: _Reader, out: Parsed, client: bool) -> None:
    if not r.left():
        out.reason_code = 0x00
    else:
        _reason(r, out, CLIENT_AUTH_CODES if client else frozenset({0x00, 0x18}))
        if r.left():
            out.properties = _read_properties(r, "AUTH")
    if client and out.reason_code == 0x00 and not r.data:
        out.problems.append("reason_code=0 (Success, the AUTH of 0 bytes) is sent by the server only")
    if 0x15 not in out.properties:
        out.problems.append("authentication_method missing from AUTH")


_PARSERS = {
    CONNECT: _parse_connect, CONNACK: _parse_connack, PUBLISH: _parse_publish, PUBACK: _parse_ack, PUBREC: _parse_ack,
    PUBREL: _parse_ack, PUBCOMP: _parse_ack, SUBSCRIBE: _parse_subscribe, SUBACK: _parse_suback,
    UNSUBSCRIBE: _parse_unsubscribe, UNSUBACK: _parse_unsuback, PINGREQ: _parse_empty, PINGRESP: _parse_empty,
    DISCONNECT: _parse_disconnect, AUTH: _parse_auth,
}  # fmt: skip


# -- what a request expects back ------------------------------------------------------------

# request packet type -> the packet type that answers it
ANSWERS: Mapping[int, int] = MappingProxyType({CONNECT: CONNACK, PUBREL: PUBCOMP, PUBREC: PUBREL, SUBSCRIBE: SUBACK,
                                               UNSUBSCRIBE: UNSUBACK, PINGREQ: PINGRESP, AUTH: AUTH})


def _packet_id_at(pkt: Packet) -> int | None:
    """Offset (in `pkt.raw`) of the packet identifier the client allocates, or None."""
    head = 1 + pkt.length_width
    body = pkt.body
    if pkt.type == PUBLISH and pkt.qos in (1, 2):
        if len(body) < 2:
            return None
        at = 2 + int.from_bytes(body[:2], "big")
    elif pkt.type in (SUBSCRIBE, UNSUBSCRIBE, PUBREL, PUBREC):
        at = 0
    else:
        return None
    return head + at if at + 2 <= len(body) else None


BROKER_IDS = frozenset({PUBACK, PUBREC, PUBCOMP})
"""Client packets that carry an identifier the broker chose."""


def _ack_id_at(pkt: Packet) -> int | None:
    return 1 + pkt.length_width if len(pkt.body) >= 2 else None


def expectation(pkt: Packet) -> tuple[int, int | None] | None:
    """(reply packet type, packet identifier or None) a request packet is answered with, or None."""
    if pkt.type == PUBLISH:
        if pkt.qos not in (1, 2):
            return None
        reply = PUBACK if pkt.qos == 1 else PUBREC
    elif pkt.type in ANSWERS:
        reply = ANSWERS[pkt.type]
    else:
        return None
    at = _packet_id_at(pkt)
    return reply, None if at is None else int.from_bytes(pkt.raw[at:at + 2], "big")


def _answered(parsed: Sequence[Parsed]) -> int:
    """How many packets of a request count: up to the last one answered (all when none is):
    the broker answers each packet before it reads the next."""
    answered = [n for n, item in enumerate(parsed) if expectation(item.packet) is not None]
    return answered[-1] + 1 if answered else len(parsed)


def _is_read(packets: Sequence[Packet]) -> bool:
    """The `read_retained` shape: one SUBSCRIBE, then one PINGREQ."""
    return len(packets) == 2 and packets[0].type == SUBSCRIBE and packets[1].raw == PINGREQ_MESSAGE.encode()


def _read_filter(pkt: Packet, version: int) -> bytes | None:
    parsed = parse_packet(pkt, version, client=True)
    return parsed.filters[0][0] if parsed.filters else None


# -- session --------------------------------------------------------------------------------


class MQTTSession(Session):
    """One MQTT connection: CONNECT, packet identifiers, QoS flows, acknowledgements.

    With `observer_topic`, the session is the probe's witness: every PUBLISH the broker delivers
    on that topic is acknowledged and handed over as a reply, whether or not a request waits.
    """

    MAX_OWED = 16
    MAX_IN_USE = 1024

    def __init__(self, opening: Sequence[bytes], version: int, observer_topic: bytes | None = None) -> None:
        super().__init__()
        self._opening = list(opening)
        self.version = version
        self.observer_topic = observer_topic
        self._next_id = 1
        self.in_use: dict[int, int] = {}  # packet id -> the packet type that ends its flow
        self.broker_ids: set[int] = set()  # identifiers of the broker's own publishes seen here
        self._inbound: set[int] = set()  # QoS 2 deliveries we sent PUBREC for, awaiting the broker's PUBREL
        self._released: set[int] = set()  # QoS 2 publishes we sent PUBREL for
        self._pending: tuple[int, int | None] | None = None
        self._any = False  # an unframed request: the first thing back is its answer
        self._owed: list[tuple[int, int | None]] = []
        self._read: bytes | None = None
        self._collected = bytearray()
        self._replies: list[bytes] = []
        self.connack: bytes | None = None
        self.delivered = 0
        self._stalled = False

    def opening(self) -> list[bytes]:
        return list(self._opening)

    def unused_broker_id(self) -> int:
        """An identifier the broker has not used on this connection (from 65535 down): what the
        PUBACK, PUBREC and PUBCOMP templates acknowledge, so they never touch a real flow."""
        for pid in range(0xFFFF, 0, -1):
            if pid not in self.broker_ids:
                return pid
        return 0xFFFF

    def allocate(self) -> int:
        """The next packet identifier not in use on this connection (1..65535, wrapping)."""
        for _ in range(0xFFFF):
            pid = self._next_id
            self._next_id = pid % 0xFFFF + 1
            if pid not in self.in_use:
                return pid
        return self._next_id

    def prepare(self, frame: bytes) -> bytes:
        packets, rest, _ = split_packets(frame)
        # (An earlier request still unanswered is not remembered: the engine drops a connection
        # whose answer did not come, and a flood's answers are all counted, in any order.)
        self._owed.clear()
        self._pending, self._any, self._read = None, False, None
        # Bytes past the last whole packet leave the broker inside a packet: an acknowledgement
        # sent now would become part of it (and the broker would refuse the mixture), so none is.
        self._stalled = bool(rest)
        self._collected.clear()
        out = bytearray()
        expected: list[tuple[int, int | None]] = []
        for n, pkt in enumerate(packets):
            raw = bytearray(pkt.raw)
            at = _packet_id_at(pkt) if pkt.type not in BROKER_IDS else _ack_id_at(pkt)
            if at is not None and int.from_bytes(raw[at:at + 2], "big") == PACKET_ID_AUTO:
                pid = self.allocate() if pkt.type not in BROKER_IDS else self.unused_broker_id()
                raw[at:at + 2] = pid.to_bytes(2, "big")
                pkt = Packet(bytes(raw), pkt.length_width)
            if pkt.type == CONNECT and n == 0:
                self.version = 5 if _connect_level_of(pkt.body) == 5 else 4
            elif pkt.type == DISCONNECT:
                self.ended = True  # we end the connection: nothing may follow on it
            want = expectation(pkt)
            if want is not None:
                expected.append(want)
                if want[1] is not None and pkt.type in (PUBLISH, SUBSCRIBE, UNSUBSCRIBE, PUBREL):
                    self._track(want[1], PUBCOMP if want[0] == PUBREC else want[0])
            out += raw
        if _is_read(packets):
            self._read = _read_filter(packets[0], self.version)
        self._owed = (self._owed + expected[:-1])[-self.MAX_OWED:]
        if expected:
            self._pending = expected[-1]
        else:
            self._any = not packets and bool(rest)  # unframed bytes: whatever comes back answers them
        return bytes(out + rest)

    def _track(self, pid: int, ends_with: int) -> None:
        self.in_use[pid] = ends_with
        while len(self.in_use) > self.MAX_IN_USE:
            del self.in_use[next(iter(self.in_use))]

    def feed(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while buf:
            head = _header(buf)
            if head is None:
                break
            if isinstance(head, str):  # nothing to frame by: hand it over for the classifier
                self._replies.append(bytes(buf))
                buf.clear()
                break
            remaining, width = head
            end = 1 + width + remaining
            if len(buf) < end:
                break
            pkt = Packet(bytes(buf[:end]), width)
            del buf[:end]
            self._receive(pkt)

    def next_reply(self) -> bytes | None:
        return self._replies.pop(0) if self._replies else None

    def _receive(self, pkt: Packet) -> None:
        kind = pkt.type
        pid = int.from_bytes(pkt.body[:2], "big") if len(pkt.body) >= 2 else None
        if kind == PUBLISH:
            self._receive_publish(pkt)
            return
        if kind == PUBREL and pid is not None:
            self._answer(_ack(PUBCOMP, pid))  # ends the broker's QoS 2 flow
            if pid in self._inbound:
                self._inbound.discard(pid)
                return  # the second half of a delivery the session acknowledged: never an answer
        elif kind == PUBREC and pid is not None and self.in_use.get(pid) == PUBCOMP:
            if self.version == 5 and len(pkt.body) > 2 and pkt.body[2] >= 0x80:
                self.in_use.pop(pid, None)  # refused: the flow ends here
            else:
                self._answer(_ack(PUBREL, pid))
                self._released.add(pid)
        elif kind == PUBCOMP and pid in self._released:
            self._released.discard(pid)
            self.in_use.pop(pid, None)
            if self._pending != (PUBCOMP, pid):
                return  # the end of a flow the session itself continued
        elif kind in (PUBACK, SUBACK, UNSUBACK, PUBCOMP) and pid is not None and self.in_use.get(pid) == kind:
            del self.in_use[pid]
        elif kind == CONNACK:
            self.connack = pkt.raw
        elif kind == DISCONNECT:
            self.ended = True  # the broker closes next: no further case on this connection
        if kind == PINGRESP and self._read is not None and self._pending == (PINGRESP, None):
            self._take(bytes(self._collected) + pkt.raw)
            return
        self._match(pkt, (kind, pid if kind not in (CONNACK, PINGRESP, AUTH, DISCONNECT) else None))

    def _match(self, pkt: Packet, key: tuple[int, int | None]) -> None:
        kind = key[0]
        for n, owed in enumerate(self._owed):  # earlier packets' answers first (same key, older request)
            if owed[0] == kind and owed[1] in (None, key[1]):
                del self._owed[n]
                return
        pending = self._pending
        if kind == DISCONNECT or (self._any and kind != PUBREL) or (pending is not None and pending[0] == kind):
            self._take(pkt.raw)  # with the wrong identifier the classifier says so
        elif pending is None and kind != PUBREL:
            # nobody waits: an answer to a request of an open-loop flood (the stress load writes
            # many before reading), or a stray the transport drops before its next request
            self._replies.append(pkt.raw)
        elif kind not in (PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, PINGRESP):
            self._take(pkt.raw)  # CONNACK, AUTH or a client's packet type: not an answer to anything
        # else: an acknowledgement of something else while an answer is awaited: not it

    def _receive_publish(self, pkt: Packet) -> None:
        parsed = parse_packet(pkt, self.version, client=False)
        if parsed.problems and (parsed.topic is None or (pkt.qos and parsed.packet_id is None)):
            if self._pending is not None or self._any:
                self._take(pkt.raw)  # a PUBLISH we cannot even acknowledge
            return
        if parsed.packet_id:
            self.broker_ids.add(parsed.packet_id)
        if pkt.qos == 1 and parsed.packet_id:
            self._answer(_ack(PUBACK, parsed.packet_id))
        elif pkt.qos == 2 and parsed.packet_id:
            self._answer(_ack(PUBREC, parsed.packet_id))
            self._inbound.add(parsed.packet_id)
        self.delivered += 1
        topic = parsed.topic or b""
        if self.observer_topic is not None and topic == self.observer_topic:
            self._replies.append(pkt.raw)
        elif self._read is not None and pkt.flags & 1 and topic_matches(self._read, topic):
            self._collected += pkt.raw

    def _take(self, raw: bytes) -> None:
        self._pending, self._any = None, False
        self._replies.append(raw)

    def _answer(self, packet: bytes) -> None:
        """Queue an automatic acknowledgement, unless the stream is out of step (see prepare)."""
        if not self._stalled:
            self._output += packet


# -- the protocol ---------------------------------------------------------------------------


def _option_topic(name: str, value: str) -> bytes:
    raw = value.encode()
    if not raw or utf8_problem(name, raw) or topic_name_problems(name, raw):
        raise OtfuzzError(f"mqtt: option {name}={value!r} is not a topic name (non-empty, no + or #)")
    return raw


class MQTT(Protocol):
    """MQTT 3.1.1 (protocol level 4) and 5.0 (level 5) clients against a broker."""

    name = "mqtt"
    schemes = ("mqtt",)
    default_port = 1883
    options_spec = {
        "version": OptionSpec("4", "protocol level: 4 (MQTT 3.1.1) or 5 (MQTT 5.0)", int, 4, 5),
        "topic": OptionSpec("otfuzz/test", "topic the templates publish to and subscribe to (no wildcards)"),
        "probe_topic": OptionSpec("$otfuzz/probe", "topic of the health probe; a $ topic is not seen by # subscribers"),
        "keep_alive": OptionSpec("60", "keep alive of every CONNECT, in seconds (0..65535)", int, 0, 0xFFFF),
        "username": OptionSpec("", "user name of the session's CONNECT (none when empty)"),
        "password": OptionSpec("", "password of the session's CONNECT (with username)"),
    }
    probe_hint = ("check ?version= (4 for MQTT 3.1.1, 5 for 5.0), ?username= and ?password=, and that the broker lets "
                  "this client publish to and subscribe to ?probe_topic=")
    liveness_note = ("PUBLISH at QoS 1 to the probe topic acknowledged (PUBACK) and delivered to a second client "
                     "subscribed to it, both on their own connections, within the deadline")

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        super().__init__(options, path)
        v = self.version = self.options["version"]
        topic = self.topic = _option_topic("topic", self.options["topic"])
        self.probe_topic = _option_topic("probe_topic", self.options["probe_topic"])
        if self.options["password"] and not self.options["username"] and v == 4:
            raise OtfuzzError("mqtt: option password needs username in MQTT 3.1.1 (version=4)")
        keep = self.options["keep_alive"]
        connect = connect_message(v, keep_alive=keep)
        credentials = connect_message(v, username=True, password=True, keep_alive=keep)
        user, password = self.options["username"].encode(), self.options["password"].encode()
        cred_values = {"username": user or b"otfuzz", "password": password or b"otfuzz"}
        # The session's own CONNECT: anonymous, or with the credentials of the URL.
        self._connect = connect_message(v, username=bool(user), password=bool(password), keep_alive=keep).encode(
            {"username": user, "password": password})
        pub1 = [("payload_format_indicator", 1), ("message_expiry_interval", 3600), ("response_topic", topic + b"/reply"),
                ("correlation_data", b"\x00\x01"), ("user_property", (b"otfuzz", b"publish"))]
        templates: list[Template] = [
            Template("connect", connect, {}, code=CONNECT),
            Template("connect_credentials", credentials, cred_values, code=CONNECT),
            Template("connect_will", connect_message(v, will=True, keep_alive=keep), {"will_topic": topic + b"/will"},
                     writes=True, code=CONNECT),
            Template("publish_qos0", publish_message(v, 0, props=[("topic_alias", 1)]), {"topic": topic}, writes=True, code=PUBLISH),
            Template("publish_qos1", publish_message(v, 1, props=pub1), {"topic": topic}, writes=True, code=PUBLISH),
            Template("publish_qos2", publish_message(v, 2, props=[("content_type", b"application/octet-stream")]),
                     {"topic": topic}, writes=True, code=PUBLISH),
            Template("publish_retained", publish_message(v, 1, retain=True, name="publish_retained"),
                     {"topic": topic + b"/retained", "payload": b"otfuzz retained"}, writes=True, code=PUBLISH),
            Template("subscribe", subscribe_message(v, [(topic, 1)], props=[("subscription_identifier", 1)]), code=SUBSCRIBE),
            Template("subscribe_wildcards", subscribe_message(v, [(topic + b"/+/x", 0), (topic + b"/#", 2)], name="subscribe_wildcards"),
                     code=SUBSCRIBE),
            Template("subscribe_shared", subscribe_message(v, [(SHARE_PREFIX + b"otfuzz/" + topic, 1)], name="subscribe_shared"),
                     writes=True, code=SUBSCRIBE),
            Template("unsubscribe", unsubscribe_message(v, topic), code=UNSUBSCRIBE),
            Template("read_retained", subscribe_message(v, [(topic + b"/retained", 0)], name="read_retained", then_pingreq=True),
                     code=SUBSCRIBE),
            Template("pingreq", PINGREQ_MESSAGE, code=PINGREQ),
            Template("pubrel", ack_message(PUBREL, v, reason=True, props=[("reason_string", b"otfuzz")]), code=PUBREL),
            Template("puback", ack_message(PUBACK, v, reason=True), code=PUBACK),
            Template("pubrec", ack_message(PUBREC, v, reason=True), code=PUBREC),
            Template("pubcomp", ack_message(PUBCOMP, v, reason=True), code=PUBCOMP),
            Template("disconnect", disconnect_message(v), code=DISCONNECT),
        ]
        if v == 5:
            templates.append(Template("auth", auth_message(), code=AUTH))
        self._templates = tuple(templates)
        self._by_name = {t.name: t for t in self._templates}
        probe_frame = publish_message(v, 1).encode(topic=self.probe_topic, payload=b"otfuzz health probe")
        self._probe = Probe(probe_frame, f"PUBLISH QoS 1 to {self.probe_topic.decode()} delivered to a second client")
        self._observer_subscribe = subscribe_message(v, [(self.probe_topic, 1)]).encode()
        self._identify = self._by_name["read_retained"].encode(topic_filter=IDENTITY_TOPIC)

    # -- what to send -----------------------------------------------------------------------

    def templates(self) -> Sequence[Template]:
        return self._templates

    def message_types(self) -> Sequence[MessageType]:
        return tuple(t.message for t in self._templates)

    def session(self) -> Session:
        return MQTTSession([self._connect], self.version)

    def probe(self) -> Probe:
        return self._probe

    def probe_ok(self, reply: bytes) -> bool:
        return self.classify(self._probe.frame, reply).kind is ReplyKind.NORMAL

    def probe_observer(self) -> Session | None:
        """A second client whose opening subscribes to the probe topic at QoS 1."""
        return MQTTSession([self._connect, self._observer_subscribe], self.version, observer_topic=self.probe_topic)

    def probe_observed(self, message: bytes) -> bool:
        packets, rest, _ = split_packets(message)
        if len(packets) != 1 or rest or packets[0].type != PUBLISH:
            return False
        parsed = parse_packet(packets[0], self.version, client=False)
        return not parsed.problems and parsed.topic == self.probe_topic and parsed.payload == b"otfuzz health probe"

    def stress_flood(self) -> tuple[bytes, str] | None:
        """PINGREQ: the keep-alive every broker must answer."""
        return PINGREQ_MESSAGE.encode(), "PINGREQ"

    def sync_request(self) -> bytes | None:
        return PINGREQ_MESSAGE.encode()

    def is_sync_reply(self, reply: bytes) -> bool:
        return reply == bytes([PINGRESP << 4, 0])

    def identify(self) -> list[bytes]:
        return [self._identify]

    def parse_identity(self, reply: bytes) -> dict[str, str]:
        """What the broker publishes at $SYS/broker/version ("mosquitto version 2.0.11")."""
        packets, _, _ = split_packets(reply)
        for pkt in packets:
            if pkt.type != PUBLISH:
                continue
            parsed = parse_packet(pkt, self.version, client=False)
            if parsed.topic == IDENTITY_TOPIC and not utf8_problem("payload", parsed.payload):
                text = parsed.payload.decode().strip()
                product, sep, revision = text.partition(" version ")
                return {"product": product, "revision": revision} if sep else {"product": text}
        return {}

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        ids = list(PROPERTIES) + [0x00, 0x7F, 0x80]
        return {
            "type_and_flags": [0x00, 0x10, 0x20, *range(0x30, 0x40), 0x40, 0x50, 0x60, 0x62, 0x70, 0x80, 0x82, 0x90, 0xA0,
                               0xA2, 0xB0, 0xC0, 0xD0, 0xE0, 0xF0, 0xFF],
            "protocol_level": [3, 4, 5, 6, 0, 0xFF],
            "protocol_name": [b"MQTT", b"MQIsdp", b"mqtt", b""],
            "connect_flags": [0x00, 0x01, 0x02, 0x04, 0x0E, 0x16, 0x1E, 0x26, 0x40, 0x42, 0x80, 0xC2, 0xFF],
            "reason_code": sorted(REASON_CODES) + [0x03, 0xFF],
            "options": [0, 1, 2, 3, 0x04, 0x08, 0x10, 0x20, 0x30, 0x40, 0xC0],
            "packet_id": [0, 1, 0xFFFF],
            "topic": [b"#", b"+", b"a/+", b"$SYS/x", b"", b"/", b"a//b", b"\x00", b"\xc0\x80", b"\xed\xa0\x80", b"\xff"],
            "topic_filter": [b"#", b"+", b"+/+", b"a/#/b", b"a#", b"+a", b"$share/g/#", b"$share//a", b"$share/g", b"$SYS/#", b""],
            "client_id": [b"", b"\x00", b"a" * 23, b"a" * 24, b"\xff"],
            **{f.name: ids for t in self._templates for f in t.message.fields if f.name.endswith("_id") and f.name != "packet_id"
               and f.name != "client_id"},
        }

    def needs_opening(self, frame: bytes) -> bool:
        """CONNECT first: its own handshake; PINGREQ and more: a packet before CONNECT."""
        if not frame:
            return True
        if frame[0] >> 4 == CONNECT:
            return False
        return not (frame[0] >> 4 == PINGREQ and self.frame_length(frame) not in (None, len(frame)))

    def frame_length(self, frame: bytes) -> int | None:
        head = _header(frame) if frame else None
        if not isinstance(head, tuple):
            return None
        return 1 + head[1] + head[0]

    def repair(self, frame: bytes) -> bytes:
        """The first packet's Remaining Length made to cover the rest of the frame, in the fewest bytes."""
        if len(frame) < 2:
            return frame
        width = 0
        while width < 4 and 1 + width < len(frame):
            width += 1
            if not frame[width] & 0x80:
                break
        body = frame[1 + width:]
        if len(body) > MAX_REMAINING:
            return frame
        return packet(frame[0], body)

    def structural_faults(self, template: Template) -> tuple[tuple[str, bytes], ...]:
        """Framing, string, property and state faults around one valid request."""
        v = self.version
        frame = template.encode()
        pkt = split_packets(frame)[0][0]
        first, body = frame[0], pkt.body
        kind = pkt.type
        rest = frame[len(pkt.raw):]  # the PINGREQ of read_retained

        def with_body(data: bytes, head: int = first) -> bytes:
            return packet(head, data) + rest

        def over_long(extra: int) -> bytes:
            minimal = bytearray(_REMAINING.encode(len(body)))
            minimal[-1] |= 0x80
            return bytes([first]) + minimal + b"\x80" * (extra - 1) + b"\x00" + body + rest

        faults: list[tuple[str, bytes]] = [
            ("remaining length one more than the content", template.encode(remaining_length=len(body) + 1)),
            ("remaining length in two bytes (over-long encoding)", over_long(1)),
            *([("remaining length in four bytes (over-long encoding)", over_long(4 - len(_REMAINING.encode(len(body)))))]
              if len(_REMAINING.encode(len(body))) < 3 else []),
            ("remaining length of five bytes", bytes([first]) + b"\xff\xff\xff\xff\x7f" + body + rest),
            ("remaining length 268435455 (the maximum) before a short packet", template.encode(remaining_length=MAX_REMAINING)),
            ("remaining length 16384 before a short packet", template.encode(remaining_length=16384)),
            ("packet type 0 (reserved)", with_body(body, first & 0x0F)),
            (f"packet type 15 (AUTH in 5.0, reserved in 3.1.1) with the body of {pkt.name}", with_body(body, 0xF0 | (first & 0x0F))),
            (f"packet type 9 (SUBACK, sent by the server) with the body of {pkt.name}", with_body(body, 0x90)),
        ]
        if body:
            faults += [("remaining length one less than the content", template.encode(remaining_length=len(body) - 1)),
                       ("remaining length 0 before the body", template.encode(remaining_length=0))]
        if kind == PUBLISH:
            faults += [("PUBLISH with QoS 3", with_body(body, (first & 0xF9) | 0x06)),
                       ("PUBLISH with DUP set", with_body(body, first | 0x08))]
        else:
            faults += [(f"{pkt.name} with fixed header flags 0xF", with_body(body, first | 0x0F)),
                       (f"{pkt.name} with fixed header flags {FIXED_FLAGS[kind] ^ 2}", with_body(body, first ^ 0x02))]
        if kind != CONNECT:
            faults.append((f"{pkt.name} before CONNECT (PINGREQ, then the packet, on a fresh connection)",
                           PINGREQ_MESSAGE.encode() + frame))
        faults += _FAULTS[kind](self, template, pkt)
        if template is self._templates[0]:
            # faults about the connection that need no particular packet: once, with the first template
            unsubscribe = self._by_name["unsubscribe"].encode()
            faults += [
                ("second CONNECT on a connected session (after an UNSUBSCRIBE)", unsubscribe + frame),
                ("CONNECT, then CONNECT again", frame + frame),
                ("PINGREQ with remaining length 1 and one byte", packet(0xC0, b"\x00")),
                ("PINGREQ before CONNECT on a fresh connection", PINGREQ_MESSAGE.encode() + PINGREQ_MESSAGE.encode()),
            ]
            if v == 4:
                faults.append(("DISCONNECT with one byte (3.1.1 has none)", packet(0xE0, b"\x00")))
        return distinct_faults(frame, faults)

    # -- what came back ---------------------------------------------------------------------

    def _walk(self, frame: bytes) -> tuple[tuple[Parsed, ...], bytes, str | None]:
        return _walk(bytes(frame), self.version)

    def check_request(self, frame: bytes) -> list[str]:
        """Problems of the packets up to the one whose answer is the reply: the broker answers
        each packet before it reads the next, so what follows that one cannot change its answer."""
        parsed, rest, problem = self._walk(frame)
        problems: list[str] = []
        if any(expectation(item.packet) is not None for item in parsed):
            parsed = parsed[:_answered(parsed)]
        elif problem:
            problems.append(problem)
        elif rest:
            head = _header(rest)
            if isinstance(head, tuple):
                problems.append(f"remaining_length={head[0]} but {len(rest) - 1 - head[1]} bytes follow")
            elif not parsed:
                problems.append(f"{len(rest)} bytes are not a whole fixed header")
        if not parsed:
            return problems
        pre_connect = not self.needs_opening(frame) and parsed[0].packet.type != CONNECT
        authenticated = False
        for n, item in enumerate(parsed):
            where = f"packet {n + 1}: " if len(parsed) > 1 else ""
            problems += [where + p for p in item.problems]
            kind = item.packet.type
            if kind == CONNECT:
                authenticated = 0x15 in item.properties
                if n > 0:
                    problems.append(where + "second CONNECT on a connected session")
            elif n == 0 and pre_connect:
                problems.append(f"{where}{item.packet.name} before CONNECT: the first packet must be CONNECT")
            if kind == AUTH and item.version == 5 and not authenticated:
                problems.append(where + "AUTH on a connection whose CONNECT had no authentication_method")
            if kind == DISCONNECT and item.properties.get(0x11, [0])[0] and not any(
                    p.packet.type == CONNECT and p.properties.get(0x11, [0])[0] for p in parsed[:n]):
                problems.append(where + "session_expiry_interval above 0 in DISCONNECT after a CONNECT with 0")
        return problems

    def keeps_connection(self, request: bytes, reply: bytes) -> bool:
        """A broker closes the connection after a DISCONNECT, and may close it instead of sending
        a CONNACK larger than the client's Maximum Packet Size (MQTT 5, 3.1.2.11.4)."""
        if reply:
            return True
        parsed, _, _ = self._walk(request)
        for item in parsed:
            if item.packet.type == DISCONNECT:
                return False
            limits = item.properties.get(0x27) or []
            if item.packet.type == CONNECT and any(isinstance(v, int) and v < MIN_CONNACK for v in limits):
                return False
        return True

    def may_reject(self, frame: bytes) -> list[str]:
        """Control characters and non-characters in strings (mosquitto, for one, refuses them);
        and whatever follows the answered packets: the broker answers those first, then may
        close on what comes after, and a reset can then overtake the answer."""
        parsed, rest, problem = self._walk(frame)
        answered = _answered(parsed)
        notes = [note for item in parsed[:answered] for note in item.notes]
        for n, item in enumerate(parsed[:answered]):
            if item.packet.type == DISCONNECT and n + 1 < answered:
                notes.append(f"packet {n + 2} after DISCONNECT: the broker may have closed the connection")
                break
        if any(expectation(item.packet) is not None for item in parsed):
            for n, item in enumerate(parsed[answered:], start=answered + 1):
                notes += [f"packet {n} after the answered one: {p}" for p in item.problems + item.notes]
            if rest:
                notes.append(f"{len(rest)} bytes after the answered packets do not frame" + (f" ({problem})" if problem else ""))
        return notes

    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        packets, rest, problem = split_packets(reply)
        if not packets:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{len(reply)} bytes that do not frame as an MQTT packet"
                                + (f" ({problem})" if problem else ""))
        if rest:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{len(packets)} packets and {len(rest)} stray bytes in one reply")
        asked, _, _ = self._walk(request)
        version = asked[-1].version if asked else self.version
        if asked and _is_read([p.packet for p in asked]) and not (len(packets) == 1 and packets[0].type == DISCONNECT):
            return self._classify_read(packets, version)
        if len(packets) != 1:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{len(packets)} packets in one reply")
        pkt = packets[0]
        if pkt.type == CONNACK and version == 5 and len(pkt.body) == 2:
            # a broker refusing a protocol level it does not support may answer in the 3.1.1 form
            if pkt.body[1] == 0:
                return ReplyVerdict(ReplyKind.MALFORMED, "CONNACK in the 3.1.1 form accepts an MQTT 5 CONNECT")
            version = 4
        got = parse_packet(pkt, version, client=False)
        if got.problems:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{pkt.name}: {got.problems[0]}")
        if pkt.type == DISCONNECT:
            if version != 5:
                return ReplyVerdict(ReplyKind.MALFORMED, "DISCONNECT from the broker in MQTT 3.1.1")
            code = got.reason_code or 0
            return ReplyVerdict(ReplyKind.EXCEPTION, f"DISCONNECT 0x{code:02X} {REASON_CODES.get(code, '')}".rstrip())
        target = next((p for p in reversed(asked) if expectation(p.packet) is not None), None)
        if target is None:
            return ReplyVerdict(ReplyKind.MALFORMED, f"unexpected {pkt.name}")
        want_type, want_id = expectation(target.packet)  # type: ignore[misc]
        if pkt.type != want_type:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{pkt.name} answers a {target.packet.name}")
        # A request that does not parse may have been read otherwise by the broker: its fields say
        # nothing about the answer, which is then judged alone (a normal one is still a violation).
        trusted = target if not target.problems else None
        if trusted and want_id not in (None, PACKET_ID_AUTO) and got.packet_id is not None and got.packet_id != want_id:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{pkt.name} for packet_id {got.packet_id}, the request had {want_id}")
        return _JUDGES[pkt.type](got, trusted, version)

    def _classify_read(self, packets: list[Packet], version: int) -> ReplyVerdict:
        *messages, last = packets
        if last.type != PINGRESP:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{last.name} where PINGRESP ends the retained messages")
        for pkt in messages:
            if pkt.type != PUBLISH or parse_packet(pkt, version, client=False).problems:
                return ReplyVerdict(ReplyKind.MALFORMED, f"{pkt.name} among the retained messages")
        return ReplyVerdict(ReplyKind.NORMAL, f"{len(messages)} retained message{'' if len(messages) == 1 else 's'}")

    def is_write(self, frame: bytes) -> bool:
        """Conservative (module docstring): PUBLISH; CONNECT with a will or a kept session; a
        shared SUBSCRIBE; DISCONNECT 0x04. Bytes that do not frame count by their first byte."""
        packets, rest, _ = split_packets(frame)
        for pkt in packets:
            kind = pkt.type
            if kind == PUBLISH:
                return True
            if kind == CONNECT and _connect_keeps_state(pkt):
                return True
            if kind == SUBSCRIBE and SHARE_PREFIX in pkt.body:
                return True
            if kind == DISCONNECT and pkt.body[:1] == b"\x04":
                return True
        return bool(rest) and rest[0] >> 4 in (PUBLISH, CONNECT)

    def expects_reply(self, frame: bytes) -> bool:
        """PUBLISH at QoS 0, PUBACK, PUBCOMP and DISCONNECT are never answered; bytes that do not
        frame may be (a broker refusing them with DISCONNECT); bytes after whole packets are not."""
        packets, rest, _ = split_packets(frame)
        return any(expectation(p) is not None for p in packets) or (not packets and bool(rest))

    def request_type(self, frame: bytes) -> str | None:
        """The template a frame's main packet is: the SUBSCRIBE of SUBSCRIBE+PINGREQ, else the
        last whole packet, else what the first byte of unframed bytes names."""
        packets, rest, _ = split_packets(frame)
        if _is_read(packets):
            return "read_retained"
        if packets:
            kind, flags, body = packets[-1].type, packets[-1].flags, packets[-1].body
        elif rest:
            head = _header(rest)
            kind, flags, body = rest[0] >> 4, rest[0] & 0x0F, rest[1 + head[1]:] if isinstance(head, tuple) else b""
        else:
            return None
        if kind == CONNECT:
            connect_flags = _connect_flags_of(body)
            if connect_flags is not None and connect_flags & 0x04:
                return "connect_will"
            return "connect_credentials" if connect_flags is not None and connect_flags & 0x80 else "connect"
        if kind == PUBLISH:
            return "publish_retained" if flags & 1 else f"publish_qos{min((flags >> 1) & 3, 2)}"
        if kind == SUBSCRIBE:
            if SHARE_PREFIX in body:
                return "subscribe_shared"
            return "subscribe_wildcards" if b"#" in body or b"+" in body else "subscribe"
        if kind == 0:
            return "reserved_packet_type_0"
        if kind in SERVER_ONLY:
            return f"{PACKET_NAMES[kind].lower()}_from_client"
        if kind == AUTH and self.version != 5:
            return "auth_in_mqtt_3_1_1"
        return PACKET_NAMES[kind].lower()

    def describe(self, frame: bytes) -> str:
        packets, rest, problem = split_packets(frame)
        parts = []
        for pkt in packets:
            text = pkt.name
            if pkt.type == PUBLISH:
                text += f" QoS {pkt.qos}{' retained' if pkt.flags & 1 else ''}"
            parsed = parse_packet(pkt, self.version, client=True)
            if parsed.topic is not None:
                text += f" topic {parsed.topic[:40]!r}"
            if parsed.filters:
                text += " filters " + ", ".join(repr(f[:40]) for f, _ in parsed.filters[:3])
            if parsed.packet_id is not None:
                text += f" id {parsed.packet_id}"
            if parsed.problems:
                text += f" ({parsed.problems[0]})"
            parts.append(text)
        if rest:
            parts.append(f"{len(rest)} unframed bytes" + (f" ({problem})" if problem else ""))
        return "; ".join(parts) or "empty frame"


@functools.lru_cache(maxsize=64)
def _walk(frame: bytes, version: int) -> tuple[tuple[Parsed, ...], bytes, str | None]:
    """Parse every packet of a request frame (kept for the few calls one case makes: the engine
    asks check_request, may_reject and classify about the same frame; read, never changed).
    A CONNECT that opens the frame (sent without the session's own) sets the version of the
    rest; a later one is a second CONNECT and changes nothing."""
    packets, rest, problem = split_packets(frame)
    out = []
    for n, pkt in enumerate(packets):
        parsed = parse_packet(pkt, version, client=True)
        if n == 0:
            version = parsed.version
        out.append(parsed)
    return tuple(out), rest, problem


def _connect_level_of(body: bytes) -> int | None:
    """The Protocol Level octet of a CONNECT body, or None when the body is too short to hold it."""
    if len(body) < 2:
        return None
    at = 2 + int.from_bytes(body[:2], "big")
    return body[at] if at < len(body) else None


def _connect_flags_of(body: bytes) -> int | None:
    """The Connect Flags octet of a CONNECT body, or None when the body is too short to hold it."""
    if len(body) < 2:
        return None
    at = 2 + int.from_bytes(body[:2], "big") + 1
    return body[at] if at < len(body) else None


def _connect_keeps_state(pkt: Packet) -> bool:
    """A CONNECT that leaves something behind when the connection ends: a will, a session kept
    (clean session 0) or, in 5.0, a Session Expiry Interval above 0. Unparsable counts as yes."""
    flags = _connect_flags_of(pkt.body)
    if flags is None or flags & 0x04 or not flags & 0x02:
        return True
    parsed = parse_packet(pkt, 4, client=True)
    if parsed.connect_level != 5:
        return False
    unreadable = any("propert" in p for p in parsed.problems)
    return unreadable or bool(parsed.properties.get(0x11, [0])[0])


# -- judging replies ------------------------------------------------------------------------


def _named(pkt_name: str, code: int) -> str:
    return f"{pkt_name} 0x{code:02X} {REASON_CODES.get(code, '')}".rstrip()


def _judge_connack(got: Parsed, asked: Parsed | None, version: int) -> ReplyVerdict:
    code = got.reason_code or 0
    present = bool((got.connect_flags or 0) & 1)
    clean = asked is not None and bool((asked.connect_flags or 0) & 0x02)
    if version == 4:
        if code not in RETURN_CODES:
            return ReplyVerdict(ReplyKind.MALFORMED, f"CONNACK return code {code} is not defined")
        if present and (code or clean):
            return ReplyVerdict(ReplyKind.MALFORMED, f"CONNACK return code {code} with session present after a clean session")
        text = f"CONNACK return code {code} ({RETURN_CODES[code]})"
        return ReplyVerdict(ReplyKind.EXCEPTION if code else ReplyKind.NORMAL, text)
    if code not in REASONS_BY_PACKET[CONNACK]:
        return ReplyVerdict(ReplyKind.MALFORMED, f"CONNACK reason code 0x{code:02X} is not a CONNACK reason code")
    if present and (code or clean):
        return ReplyVerdict(ReplyKind.MALFORMED, f"{_named('CONNACK', code)} with session present after a clean start")
    return ReplyVerdict(ReplyKind.EXCEPTION if code >= 0x80 else ReplyKind.NORMAL, _named("CONNACK", code))


def _judge_ack(got: Parsed, asked: Parsed | None, version: int) -> ReplyVerdict:
    code = got.reason_code or 0
    name = got.packet.name
    if version == 4:
        return ReplyVerdict(ReplyKind.NORMAL, f"{name} id {got.packet_id}")
    return ReplyVerdict(ReplyKind.EXCEPTION if code >= 0x80 else ReplyKind.NORMAL, _named(name, code))


def _judge_suback(got: Parsed, asked: Parsed | None, version: int) -> ReplyVerdict:
    codes = list(got.codes)
    if not codes:
        return ReplyVerdict(ReplyKind.MALFORMED, "SUBACK without a return code")
    if asked is not None and len(codes) != len(asked.filters):
        return ReplyVerdict(ReplyKind.MALFORMED, f"SUBACK with {len(codes)} return codes for {len(asked.filters)} topic filters")
    allowed = REASONS_BY_PACKET[SUBACK] if version == 5 else frozenset({0, 1, 2, 0x80})
    for n, code in enumerate(codes):
        if code not in allowed:
            return ReplyVerdict(ReplyKind.MALFORMED, f"SUBACK return code 0x{code:02X} is not defined")
        options = asked.filters[n][1] if asked is not None else 2
        if code < 0x80 and code > options & 3:
            return ReplyVerdict(ReplyKind.MALFORMED, f"SUBACK grants QoS {code} above the QoS {options & 3} asked for")
    failed = [c for c in codes if c >= 0x80]
    if failed:
        text = _named("SUBACK", failed[0]) if version == 5 else "SUBACK 0x80 Failure"
        return ReplyVerdict(ReplyKind.EXCEPTION, text + (f" ({len(failed)} of {len(codes)} filters)" if len(codes) > 1 else ""))
    return ReplyVerdict(ReplyKind.NORMAL, "SUBACK granted QoS " + ", ".join(str(c) for c in codes))


def _judge_unsuback(got: Parsed, asked: Parsed | None, version: int) -> ReplyVerdict:
    if version == 4:
        return ReplyVerdict(ReplyKind.NORMAL, "UNSUBACK")
    codes = list(got.codes)
    if asked is not None and len(codes) != len(asked.filters):
        return ReplyVerdict(ReplyKind.MALFORMED, f"UNSUBACK with {len(codes)} reason codes for {len(asked.filters)} topic filters")
    for code in codes:
        if code not in REASONS_BY_PACKET[UNSUBACK]:
            return ReplyVerdict(ReplyKind.MALFORMED, f"UNSUBACK reason code 0x{code:02X} is not defined")
    failed = [c for c in codes if c >= 0x80]
    if failed:
        return ReplyVerdict(ReplyKind.EXCEPTION, _named("UNSUBACK", failed[0]))
    return ReplyVerdict(ReplyKind.NORMAL, ", ".join(_named("UNSUBACK", c) for c in codes))


def _judge_pingresp(got: Parsed, asked: Parsed | None, version: int) -> ReplyVerdict:
    return ReplyVerdict(ReplyKind.NORMAL, "PINGRESP")


def _judge_auth(got: Parsed, asked: Parsed | None, version: int) -> ReplyVerdict:
    return ReplyVerdict(ReplyKind.NORMAL, _named("AUTH", got.reason_code or 0))


_JUDGES = {CONNACK: _judge_connack, PUBACK: _judge_ack, PUBREC: _judge_ack, PUBREL: _judge_ack, PUBCOMP: _judge_ack,
           SUBACK: _judge_suback, UNSUBACK: _judge_unsuback, PINGRESP: _judge_pingresp, AUTH: _judge_auth}


# -- structural faults by packet type -------------------------------------------------------


def _connect_faults(proto: MQTT, template: Template, pkt: Packet) -> list[tuple[str, bytes]]:
    enc = template.encode
    connect_flags = int(template.message.decode(template.encode())["connect_flags"])
    faults = [
        ("protocol name MQTX", enc(protocol_name=b"MQTX")),
        ("protocol name MQIsdp with level 4", enc(protocol_name=b"MQIsdp")),
        ("protocol name of 0 bytes", enc(protocol_name=b"")),
        ("protocol level 3 with protocol name MQTT", enc(protocol_level=3)),
        ("protocol level 6 (not defined)", enc(protocol_level=6)),
        ("protocol level 0", enc(protocol_level=0)),
        ("connect flags with the reserved bit 0 set", enc(connect_flags=connect_flags | 0x01)),
        ("clean session 0 with a client id of 0 bytes", enc(connect_flags=connect_flags & ~0x02)),
        ("client id with U+0000", enc(client_id=b"otfuzz\x00")),
        ("client id with ill-formed UTF-8 (0xFF)", enc(client_id=b"otfuzz\xff")),
        ("client id with an over-long encoding of U+0000 (C0 80)", enc(client_id=b"\xc0\x80")),
        ("client id with a surrogate code point (U+D800)", enc(client_id=b"\xed\xa0\x80")),
        ("client id length one past the end of the packet", enc(client_id_length=len(template.values.get("client_id", b"")) + 1)),
        ("one byte after the last field, remaining length adjusted", packet(pkt.raw[0], pkt.body + b"\x00")),
        ("CONNECT cut after the keep alive, remaining length adjusted", packet(pkt.raw[0], pkt.body[:10])),
    ]
    if not connect_flags & 0x04:
        faults += [("will QoS 1 without the will flag", enc(connect_flags=connect_flags | 0x08)),
                   ("will retain without the will flag", enc(connect_flags=connect_flags | 0x20)),
                   ("user name flag without a user name field", enc(connect_flags=connect_flags | 0x80))]
    else:
        faults += [("will QoS 3", enc(connect_flags=connect_flags | 0x18)),
                   ("will topic with the wildcard #", enc(will_topic=b"otfuzz/#")),
                   ("will topic of 0 bytes", enc(will_topic=b""))]
    if not connect_flags & 0xC0:
        # the flags octet is byte 7 of the body (protocol name "MQTT" takes 6); the password goes last
        with_password = pkt.body[:7] + bytes([connect_flags | 0x40]) + pkt.body[8:] + b"\x00\x01x"
        faults.append(("password flag and a password without the user name flag", packet(pkt.raw[0], with_password)))
    if proto.version == 5:
        faults += [
            ("receive maximum twice", with_properties(template, b"\x21\x00\x0a")),
            ("unknown property 0x7F", with_properties(template, b"\x7f\x00")),
            ("property 0x23 (topic alias) not allowed in CONNECT", with_properties(template, b"\x23\x00\x01")),
            ("property length one past the properties", enc(property_length=_prop_length(template) + 1)),
            ("receive maximum 0", enc(receive_maximum=0)),
            ("maximum packet size 0", enc(maximum_packet_size=0)),
            ("request problem information 2", enc(request_problem_information=2)),
            ("authentication data without an authentication method", with_properties(template, b"\x16\x00\x01x")),
            ("property identifier 0x11 as a two-byte variable byte integer", with_properties(template, b"\x91\x00\x00\x00\x00\x00")),
        ]
        if connect_flags & 0x04:
            faults += [("will property 0x11 (session expiry) not allowed in the will", with_properties(template, b"\x11\x00\x00\x00\x01", "will_")),
                       ("will payload format indicator twice", with_properties(template, b"\x01\x01", "will_"))]
    return faults


def _prop_length(template: Template, prefix: str = "") -> int:
    values = template.message.decode(template.encode())
    return int(values[f"{prefix}property_length"])


def _publish_faults(proto: MQTT, template: Template, pkt: Packet) -> list[tuple[str, bytes]]:
    enc = template.encode
    faults = [
        ("topic with the wildcard +", enc(topic=b"otfuzz/+")),
        ("topic with the wildcard #", enc(topic=b"otfuzz/#")),
        ("topic of 0 bytes", enc(topic=b"")),
        ("topic with U+0000", enc(topic=b"otfuzz/\x00")),
        ("topic with ill-formed UTF-8 (a lone continuation byte)", enc(topic=b"otfuzz/\x80")),
        ("topic with a surrogate code point (U+DFFF)", enc(topic=b"otfuzz/\xed\xbf\xbf")),
        ("topic length one past the end of the packet", packet(pkt.raw[0], (len(pkt.body) - 1).to_bytes(2, "big") + pkt.body[2:])),
        ("topic length 65535", packet(pkt.raw[0], b"\xff\xff" + pkt.body[2:])),
    ]
    if pkt.qos:
        faults += [("packet identifier 0", enc(packet_id=0)),
                   ("QoS 2 PUBLISH twice with packet identifier 0x1234", enc(packet_id=0x1234, type_and_flags=0x34) * 2),
                   ("PUBLISH at QoS 0 with the flags of QoS 1 (no packet identifier)", packet(pkt.raw[0] & 0xF9, pkt.body))]
    else:
        faults.append(("PUBLISH at QoS 1 without a packet identifier", packet(pkt.raw[0] | 0x02, pkt.body)))
    if proto.version == 5:
        faults += [
            ("payload format indicator twice", with_properties(template, b"\x01\x00\x01\x00")),
            ("unknown property 0x00", with_properties(template, b"\x00")),
            ("subscription identifier in a client's PUBLISH", with_properties(template, b"\x0b\x01")),
            ("topic alias 0", with_properties(template, b"\x23\x00\x00")),
            ("property 0x11 (session expiry) not allowed in PUBLISH", with_properties(template, b"\x11\x00\x00\x00\x01")),
            ("property length one past the properties", enc(property_length=_prop_length(template) + 1)),
            ("property length 268435455", enc(property_length=MAX_REMAINING)),
            ("payload format indicator 1 with ill-formed UTF-8", enc(payload=b"\xff\xfe")
             if _declares(template, "payload_format_indicator") else with_properties(template, b"\x01\x01", payload=b"\xff\xfe")),
            ("topic of 0 bytes with topic alias 9, never set on this connection",
             enc(topic=b"", topic_alias=9) if _declares(template, "topic_alias")
             else with_properties(template, b"\x23\x00\x09", topic=b"")),
        ]
        if _declares(template, "topic_alias"):
            faults += [("topic alias 65535, above the broker's maximum", enc(topic_alias=0xFFFF))]
    return faults


def _declares(template: Template, name: str) -> bool:
    return any(f.name == name for f in template.message.fields)


def _ack_faults(proto: MQTT, template: Template, pkt: Packet) -> list[tuple[str, bytes]]:
    enc = template.encode
    faults = [("packet identifier 0", enc(packet_id=0)),
              (f"{pkt.name} cut to one byte of packet identifier", packet(pkt.raw[0], pkt.body[:1])),
              (f"{pkt.name} for packet identifier 0xBEEF, never used", enc(packet_id=0xBEEF))]
    if proto.version == 5:
        faults += [("reason code 0x03 (not defined)", enc(reason_code=0x03)),
                   ("reason code 0x81 sent by the client", enc(reason_code=0x81)),
                   ("unknown property 0x7F", with_properties(template, b"\x7f\x00")),
                   ("reason string twice", with_properties(template, b"\x1f\x00\x01a\x1f\x00\x01b")),
                   ("property length one past the properties", enc(property_length=_prop_length(template) + 1)),
                   ("short form: packet identifier only", packet(pkt.raw[0], pkt.body[:2]))]
    else:
        faults.append((f"{pkt.name} with a reason code byte (3.1.1 has none)", packet(pkt.raw[0], pkt.body + b"\x00")))
    return faults


def _subscribe_faults(proto: MQTT, template: Template, pkt: Packet) -> list[tuple[str, bytes]]:
    enc = template.encode
    v = proto.version
    props_end = 2 + (1 + _prop_length(template) if v == 5 else 0)
    if v == 5 and _prop_length(template) > 127:  # pragma: no cover - templates keep small property blocks
        props_end += 1
    head = pkt.body[:props_end]
    rest = b"\xc0\x00" if template.name == "read_retained" else b""
    faults = [
        ("packet identifier 0", enc(packet_id=0)),
        ("no topic filter", packet(pkt.raw[0], head) + rest),
        ("topic filter of 0 bytes", enc(topic_filter=b"")),
        ("topic filter a/#/b (# not last)", enc(topic_filter=b"otfuzz/#/b")),
        ("topic filter otfuzz/a# (# inside a level)", enc(topic_filter=b"otfuzz/a#")),
        ("topic filter otfuzz/+a (+ inside a level)", enc(topic_filter=b"otfuzz/+a")),
        ("topic filter with U+0000", enc(topic_filter=b"otfuzz/\x00")),
        ("topic filter with ill-formed UTF-8 (0xFE)", enc(topic_filter=b"otfuzz/\xfe")),
        ("requested QoS 3", enc(options=3)),
        ("topic filter without its options byte", packet(pkt.raw[0], pkt.body[:-1]) + rest),
        ("topic filter # (everything)", enc(topic_filter=b"#")),
        ("topic filter $SYS/# (broker statistics)", enc(topic_filter=b"$SYS/#")),
        ("topic filter length one past the end of the packet",
         packet(pkt.raw[0], head + (len(pkt.body) - props_end - 1).to_bytes(2, "big") + pkt.body[props_end + 2:]) + rest),
    ]
    if v == 4:
        faults.append(("options with reserved bits 2-7 set", enc(options=0x04 | 1)))
    else:
        faults += [("options with reserved bits 6-7 set", enc(options=0xC1)),
                   ("retain handling 3", enc(options=0x31)),
                   ("subscription identifier 0", with_properties(template, b"\x0b\x00")),
                   ("subscription identifier twice", with_properties(template, b"\x0b\x02\x0b\x03")),
                   ("reason string not allowed in SUBSCRIBE", with_properties(template, b"\x1f\x00\x01x")),
                   ("shared subscription with an empty share name", enc(topic_filter=b"$share//otfuzz")),
                   ("shared subscription without a topic filter", enc(topic_filter=b"$share/otfuzz")),
                   ("shared subscription with a wildcard in its share name", enc(topic_filter=b"$share/a+/otfuzz")),
                   ("no local on a shared subscription", enc(topic_filter=b"$share/otfuzz/otfuzz/x", options=0x05))]
    return faults


def _unsubscribe_faults(proto: MQTT, template: Template, pkt: Packet) -> list[tuple[str, bytes]]:
    enc = template.encode
    head = pkt.body[:2 + (1 + _prop_length(template) if proto.version == 5 else 0)]
    faults = [("packet identifier 0", enc(packet_id=0)),
              ("no topic filter", packet(pkt.raw[0], head)),
              ("topic filter of 0 bytes", enc(topic_filter=b"")),
              ("topic filter a/#/b (# not last)", enc(topic_filter=b"otfuzz/#/b")),
              ("topic filter with ill-formed UTF-8 (0xC3 alone)", enc(topic_filter=b"otfuzz/\xc3"))]
    if proto.version == 5:
        faults.append(("unknown property 0x7F", with_properties(template, b"\x7f\x00")))
    return faults


def _pingreq_faults(proto: MQTT, template: Template, pkt: Packet) -> list[tuple[str, bytes]]:
    return [("PINGREQ with a 4-byte body", packet(0xC0, b"\x00\x00\x00\x00")), ("PINGREQ twice", PINGREQ_MESSAGE.encode() * 2)]


def _disconnect_faults(proto: MQTT, template: Template, pkt: Packet) -> list[tuple[str, bytes]]:
    if proto.version == 4:
        return [("DISCONNECT with a 2-byte body", packet(0xE0, b"\x00\x00"))]
    enc = template.encode
    return [("reason code 0x87 (sent by the broker only)", enc(reason_code=0x87)),
            ("reason code 0x05 (not defined)", enc(reason_code=0x05)),
            ("session expiry interval 60 after a CONNECT with 0", with_properties(template, b"\x11\x00\x00\x00\x3c")),
            ("unknown property 0x7F", with_properties(template, b"\x7f\x00")),
            ("property length one past the properties", enc(property_length=_prop_length(template) + 1))]


def _auth_faults(proto: MQTT, template: Template, pkt: Packet) -> list[tuple[str, bytes]]:
    enc = template.encode
    return [("reason code 0x00 (sent by the broker only)", enc(reason_code=0)),
            ("continue authentication (0x18) without an exchange started", enc(reason_code=0x18)),
            ("AUTH without an authentication method", packet(0xF0, b"\x19\x00")),
            ("AUTH of 0 bytes (Success, no properties)", packet(0xF0, b"")),
            ("authentication method twice", with_properties(template, b"\x15\x00\x01x"))]


_FAULTS = {CONNECT: _connect_faults, PUBLISH: _publish_faults, PUBACK: _ack_faults, PUBREC: _ack_faults, PUBREL: _ack_faults,
           PUBCOMP: _ack_faults, SUBSCRIBE: _subscribe_faults, UNSUBSCRIBE: _unsubscribe_faults, PINGREQ: _pingreq_faults,
           DISCONNECT: _disconnect_faults, AUTH: _auth_faults}
