"""EtherNet/IP (CIP Networks Library Vol 2, encapsulation over TCP) with CIP explicit messaging
(Vol 1), client side, sans-IO.

Covered: the 24-octet encapsulation header (command, length, session handle, status, sender
context, options; all little-endian), the commands a target serves over TCP (NOP,
ListServices, ListIdentity, ListInterfaces, RegisterSession, UnRegisterSession, SendRRData,
SendUnitData), the Common Packet Format (item count, typed items: null, connected and
unconnected address/data items, ListIdentity and ListServices items), CIP message router
requests and replies (service, EPATH, general and additional status), EPATH segments (port
segments, 8/16/32-bit logical class/instance/member/attribute segments, symbolic segments,
ANSI extended symbols), Get_Attributes_All and Get_Attribute_Single of the Identity object, the
Logix tag services (Read Tag, Read Tag Fragmented, Write Tag), the Connection Manager's
Unconnected Send (with a route path) and Forward Open, and connected explicit messaging
(SendUnitData with connection id and sequence count).

Templates are whole encapsulation packets declared with the message model, every layer's
lengths as `Length` fields (encapsulation length, CPF item lengths, path size in words, the
Unconnected Send message size and route path size, the symbol length), so the boundary strategy
can move one field while the model keeps every enclosing length right.

The session (`EnipSession`) patches what only the connection knows into every outgoing packet,
and leaves a field alone when the packet carries its own value there, which is how faults about
that state are written:
- session handle: RegisterSession in `opening()`; the handle learned from its reply goes into
  SendRRData, SendUnitData and UnRegisterSession packets whose handle is 0. A non-zero handle in
  a generated packet is one never registered. A packet whose sender context is
  `PRE_SESSION` is sent on a fresh connection without RegisterSession (`needs_opening` False)
  and keeps handle 0.
- sender context: a packet with context 0 gets a unique one ("otfz" + a counter); replies are
  matched to requests by it, so a late answer to an earlier request is dropped, and a frame
  carrying several packets is answered by the reply to its last one.
- connected messaging: a SendUnitData packet with connection id 0 uses the connection of the
  last successful Forward Open on this session (a `forward_open` template or one the session
  sends itself, first, when it has none: the packet waits for that reply). Its sequence count
  field is an offset from the connection's next count (0: the next one; 0xFFFF: the previous
  one again, a duplicate). Forward Open requests with connection serial 0 get a fresh serial.

`check_request` judges the packet a frame's reply answers (the last one that is answered),
with what the frame's earlier packets did to the session (UnRegisterSession before it).
Nothing here opens a socket or reads a clock.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from otfuzz.errors import DecodeError, OtfuzzError
from otfuzz.protocols.base import OptionSpec, Probe, Protocol, ReplyKind, ReplyVerdict, Session, Template, distinct_faults
from otfuzz.protocols.model import Bytes, Field, Length, MessageType, UInt

HEADER_SIZE = 24
MAX_DATA = 65511  # largest encapsulated data: 65535 less the header
CONTEXT_PREFIX = b"otfz"
PRE_SESSION = b"presessn"  # sender context of a packet sent before RegisterSession (needs_opening False)
SYNC_CONTEXT = b"otfzsync"  # sender context of `sync_request`
NEVER_REGISTERED = 0x0BADF00D  # session handle of the "handle never registered" faults
NEVER_OPENED = 0x0BADC0DE  # connection id of the "connection never opened" faults

NOP, LIST_SERVICES, LIST_IDENTITY, LIST_INTERFACES = 0x0000, 0x0004, 0x0063, 0x0064
REGISTER_SESSION, UNREGISTER_SESSION, SEND_RR_DATA, SEND_UNIT_DATA = 0x0065, 0x0066, 0x006F, 0x0070
COMMANDS: Mapping[int, str] = MappingProxyType(
    {
        NOP: "NOP", LIST_SERVICES: "ListServices", LIST_IDENTITY: "ListIdentity", LIST_INTERFACES: "ListInterfaces",
        REGISTER_SESSION: "RegisterSession", UNREGISTER_SESSION: "UnRegisterSession", SEND_RR_DATA: "SendRRData",
        SEND_UNIT_DATA: "SendUnitData",
    }
)  # fmt: skip
# Defined but not served to originators (IndicateStatus, Cancel): listed for the dictionary only.
OTHER_COMMANDS: Mapping[int, str] = MappingProxyType({0x0072: "IndicateStatus", 0x0073: "Cancel"})
SESSION_COMMANDS = frozenset({SEND_RR_DATA, SEND_UNIT_DATA, UNREGISTER_SESSION})

ENCAP_STATUS: Mapping[int, str] = MappingProxyType(
    {
        0x0000: "success", 0x0001: "invalid or unsupported encapsulation command", 0x0002: "insufficient memory",
        0x0003: "incorrect data", 0x0064: "invalid session handle", 0x0065: "invalid length",
        0x0069: "unsupported encapsulation protocol revision",
    }
)  # fmt: skip

NULL_ADDRESS, CONNECTED_ADDRESS, CONNECTED_DATA, UNCONNECTED_DATA = 0x0000, 0x00A1, 0x00B1, 0x00B2
IDENTITY_ITEM, SERVICES_ITEM = 0x000C, 0x0100
ITEM_TYPES: Mapping[int, str] = MappingProxyType(
    {
        NULL_ADDRESS: "null address", IDENTITY_ITEM: "ListIdentity response", CONNECTED_ADDRESS: "connected address",
        CONNECTED_DATA: "connected data", UNCONNECTED_DATA: "unconnected data", SERVICES_ITEM: "ListServices response",
        0x8000: "sockaddr info O->T", 0x8001: "sockaddr info T->O", 0x8002: "sequenced address",
    }
)  # fmt: skip

GET_ATTRIBUTES_ALL, GET_ATTRIBUTE_SINGLE = 0x01, 0x0E
READ_TAG, WRITE_TAG, READ_TAG_FRAGMENTED = 0x4C, 0x4D, 0x52
UNCONNECTED_SEND, FORWARD_OPEN, LARGE_FORWARD_OPEN, FORWARD_CLOSE = 0x52, 0x54, 0x5B, 0x4E
SERVICES: Mapping[int, str] = MappingProxyType(
    {
        0x01: "Get_Attributes_All", 0x02: "Set_Attributes_All", 0x03: "Get_Attribute_List", 0x04: "Set_Attribute_List",
        0x05: "Reset", 0x06: "Start", 0x07: "Stop", 0x08: "Create", 0x09: "Delete", 0x0A: "Multiple_Service_Packet",
        0x0D: "Apply_Attributes", 0x0E: "Get_Attribute_Single", 0x10: "Set_Attribute_Single",
        0x11: "Find_Next_Object_Instance", 0x14: "Error_Response", 0x15: "Restore", 0x16: "Save", 0x17: "No_Operation",
        0x18: "Get_Member", 0x19: "Set_Member", 0x1A: "Insert_Member", 0x1B: "Remove_Member", 0x1C: "GroupSync",
        READ_TAG: "Read Tag", WRITE_TAG: "Write Tag", 0x4E: "Read Modify Write Tag", READ_TAG_FRAGMENTED: "Read Tag Fragmented",
        0x53: "Write Tag Fragmented",
    }
)  # fmt: skip
CONNECTION_MANAGER_SERVICES: Mapping[int, str] = MappingProxyType(
    {FORWARD_CLOSE: "Forward Close", UNCONNECTED_SEND: "Unconnected Send", FORWARD_OPEN: "Forward Open",
     LARGE_FORWARD_OPEN: "Large Forward Open", 0x5A: "Get Connection Owner"}
)  # fmt: skip
# Services that read and never change the target (Forward Open/Close change only connections).
READ_SERVICES = frozenset({0x01, 0x03, 0x0E, 0x11, 0x17, 0x18, READ_TAG, READ_TAG_FRAGMENTED})
CONNECTION_SERVICES = frozenset({FORWARD_OPEN, LARGE_FORWARD_OPEN, FORWARD_CLOSE})
OBJECT_SPECIFIC = range(0x4B, 0x64)  # meaning depends on the class addressed
RESERVED_SERVICES = frozenset({0x00, 0x0B, 0x0C, 0x0F, 0x12, 0x13, *range(0x1D, 0x4B), *range(0x64, 0x80)})

GENERAL_STATUS: Mapping[int, str] = MappingProxyType(
    {
        0x00: "success", 0x01: "connection failure", 0x02: "resource unavailable", 0x03: "invalid parameter value",
        0x04: "path segment error", 0x05: "path destination unknown", 0x06: "partial transfer", 0x07: "connection lost",
        0x08: "service not supported", 0x09: "invalid attribute value", 0x0A: "attribute list error",
        0x0B: "already in requested mode/state", 0x0C: "object state conflict", 0x0D: "object already exists",
        0x0E: "attribute not settable", 0x0F: "privilege violation", 0x10: "device state conflict",
        0x11: "reply data too large", 0x12: "fragmentation of a primitive value", 0x13: "not enough data",
        0x14: "attribute not supported", 0x15: "too much data", 0x16: "object does not exist",
        0x17: "service fragmentation sequence not in progress", 0x18: "no stored attribute data",
        0x19: "store operation failure", 0x1A: "routing failure, request packet too large",
        0x1B: "routing failure, response packet too large", 0x1C: "missing attribute list entry data",
        0x1D: "invalid attribute value list", 0x1E: "embedded service error", 0x1F: "vendor specific error",
        0x20: "invalid parameter", 0x21: "write-once value or medium already written", 0x22: "invalid reply received",
        0x23: "buffer overflow", 0x24: "message format error", 0x25: "key failure in path", 0x26: "path size invalid",
        0x27: "unexpected attribute in list", 0x28: "invalid member id", 0x29: "member not settable",
        0x2A: "group 2 only server general failure", 0x2B: "unknown Modbus error", 0x2C: "attribute not gettable",
    }
)  # fmt: skip
# Extended status of general status 0x01 (Connection Manager, Vol 1 table 3-5.29) and of 0xFF
# (object-specific; the values Logix controllers use for tag services).
EXTENDED_STATUS: Mapping[int, Mapping[int, str]] = MappingProxyType(
    {
        0x01: MappingProxyType({
            0x0100: "connection in use or duplicate Forward Open", 0x0103: "transport class and trigger combination not supported",
            0x0106: "ownership conflict", 0x0107: "connection not found at target", 0x0108: "invalid network connection parameter",
            0x0109: "invalid connection size", 0x0110: "target for connection not configured", 0x0111: "RPI not supported",
            0x0113: "out of connections", 0x0114: "vendor id or product code mismatch", 0x0115: "device type mismatch",
            0x0116: "revision mismatch", 0x0117: "invalid produced or consumed application path",
            0x0118: "invalid or inconsistent configuration application path", 0x011B: "RPI smaller than production inhibit time",
            0x0203: "connection timed out", 0x0204: "unconnected request timed out",
            0x0205: "parameter error in unconnected request", 0x0206: "message too large for Unconnected Send",
            0x0207: "unconnected acknowledge without reply", 0x0301: "no buffer memory available",
            0x0302: "network bandwidth not available", 0x0303: "no consumed connection id filter available",
            0x0311: "port not available", 0x0312: "link address not valid", 0x0315: "invalid segment in connection path",
            0x0316: "error in Forward Close connection path", 0x0318: "link address to self invalid",
        }),
        0xFF: MappingProxyType({
            0x2101: "keyswitch position does not allow the request", 0x2104: "offset beyond the end of the tag",
            0x2105: "access beyond the end of the object", 0x2107: "data type does not match the tag",
        }),
    }
)  # fmt: skip

DATA_TYPES: Mapping[int, tuple[str, int]] = MappingProxyType(
    {
        0xC1: ("BOOL", 1), 0xC2: ("SINT", 1), 0xC3: ("INT", 2), 0xC4: ("DINT", 4), 0xC5: ("LINT", 8), 0xC6: ("USINT", 1),
        0xC7: ("UINT", 2), 0xC8: ("UDINT", 4), 0xC9: ("ULINT", 8), 0xCA: ("REAL", 4), 0xCB: ("LREAL", 8),
        0xD1: ("BYTE", 1), 0xD2: ("WORD", 2), 0xD3: ("DWORD", 4), 0xD4: ("LWORD", 8),
    }
)  # fmt: skip
STRUCTURE_TYPE = 0xA0  # a 2-octet structure handle follows the type
IDENTITY_CLASS, MESSAGE_ROUTER_CLASS, CONNECTION_MANAGER_CLASS = 0x01, 0x02, 0x06
CLASSES: Mapping[int, str] = MappingProxyType(
    {
        0x01: "Identity", 0x02: "Message Router", 0x04: "Assembly", 0x05: "Connection", 0x06: "Connection Manager",
        0x07: "Register", 0x0F: "Parameter", 0x37: "File", 0x47: "DLR", 0x48: "QoS", 0x6B: "Symbol", 0x6C: "Template",
        0xF4: "Port", 0xF5: "TCP/IP Interface", 0xF6: "Ethernet Link",
    }
)  # fmt: skip
VENDORS: Mapping[int, str] = MappingProxyType({1: "Rockwell Automation/Allen-Bradley"})
DEVICE_TYPES: Mapping[int, str] = MappingProxyType(
    {0x00: "generic device", 0x02: "AC drive", 0x07: "general purpose discrete I/O", 0x0C: "communications adapter",
     0x0E: "programmable logic controller", 0x2B: "generic device (keyable)"}
)  # fmt: skip

LOGICAL_TYPES: Mapping[str, int] = MappingProxyType({"class": 0, "instance": 1, "member": 2, "connection_point": 3, "attribute": 4})
_LOGICAL_NAMES = {v: k for k, v in LOGICAL_TYPES.items()}
SYMBOL_SEGMENT = 0x91  # ANSI extended symbol
MAX_TAG_LENGTH = 40  # Logix tag names
MAX_ROUTE_HOPS = 8

# Forward Open defaults: point-to-point, low priority, variable size of 500 octets both ways;
# class 3 server transport with application trigger; 2 s RPI, timeout x32 (64 s idle).
NETWORK_PARAMETERS = 0x43F4
TRANSPORT_CLASS_3 = 0xA3
ORIGINATOR_VENDOR = 0x1337
ORIGINATOR_SERIAL = int.from_bytes(b"otfz", "little")


# -- declarations ---------------------------------------------------------------------------

Rule = Callable[[Mapping[str, Any]], "str | None"]


def _u(name: str, bits: int, default: int = 0, **kw: Any) -> UInt:
    """Every EtherNet/IP and CIP integer is little-endian."""
    return UInt(name, bits, "little", default=default, **kw)


def _header(command: int, data: Sequence[Field] = ()) -> list[Field]:
    """The encapsulation header; its length counts the `data` fields that follow it."""
    return [
        _u("command", 16, command, enum={**COMMANDS, **OTHER_COMMANDS}),
        Length("length", 16, "little", covers=tuple(f.name for f in data), maximum=MAX_DATA),
        _u("session_handle", 32),
        _u("status", 32, maximum=0),
        Bytes("sender_context", size=8, default=bytes(8)),
        _u("options", 32, maximum=0),
    ]


ENCAP_HEADER = MessageType("encapsulation_header", _header(NOP), doc="the 24-octet header of every packet")
NOP_PACKET = MessageType("nop", _header(NOP), doc="NOP: never answered")
REGISTER_DATA = MessageType(
    "register_session_data",
    [_u("protocol_version", 16, 1, minimum=1, maximum=1), _u("option_flags", 16)],
    doc="RegisterSession: protocol version 1, option flags (reserved, 0)",
)
CPF_HEAD = MessageType(
    "cpf_head",
    [_u("interface_handle", 32, maximum=0), _u("timeout", 16), _u("item_count", 16, 2)],
    doc="SendRRData/SendUnitData: interface handle (0 = CIP), timeout, Common Packet Format item count",
)
CPF_ITEM = MessageType(
    "cpf_item",
    [_u("type_id", 16, enum=ITEM_TYPES), Length("length", 16, "little", covers=("data",)), Bytes("data", size_from="length")],
)
CIP_REPLY = MessageType(
    "cip_reply",
    [_u("reply_service", 8), _u("reserved", 8), _u("general_status", 8, enum=GENERAL_STATUS),
     Length("additional_status_size", 8, covers=("additional_status",), unit=2),
     Bytes("additional_status", size_from="additional_status_size", unit=2), Bytes("reply_data")],
)  # fmt: skip
IDENTITY_REPLY = MessageType(
    "list_identity_item",
    [
        _u("protocol_version", 16), UInt("sin_family", 16), UInt("sin_port", 16), UInt("sin_addr", 32),
        Bytes("sin_zero", size=8), _u("vendor_id", 16), _u("device_type", 16), _u("product_code", 16),
        _u("revision_major", 8), _u("revision_minor", 8), _u("status_word", 16), _u("serial_number", 32),
        Length("product_name_length", 8, covers=("product_name",)), Bytes("product_name", size_from="product_name_length"),
        _u("state", 8),
    ],
    doc="the identity item of a ListIdentity reply (socket address big-endian)",
)  # fmt: skip
SERVICE_REPLY = MessageType(
    "list_services_item", [_u("protocol_version", 16), _u("capability_flags", 16), Bytes("service_name", size=16)]
)
FORWARD_OPEN_REPLY = MessageType(
    "forward_open_reply",
    [_u("ot_connection_id", 32), _u("to_connection_id", 32), _u("connection_serial", 16), _u("originator_vendor", 16),
     _u("originator_serial", 32), _u("ot_api", 32), _u("to_api", 32),
     Length("application_size", 8, covers=("application_reply",), unit=2), _u("reply_reserved", 8),
     Bytes("application_reply", size_from="application_size", unit=2)],
)  # fmt: skip


def _logical(kind: str, value: int, bits: int = 8, prefix: str = "") -> list[Field]:
    """A logical segment (class, instance, member, attribute) in the 8-, 16- or 32-bit format."""
    code = 0x20 | LOGICAL_TYPES[kind] << 2 | {8: 0, 16: 1, 32: 2}[bits]
    # one defined value: another segment type (a network segment, a reserved format) is another
    # path, which check_request names and the structural group sends on purpose
    head = [_u(f"{prefix}{kind}_segment", 8, code, enum={code: f"{kind} segment, {bits}-bit"})]
    if bits > 8:
        head.append(_u(f"{prefix}{kind}_pad", 8))
    return [*head, _u(f"{prefix}{kind}_id", bits, value)]


def _symbolic(name: bytes, prefix: str = "") -> list[Field]:
    """An ANSI extended symbolic segment: 0x91, length, the name, a pad octet when it is odd."""
    return [
        _u(f"{prefix}symbol_segment", 8, SYMBOL_SEGMENT, enum={SYMBOL_SEGMENT: "ANSI extended symbolic segment"}),
        Length(f"{prefix}symbol_length", 8, covers=(f"{prefix}symbol",)),
        Bytes(f"{prefix}symbol", size_from=f"{prefix}symbol_length", default=name, max_size=255),
        Bytes(f"{prefix}symbol_pad", size=len(name) % 2, default=bytes(len(name) % 2)),
    ]


def _port_segments(route: Sequence[tuple[int, int]], prefix: str) -> list[Field]:
    out: list[Field] = []
    for n, (port, link) in enumerate(route, start=1):
        out += [_u(f"{prefix}port_{n}", 8, port, minimum=1, maximum=14), _u(f"{prefix}link_{n}", 8, link)]
    return out


def _elements(prefix: str = "") -> UInt:
    return _u(f"{prefix}elements", 16, 1, minimum=1)


def _read_fragmented_fields(prefix: str = "") -> list[Field]:
    return [_elements(prefix), _u(f"{prefix}byte_offset", 32)]


def _write_fields(prefix: str = "", size: int | None = None) -> list[Field]:
    """Write Tag data; templates declare the size of their one INT (so the fields after an
    embedded request still decode), request parsing takes the rest."""
    return [_u(f"{prefix}data_type", 16, 0xC3, enum={k: v[0] for k, v in DATA_TYPES.items()}), _elements(prefix),
            Bytes(f"{prefix}data", size=size, default=b"\x00\x00")]  # fmt: skip


def _write_rule(prefix: str = "") -> Rule:
    """Write Tag: the data carries `elements` values of the declared elementary type."""

    def rule(values: Mapping[str, Any]) -> str | None:
        code, elements, data = values[f"{prefix}data_type"], values[f"{prefix}elements"], values[f"{prefix}data"]
        if code not in DATA_TYPES:
            return None  # structures (0xA0) and strings carry their own layout
        name, size = DATA_TYPES[code]
        if len(data) != elements * size:
            return f"data has {len(data)} bytes but elements={elements} of {name} need {elements * size}"
        return None

    return rule


def _forward_open_fields(connection_path: Sequence[Field], prefix: str = "") -> list[Field]:
    names = tuple(f.name for f in connection_path)
    return [
        _u(f"{prefix}priority_time_tick", 8, 0x0A), _u(f"{prefix}timeout_ticks", 8, 0x0E),
        _u(f"{prefix}ot_connection_id", 32), _u(f"{prefix}to_connection_id", 32), _u(f"{prefix}connection_serial", 16),
        _u(f"{prefix}originator_vendor", 16, ORIGINATOR_VENDOR), _u(f"{prefix}originator_serial", 32, ORIGINATOR_SERIAL),
        _u(f"{prefix}timeout_multiplier", 8, 3, maximum=7), _u(f"{prefix}fo_reserved", 24),
        _u(f"{prefix}ot_rpi", 32, 2_000_000), _u(f"{prefix}ot_parameters", 16, NETWORK_PARAMETERS),
        _u(f"{prefix}to_rpi", 32, 2_000_000), _u(f"{prefix}to_parameters", 16, NETWORK_PARAMETERS),
        _u(f"{prefix}transport_trigger", 8, TRANSPORT_CLASS_3),
        Length(f"{prefix}connection_path_size", 8, covers=names, unit=2), *connection_path,
    ]  # fmt: skip


FORWARD_OPEN_DATA = MessageType(
    "forward_open_data", [*_forward_open_fields([]), Bytes("connection_path")],
    doc="Forward Open request data after the service and path (the connection path parsed separately)",
)


def _forward_open_rule(values: Mapping[str, Any]) -> str | None:
    """Forward Open fields the Connection Manager must refuse (Vol 1 3-5.5.2)."""
    for direction in ("ot", "to"):
        parameters = values[f"{direction}_parameters"]
        if parameters >> 13 & 3 == 3:
            return f"{direction}_parameters={parameters} has the reserved connection type 3"
        if values[f"{direction}_rpi"] == 0:
            return f"{direction}_rpi=0: a connection needs a packet interval"
    transport = values["transport_trigger"]
    if transport >> 4 & 7 > 2:
        return f"transport_trigger={transport} has a reserved production trigger"
    if transport & 0x0F > 6:
        return f"transport_trigger={transport} has a reserved transport class"
    return None


def _cip(service: int, path: Sequence[Field], data: Sequence[Field] = (), prefix: str = "") -> list[Field]:
    """A message router request: service, path size in words, the path, the request data."""
    names = tuple(f.name for f in path)
    return [_u(f"{prefix}service", 8, service, enum={**SERVICES, **CONNECTION_MANAGER_SERVICES}),
            Length(f"{prefix}path_size", 8, covers=names, unit=2), *path, *data]  # fmt: skip


def _unconnected_send(embedded: Sequence[Field], route: Sequence[tuple[int, int]]) -> list[Field]:
    """Unconnected Send to the Connection Manager carrying `embedded` (already prefixed) to the
    device at the end of the route path."""
    inner = tuple(f.name for f in embedded)
    hops = _port_segments(route, "route_")
    size = sum(getattr(f, "width", 0) or len(getattr(f, "default", b"")) for f in embedded)
    return [
        *_cip(UNCONNECTED_SEND, _logical("class", CONNECTION_MANAGER_CLASS) + _logical("instance", 1)),
        _u("priority_time_tick", 8, 0x0A), _u("timeout_ticks", 8, 0x05),
        Length("message_size", 16, "little", covers=inner), *embedded,
        Bytes("message_pad", size=size % 2, default=bytes(size % 2)),
        Length("route_path_size", 8, covers=tuple(f.name for f in hops), unit=2), _u("route_reserved", 8), *hops,
    ]  # fmt: skip


def _send_rr_data(name: str, cip: Sequence[Field], rules: Sequence[Rule] = (), doc: str = "") -> MessageType:
    names = tuple(f.name for f in cip)
    data = [_u("interface_handle", 32, maximum=0), _u("timeout", 16), _u("item_count", 16, 2),
            _u("address_item_type", 16, NULL_ADDRESS, enum=ITEM_TYPES), Length("address_item_length", 16, "little", covers=()),
            _u("data_item_type", 16, UNCONNECTED_DATA, enum=ITEM_TYPES), Length("data_item_length", 16, "little", covers=names), *cip]
    return MessageType(
        name,
        [*_header(SEND_RR_DATA, data), *data],
        constraints=tuple(rules), doc=doc,
    )  # fmt: skip


def _send_unit_data(name: str, cip: Sequence[Field], rules: Sequence[Rule] = (), doc: str = "") -> MessageType:
    names = ("sequence_count", *(f.name for f in cip))
    data = [_u("interface_handle", 32, maximum=0), _u("timeout", 16), _u("item_count", 16, 2),
            _u("address_item_type", 16, CONNECTED_ADDRESS, enum=ITEM_TYPES),
            Length("address_item_length", 16, "little", covers=("connection_id",)), _u("connection_id", 32),
            _u("data_item_type", 16, CONNECTED_DATA, enum=ITEM_TYPES), Length("data_item_length", 16, "little", covers=names),
            _u("sequence_count", 16), *cip]
    return MessageType(
        name,
        [*_header(SEND_UNIT_DATA, data), *data],
        constraints=tuple(rules), doc=doc,
    )  # fmt: skip


def _encapsulation_only(name: str, command: int, data: Sequence[Field] = (), doc: str = "") -> MessageType:
    return MessageType(name, [*_header(command, data), *data], doc=doc)


def _identity_path(attribute: int | None, bits: int = 8, prefix: str = "") -> list[Field]:
    path = _logical("class", IDENTITY_CLASS, bits, prefix) + _logical("instance", 1, bits, prefix)
    return path + (_logical("attribute", attribute, bits, prefix) if attribute is not None else [])


def _parse_route(text: str) -> tuple[tuple[int, int], ...]:
    """`1/0` or `1/0,2/3`: (port, link) hops of a route path."""
    if not text:
        return ()
    hops = []
    for hop in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", hop)
        if not match:
            raise OtfuzzError(f"enip: option route={text!r} is not port/link hops such as 1/0 or 1/0,2/3")
        port, link = int(match[1]), int(match[2])
        if not 1 <= port <= 14 or link > 255:
            raise OtfuzzError(f"enip: option route={text!r}: hop {hop.strip()} needs port 1..14 and link 0..255")
        hops.append((port, link))
    if len(hops) > MAX_ROUTE_HOPS:
        raise OtfuzzError(f"enip: option route={text!r} has {len(hops)} hops, at most {MAX_ROUTE_HOPS}")
    return tuple(hops)


def _check_tag(text: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,%d}" % (MAX_TAG_LENGTH - 1), text):
        raise OtfuzzError(f"enip: option tag={text!r} is not a tag name (1..{MAX_TAG_LENGTH} letters, digits or _, not starting with a digit)")
    return text.encode("ascii")


# -- framing and parsing --------------------------------------------------------------------


@dataclass(frozen=True)
class Packet:
    """One framed encapsulation packet."""

    raw: bytes

    @property
    def command(self) -> int:
        return int.from_bytes(self.raw[0:2], "little")

    @property
    def session_handle(self) -> int:
        return int.from_bytes(self.raw[4:8], "little")

    @property
    def status(self) -> int:
        return int.from_bytes(self.raw[8:12], "little")

    @property
    def context(self) -> bytes:
        return self.raw[12:20]

    @property
    def options(self) -> int:
        return int.from_bytes(self.raw[20:24], "little")

    @property
    def data(self) -> bytes:
        return self.raw[HEADER_SIZE:]

    @property
    def name(self) -> str:
        return COMMANDS.get(self.command) or OTHER_COMMANDS.get(self.command) or f"command 0x{self.command:04x}"


def split_packets(data: bytes) -> tuple[list[Packet], bytes]:
    """Frame `data` by the encapsulation length: whole packets, and the bytes after them (an
    incomplete packet or fewer than 24 octets)."""
    out: list[Packet] = []
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        end = pos + HEADER_SIZE + int.from_bytes(data[pos + 2 : pos + 4], "little")
        if end > len(data):
            break
        out.append(Packet(bytes(data[pos:end])))
        pos = end
    return out, bytes(data[pos:])


def answered_packet(frame: bytes) -> Packet | None:
    """The packet of a request frame its reply answers: the last whole one that is answered."""
    packets, _ = split_packets(frame)
    for packet in reversed(packets):
        if packet.command != NOP:
            return packet
    return None


@dataclass(frozen=True)
class Items:
    """Common Packet Format items; `problem` says why the bytes do not divide into them."""

    count: int
    items: tuple[tuple[int, bytes], ...]
    problem: str | None = None


def parse_items(data: bytes) -> Items:
    """Walk a CPF item list (item count, then type id, length, data per item)."""
    if len(data) < 2:
        return Items(0, (), f"item list of {len(data)} bytes has no item_count")
    count = int.from_bytes(data[:2], "little")
    items: list[tuple[int, bytes]] = []
    offset = 2
    while offset < len(data) and len(items) < count:
        try:
            values, offset = CPF_ITEM.decode_prefix(data, offset)
        except DecodeError:
            have = len(data) - offset - 4
            if have < 0:
                return Items(count, tuple(items), f"item {len(items) + 1} header cut after {len(data) - offset} of 4 bytes")
            length = int.from_bytes(data[offset + 2 : offset + 4], "little")
            return Items(count, tuple(items), f"item {len(items) + 1} length={length} but {have} bytes remain")
        items.append((values["type_id"], values["data"]))
    if len(items) < count:
        return Items(count, tuple(items), f"item_count={count} but {len(items)} items follow")
    if offset < len(data):
        return Items(count, tuple(items), f"{len(data) - offset} bytes after the last of item_count={count} items")
    return Items(count, tuple(items))


@dataclass(frozen=True)
class Segment:
    """One EPATH segment: `kind` is port, class, instance, member, connection_point, attribute,
    symbol, key, network, data or service; `value` the id, link, or symbol bytes."""

    kind: str
    value: int | bytes
    code: int
    port: int = 0

    def describe(self) -> str:
        if self.kind == "symbol":
            return f"'{bytes(self.value).decode('latin-1')}'" if isinstance(self.value, bytes) else "symbol"
        if self.kind == "port":
            return f"port {self.port} link {self.value if isinstance(self.value, int) else bytes(self.value).decode('latin-1')}"
        if self.kind == "class" and isinstance(self.value, int) and self.value in CLASSES:
            return f"class {self.value} ({CLASSES[self.value]})"
        return f"{self.kind.replace('_', ' ')} {self.value if isinstance(self.value, int) else bytes(self.value).hex()}"


def parse_epath(path: bytes) -> tuple[list[Segment], list[str]]:
    """Walk a padded EPATH: its segments and every way it departs from the segment rules."""
    segments: list[Segment] = []
    problems: list[str] = []
    i, n = 0, len(path)

    def need(size: int, code: int) -> bool:
        if i + size > n:
            problems.append(f"segment={code} at byte {i} needs {size} bytes but {n - i} remain in the path")
            return False
        return True

    while i < n:
        code = path[i]
        kind = code >> 5
        if kind == 0:  # port segment
            port, extended_link = code & 0x0F, code & 0x10
            size, at = 2, i + 1
            if port == 0:
                problems.append(f"segment={code} at byte {i}: port 0 is reserved")
                return segments, problems
            if port == 15:
                if not need(4, code):
                    return segments, problems
                port = int.from_bytes(path[i + 1 : i + 3], "little")
                at, size = i + 3, 4
            if extended_link:
                if not need(at - i + 1, code):
                    return segments, problems
                link_size = path[at]
                size = at - i + 1 + link_size
                size += size % 2
                if not need(size, code):
                    return segments, problems
                segments.append(Segment("port", path[at + 1 : at + 1 + link_size], code, port))
            else:
                if not need(size, code):
                    return segments, problems
                segments.append(Segment("port", path[at], code, port))
            i += size
        elif kind == 1:  # logical segment
            logical, form = code >> 2 & 7, code & 3
            if form == 3:
                problems.append(f"segment={code} at byte {i} uses the reserved logical format 3")
                return segments, problems
            if logical == 7:
                problems.append(f"segment={code} at byte {i} is a reserved logical type")
                return segments, problems
            if logical == 5:  # special: electronic key (format 0, key format 4, 8 octets)
                if code != 0x34 or not need(10, code):
                    if code != 0x34:
                        problems.append(f"segment={code} at byte {i} is a reserved special logical format")
                    return segments, problems
                segments.append(Segment("key", path[i + 2 : i + 10], code))
                i += 10
                continue
            if logical == 6 and form != 0:
                problems.append(f"segment={code} at byte {i}: a service id segment has an 8-bit format only")
                return segments, problems
            name = "service" if logical == 6 else _LOGICAL_NAMES[logical]
            if form == 2 and name not in ("instance", "connection_point"):
                problems.append(f"segment={code} at byte {i}: the 32-bit format is for instance and connection point ids only")
            size = (2, 4, 6)[form]
            if not need(size, code):
                return segments, problems
            value = path[i + 1] if form == 0 else int.from_bytes(path[i + 2 : i + size], "little")
            segments.append(Segment(name, value, code))
            i += size
        elif kind == 2:  # network segment
            size = 2 + 2 * path[i + 1] if code & 0x10 and i + 1 < n else 2
            if not need(size, code):
                return segments, problems
            segments.append(Segment("network", path[i + 1 : i + size], code))
            i += size
        elif kind == 3:  # symbolic segment (ASCII, length in the low 5 bits)
            length = code & 0x1F
            if length == 0:
                problems.append(f"segment={code} at byte {i}: extended symbolic formats are not interpreted")
                return segments, problems
            size = 1 + length + (1 + length) % 2
            if not need(size, code):
                return segments, problems
            segments.append(Segment("symbol", path[i + 1 : i + 1 + length], code))
            i += size
        elif code == 0x80:  # simple data segment: word count, words
            size = 2 + 2 * path[i + 1] if i + 1 < n else 2
            if not need(size, code):
                return segments, problems
            segments.append(Segment("data", path[i + 2 : i + size], code))
            i += size
        elif code == SYMBOL_SEGMENT:
            if not need(2, code):
                return segments, problems
            length = path[i + 1]
            size = 2 + length + length % 2
            if length == 0:
                problems.append(f"segment={code} at byte {i}: symbol_length=0 names no symbol")
            if not need(size, code):
                return segments, problems
            symbol = path[i + 2 : i + 2 + length]
            if length % 2 and path[i + 2 + length] != 0:
                pass  # a non-zero pad octet is a fault to send, not one a target must refuse
            segments.append(Segment("symbol", symbol, code))
            i += size
        else:
            problems.append(f"segment={code} at byte {i} is not a segment type allowed in a request path")
            return segments, problems
    return segments, problems


def _first(segments: Sequence[Segment], kind: str) -> int | None:
    for segment in segments:
        if segment.kind == kind and isinstance(segment.value, int):
            return segment.value
    return None


def _targets(segments: Sequence[Segment], class_id: int) -> bool:
    """True when the path addresses instance 1 of `class_id` (after any port segments)."""
    logical = [s for s in segments if s.kind != "port"]
    return (len(logical) >= 2 and logical[0].kind == "class" and logical[0].value == class_id
            and logical[1].kind == "instance" and logical[1].value == 1)  # fmt: skip


@dataclass(frozen=True)
class CipRequest:
    """A decoded message router request; `problems` lists every departure from the rules."""

    service: int
    segments: tuple[Segment, ...]
    body: bytes
    problems: tuple[str, ...]
    embedded: CipRequest | None = None  # the request an Unconnected Send carries
    route: tuple[Segment, ...] = ()

    @property
    def symbolic(self) -> bool:
        return any(s.kind == "symbol" for s in self.segments)

    @property
    def to_connection_manager(self) -> bool:
        return _targets(self.segments, CONNECTION_MANAGER_CLASS) and not self.symbolic

    @property
    def unconnected_send(self) -> bool:
        return self.service == UNCONNECTED_SEND and self.to_connection_manager

    @property
    def forward_open(self) -> bool:
        return self.service in (FORWARD_OPEN, LARGE_FORWARD_OPEN) and self.to_connection_manager

    @property
    def final(self) -> CipRequest:
        """The request the last device on the route executes."""
        return self.embedded.final if self.embedded is not None else self

    @property
    def service_name(self) -> str:
        if self.to_connection_manager and self.service in CONNECTION_MANAGER_SERVICES:
            return CONNECTION_MANAGER_SERVICES[self.service]
        return SERVICES.get(self.service, f"service 0x{self.service:02x}")

    def describe(self) -> str:
        if self.unconnected_send and self.embedded is not None:
            via = ", ".join(s.describe() for s in self.route) or "empty route"
            return f"Unconnected Send via {via}: {self.embedded.describe()}"
        path = " ".join(s.describe() for s in self.segments) or "empty path"
        text = f"{self.service_name} {path}"
        if self.service in (READ_TAG, READ_TAG_FRAGMENTED, WRITE_TAG) and len(self.body) >= 2 and not self.to_connection_manager:
            at = 2 if self.service == WRITE_TAG else 0
            if len(self.body) >= at + 2:
                text += f" elements {int.from_bytes(self.body[at : at + 2], 'little')}"
            if self.service == READ_TAG_FRAGMENTED and len(self.body) >= 6:
                text += f" offset {int.from_bytes(self.body[2:6], 'little')}"
        return text + (f" ({self.problems[0]})" if self.problems else "")


def parse_cip_request(data: bytes, depth: int = 0) -> CipRequest:
    """Decode a message router request (and the request an Unconnected Send embeds)."""
    if len(data) < 2:
        return CipRequest(data[0] if data else -1, (), b"", (f"CIP request of {len(data)} bytes has no service and path_size",))
    service, words = data[0], data[1]
    problems: list[str] = []
    if service & 0x80:
        problems.append(f"service={service} has the reply bit set; requests never do")
    end = 2 + 2 * words
    if end > len(data):
        problems.append(f"path_size={words} words but {len(data) - 2} bytes follow the service")
        segments, _ = parse_epath(data[2:])
        return CipRequest(service, tuple(segments), b"", tuple(problems))
    segments, path_problems = parse_epath(data[2:end])
    problems += path_problems
    body = data[end:]
    request = CipRequest(service, tuple(segments), body, ())
    if not segments and not path_problems:
        problems.append("path_size=0: the request names no object")
    base = service & 0x7F
    if base in RESERVED_SERVICES:
        problems.append(f"service={service} is not a defined CIP service")
    embedded: CipRequest | None = None
    route: tuple[Segment, ...] = ()
    if request.unconnected_send:
        embedded, route, more = _parse_unconnected_send(body, depth)
        problems += more
    elif request.forward_open:
        problems += _forward_open_problems(body)
    elif base == GET_ATTRIBUTE_SINGLE or base == GET_ATTRIBUTES_ALL:
        what = SERVICES[base]
        if _first(segments, "class") is None or _first(segments, "instance") is None:
            problems.append(f"service={service} ({what}) path has no class and instance segments")
        elif base == GET_ATTRIBUTE_SINGLE and _first(segments, "attribute") is None:
            problems.append(f"service={service} ({what}) path has no attribute segment")
        if body:
            problems.append(f"{len(body)} bytes of request data after a {what} path, which takes none")
    elif base in (READ_TAG, READ_TAG_FRAGMENTED, WRITE_TAG) and request.symbolic:
        # (object-specific codes: the tag services when they name a tag, unknown otherwise)
        layout = {READ_TAG: READ_TAG_DATA, READ_TAG_FRAGMENTED: READ_FRAGMENTED_DATA, WRITE_TAG: WRITE_TAG_DATA}[base]
        try:
            values = layout.decode(body)
        except DecodeError as exc:
            problems.append(f"{SERVICES[base]} request data: {exc}")
        else:
            problems += layout.violations(values)
    return CipRequest(service, tuple(segments), body, tuple(problems), embedded, route)


READ_TAG_DATA = MessageType("read_tag_data", [_elements()], doc="Read Tag: number of elements")
READ_FRAGMENTED_DATA = MessageType("read_tag_fragmented_data", _read_fragmented_fields(), doc="Read Tag Fragmented: elements, byte offset")
WRITE_TAG_DATA = MessageType("write_tag_data", _write_fields(), constraints=(_write_rule(),), doc="Write Tag: type, elements, data")
UNCONNECTED_SEND_DATA = MessageType(
    "unconnected_send_data",
    [_u("priority_time_tick", 8), _u("timeout_ticks", 8), Length("message_size", 16, "little", covers=("message",)),
     Bytes("message", size_from="message_size")],
    doc="Unconnected Send data up to the embedded message (pad and route path follow)",
)  # fmt: skip


def _parse_unconnected_send(body: bytes, depth: int) -> tuple[CipRequest | None, tuple[Segment, ...], list[str]]:
    problems: list[str] = []
    try:
        values, end = UNCONNECTED_SEND_DATA.decode_prefix(body)
    except DecodeError:
        size = int.from_bytes(body[2:4], "little") if len(body) >= 4 else None
        if size is None:
            return None, (), [f"Unconnected Send data of {len(body)} bytes ends before message_size"]
        return None, (), [f"message_size={size} but {len(body) - 4} bytes follow"]
    tick = values["priority_time_tick"]
    if tick & 0xE0:
        problems.append(f"priority_time_tick={tick} sets reserved bits 5..7")
    message = values["message"]
    end += len(message) % 2  # pad octet after an odd-sized message
    if end + 2 > len(body):
        problems.append(f"Unconnected Send ends after message_size={len(message)}: no route_path_size")
        route_segments: list[Segment] = []
    else:
        words = body[end]
        route = body[end + 2 : end + 2 + 2 * words]
        if len(route) != 2 * words:
            problems.append(f"route_path_size={words} words but {len(body) - end - 2} bytes follow")
        elif end + 2 + 2 * words != len(body):
            problems.append(f"{len(body) - end - 2 - 2 * words} bytes after the route path")
        route_segments, route_problems = parse_epath(route)
        problems += [f"route path: {p}" for p in route_problems]
        if any(s.kind != "port" for s in route_segments):
            problems.append("route path holds segments other than port segments")
    if depth >= 4:
        return None, tuple(route_segments), problems + ["Unconnected Send nested more than 4 deep"]
    embedded = parse_cip_request(message, depth + 1)
    problems += [f"embedded {p}" for p in embedded.problems]
    return embedded, tuple(route_segments), problems


def _forward_open_problems(body: bytes) -> list[str]:
    try:
        values = FORWARD_OPEN_DATA.decode(body)
    except DecodeError as exc:
        return [f"Forward Open data: {exc}"]
    problems = FORWARD_OPEN_DATA.violations(values)
    rule = _forward_open_rule(values)
    if rule:
        problems.append(rule)
    words, path = values["connection_path_size"], values["connection_path"]
    if len(path) != 2 * words:
        problems.append(f"connection_path_size={words} words but {len(path)} bytes follow")
    else:
        segments, path_problems = parse_epath(path)
        problems += [f"connection path: {p}" for p in path_problems]
        if not path_problems and not [s for s in segments if s.kind != "port"]:
            problems.append("connection path names no application object")
    return problems


@dataclass(frozen=True)
class CipReply:
    reply_service: int
    general_status: int
    additional: tuple[int, ...]
    data: bytes

    @property
    def extended(self) -> int | None:
        return self.additional[0] if self.additional else None

    def status_text(self) -> str:
        name = GENERAL_STATUS.get(self.general_status) or (
            "object class or service specific error" if self.general_status >= 0xD0 else "reserved general status")
        text = f"CIP {name} 0x{self.general_status:02x}"
        if self.extended is not None:
            extended = EXTENDED_STATUS.get(self.general_status, {}).get(self.extended)
            text += f" (extended 0x{self.extended:04x}{' ' + extended if extended else ''})"
        return text


def parse_cip_reply(data: bytes) -> CipReply:
    """Raises DecodeError when the bytes are not a message router reply."""
    values = CIP_REPLY.decode(data)
    additional = values["additional_status"]
    words = tuple(int.from_bytes(additional[i : i + 2], "little") for i in range(0, len(additional), 2))
    return CipReply(values["reply_service"], values["general_status"], words, values["reply_data"])


def _item_types(packet: Packet) -> tuple[int, ...]:
    items = parse_items(packet.data[6:]) if len(packet.data) >= 6 else Items(0, ())
    return tuple(t for t, _ in items.items)


def _cip_of(packet: Packet) -> tuple[bytes | None, str | None]:
    """The CIP message a SendRRData/SendUnitData packet carries (after the sequence count of a
    connected data item), or why there is none."""
    data = packet.data
    if len(data) < 6:
        return None, f"{packet.name} data of {len(data)} bytes ends before the item list"
    items = parse_items(data[6:])
    if items.problem:
        return None, items.problem
    for type_id, item in items.items:
        if type_id == UNCONNECTED_DATA:
            return item, None
        if type_id == CONNECTED_DATA:
            if len(item) < 2:
                return None, f"connected data item of {len(item)} bytes has no sequence_count"
            return item[2:], None
    return None, "no connected or unconnected data item"


# -- session --------------------------------------------------------------------------------


class EnipSession(Session):
    """One EtherNet/IP connection: session handle, sender contexts, the Forward Open connection.

    Replies are matched to requests by sender context in `feed`; see the module docstring for
    what `prepare` patches and when it leaves a field alone.
    """

    MAX_IN_FLIGHT = 4096

    def __init__(self, register: bytes, forward_open: bytes) -> None:
        super().__init__()
        self._register = register
        self._forward_open = forward_open
        self.session_handle: int | None = None
        self.connection: tuple[int, int] | None = None  # (O->T, T->O) connection ids
        self.sequence = 0  # the last sequence count sent on the connection
        self.counter = 0  # sender contexts handed out
        self.serial = 0  # connection serials handed out
        # sender context -> True when its reply is the answer to a frame (False: an earlier
        # packet of the same frame, whose reply is dropped); oldest first
        self._in_flight: dict[bytes, bool] = {}
        self._forward_opens: set[bytes] = set()  # contexts of Forward Open requests in flight
        self._held: bytes | None = None  # a frame waiting for the session's own Forward Open
        self._held_context: bytes | None = None
        self._replies: list[bytes] = []

    def opening(self) -> list[bytes]:
        return [self._register]

    def _next_context(self) -> bytes:
        self.counter += 1
        return CONTEXT_PREFIX + (self.counter & 0xFFFFFFFF).to_bytes(4, "little")

    def prepare(self, frame: bytes) -> bytes:
        packets, rest = split_packets(frame)
        if not packets:
            return frame
        if self.connection is None and self._held is None and any(self._wants_connection(p) for p in packets):
            self._held = frame
            patched = self._patch(Packet(self._forward_open), answer=False)
            self._held_context = patched[12:20]
            self._in_flight.pop(self._held_context, None)
            return patched
        last = len(packets) - 1
        while last > 0 and packets[last].command == NOP:
            last -= 1
        return b"".join(self._patch(p, answer=n == last) for n, p in enumerate(packets)) + rest

    @staticmethod
    def _wants_connection(packet: Packet) -> bool:
        raw = packet.raw
        return (packet.command == SEND_UNIT_DATA and packet.context != PRE_SESSION and len(raw) >= 46
                and raw[32:36] == b"\xa1\x00\x04\x00" and raw[36:40] == b"\0\0\0\0")  # fmt: skip

    def _patch(self, packet: Packet, answer: bool) -> bytes:
        raw = bytearray(packet.raw)
        context = packet.context
        if context != PRE_SESSION:
            if context == bytes(8):
                context = self._next_context()
                raw[12:20] = context
            command = packet.command
            if command in SESSION_COMMANDS and packet.session_handle == 0 and self.session_handle is not None:
                raw[4:8] = self.session_handle.to_bytes(4, "little")
            if command == SEND_UNIT_DATA:
                self._patch_connected(raw)
            elif command == SEND_RR_DATA and self._patch_forward_open(raw):
                self._forward_opens.add(context)
        if packet.command != NOP:
            self._in_flight.pop(context, None)
            self._in_flight[context] = answer
            while len(self._in_flight) > self.MAX_IN_FLIGHT:
                del self._in_flight[next(iter(self._in_flight))]
        return bytes(raw)

    def _patch_connected(self, raw: bytearray) -> None:
        """Connection id 0 -> the session's O->T id; the sequence count field is an offset."""
        if len(raw) < 46 or raw[32:36] != b"\xa1\x00\x04\x00" or raw[40:42] != b"\xb1\x00":
            return
        if raw[36:40] != b"\0\0\0\0" or self.connection is None:
            return
        raw[36:40] = self.connection[0].to_bytes(4, "little")
        self.sequence = (self.sequence + 1 + int.from_bytes(raw[44:46], "little")) & 0xFFFF
        raw[44:46] = self.sequence.to_bytes(2, "little")

    def _patch_forward_open(self, raw: bytearray) -> bool:
        """A Forward Open to the Connection Manager (class 6 instance 1, 8-bit path) in the
        standard layout: connection serial 0 -> a fresh one, T->O id 0 -> one derived from it."""
        # null address item, unconnected data item, then the request at octet 40: service,
        # path size 2, class 6, instance 1; the T->O id at 52, the connection serial at 56
        if len(raw) < 58 or raw[32:38] != b"\0\0\0\0\xb2\x00" or raw[40] not in (FORWARD_OPEN, LARGE_FORWARD_OPEN):
            return False
        if raw[41:46] != b"\x02\x20\x06\x24\x01":
            return False
        if raw[56:58] == b"\0\0":
            self.serial = self.serial % 0xFFFF + 1
            raw[56:58] = self.serial.to_bytes(2, "little")
        if raw[52:56] == b"\0\0\0\0":
            raw[52:56] = (0x4F540000 | int.from_bytes(raw[56:58], "little")).to_bytes(4, "little")
        return True

    def feed(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= HEADER_SIZE:
            length = int.from_bytes(buf[2:4], "little")
            if length > MAX_DATA:
                # No length to frame by: hand everything over so the classifier reports it.
                self._replies.append(bytes(buf))
                buf.clear()
                return
            end = HEADER_SIZE + length
            if len(buf) < end:
                return
            packet = Packet(bytes(buf[:end]))
            del buf[:end]
            self._receive(packet)

    def next_reply(self) -> bytes | None:
        return self._replies.pop(0) if self._replies else None

    def _receive(self, packet: Packet) -> None:
        context = packet.context
        if packet.command == REGISTER_SESSION and packet.status == 0 and packet.session_handle:
            self.session_handle = packet.session_handle
        if context == self._held_context and context is not None:
            self._held_context = None
            self._forward_opens.discard(context)
            held, self._held = self._held, None
            if self._learn_connection(packet) and held is not None:
                self._output += self.prepare(held)
            else:
                self._replies.append(packet.raw)  # the refused Forward Open answers the held frame
            return
        if context in self._forward_opens:
            self._forward_opens.discard(context)
            self._learn_connection(packet)
        answer = self._in_flight.get(context)
        if answer is not None:
            for key in list(self._in_flight):  # this one, and any older one the target skipped
                del self._in_flight[key]
                if key == context:
                    break
            if answer:
                self._replies.append(packet.raw)
            return
        if context.startswith(CONTEXT_PREFIX) and 0 < int.from_bytes(context[4:], "little") <= self.counter:
            return  # a late answer to a request already answered or given up on
        self._replies.append(packet.raw)  # not a context of ours: the classifier reports it

    def _learn_connection(self, packet: Packet) -> bool:
        if packet.command != SEND_RR_DATA or packet.status:
            return False
        cip, _ = _cip_of(packet)
        if cip is None:
            return False
        try:
            reply = parse_cip_reply(cip)
            values = FORWARD_OPEN_REPLY.decode(reply.data) if reply.general_status == 0 else None
        except DecodeError:
            return False
        if values is None or reply.reply_service not in (FORWARD_OPEN | 0x80, LARGE_FORWARD_OPEN | 0x80):
            return False
        self.connection = (values["ot_connection_id"], values["to_connection_id"])
        self.sequence = 0
        return True


# -- the protocol ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """A template: its message, values, flags and the operation code policies name."""

    name: str
    message: MessageType
    code: int
    values: Mapping[str, Any]
    writes: bool = False


class EtherNetIP(Protocol):
    """EtherNet/IP encapsulation and CIP explicit messaging against an EtherNet/IP target."""

    name = "enip"
    schemes = ("enip",)
    default_port = 44818
    options_spec = {
        "route": OptionSpec("", "route path of the Unconnected Send and Forward Open templates: port/link hops, e.g. 1/0 "
                                "(backplane port 1, slot 0) or 1/0,2/3; empty: none"),
        "tag": OptionSpec("SCADA", f"tag the Read/Write Tag templates address (1..{MAX_TAG_LENGTH} letters, digits or _)"),
    }  # fmt: skip
    liveness_note = ("Get_Attribute_Single of the Identity object's vendor id (SendRRData after RegisterSession) "
                     "on its own connection answered with CIP status 0 within the deadline")  # fmt: skip
    probe_hint = ("check that the target is an EtherNet/IP device that accepts RegisterSession and answers the "
                  "Identity object (class 1, instance 1) directly, without a route path")  # fmt: skip

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        super().__init__(options, path)
        self.route = _parse_route(self.options["route"])
        self.tag = _check_tag(self.options["tag"])
        self._kinds = self._declare()
        self._templates = tuple(
            Template(k.name, k.message, k.values, writes=k.writes, code=k.code) for k in self._kinds
        )
        self._by_name = {t.name: t for t in self._templates}
        self._probe = Probe(self._by_name["get_attribute_single_identity"].encode(attribute_id=1),
                            "Get_Attribute_Single of Identity instance 1 attribute 1 (vendor id)")
        self._register = self._by_name["register_session"].encode()
        self._forward_open = self._by_name["forward_open"].encode()
        self._identify = self._by_name["list_identity"].encode()

    def _declare(self) -> tuple[_Kind, ...]:
        tag, route = self.tag, self.route
        p = "embedded_"
        c = "connection_"
        connection_path = _port_segments(route, c) + _logical("class", MESSAGE_ROUTER_CLASS, prefix=c) + _logical("instance", 1, prefix=c)
        cm_path = _logical("class", CONNECTION_MANAGER_CLASS) + _logical("instance", 1)
        kinds = [
            _Kind("register_session", _encapsulation_only("register_session", REGISTER_SESSION, REGISTER_DATA.fields,
                                                          "opens the session; the reply carries its handle"), REGISTER_SESSION, {}),
            _Kind("unregister_session", _encapsulation_only("unregister_session", UNREGISTER_SESSION,
                                                            doc="closes the session: never answered, the target closes the connection"),
                  UNREGISTER_SESSION, {}),
            _Kind("list_identity", _encapsulation_only("list_identity", LIST_IDENTITY, doc="identity item, no session needed"), LIST_IDENTITY, {}),
            _Kind("list_services", _encapsulation_only("list_services", LIST_SERVICES, doc="communications service item"), LIST_SERVICES, {}),
            _Kind("list_interfaces", _encapsulation_only("list_interfaces", LIST_INTERFACES, doc="non-CIP interfaces"), LIST_INTERFACES, {}),
            _Kind("get_attribute_all_identity", _send_rr_data("get_attribute_all_identity", _cip(GET_ATTRIBUTES_ALL, _identity_path(None)),
                                                              doc="Get_Attributes_All of Identity instance 1"), GET_ATTRIBUTES_ALL, {}),
            _Kind("get_attribute_single_identity", _send_rr_data("get_attribute_single_identity", _cip(GET_ATTRIBUTE_SINGLE, _identity_path(7)),
                                                                 doc="Get_Attribute_Single of Identity instance 1, 8-bit logical segments"),
                  GET_ATTRIBUTE_SINGLE, {}),
            _Kind("get_attribute_single_identity_16bit",
                  _send_rr_data("get_attribute_single_identity_16bit", _cip(GET_ATTRIBUTE_SINGLE, _identity_path(1, 16)),
                                doc="Get_Attribute_Single of Identity vendor id, 16-bit logical segments"), GET_ATTRIBUTE_SINGLE, {}),
            _Kind("read_tag", _send_rr_data("read_tag", _cip(READ_TAG, _symbolic(tag), [_elements()]), doc="Read Tag by symbol"),
                  READ_TAG, {}),
            _Kind("read_tag_element", _send_rr_data("read_tag_element", _cip(READ_TAG, _symbolic(tag) + _logical("member", 1), [_elements()]),
                                                    doc="Read Tag of element 1 (symbol + 8-bit member segment)"), READ_TAG, {}),
            _Kind("read_tag_fragmented", _send_rr_data("read_tag_fragmented", _cip(READ_TAG_FRAGMENTED, _symbolic(tag), _read_fragmented_fields()),
                                                       doc="Read Tag Fragmented sent to the message router directly"),
                  READ_TAG_FRAGMENTED, {}),
            _Kind("write_tag", _send_rr_data("write_tag", _cip(WRITE_TAG, _symbolic(tag), _write_fields(size=2)), [_write_rule()],
                                             doc="Write Tag: one INT to element 0"), WRITE_TAG, {}, writes=True),
            _Kind("unconnected_send_get_attribute_all",
                  _send_rr_data("unconnected_send_get_attribute_all",
                                _unconnected_send(_cip(GET_ATTRIBUTES_ALL, _identity_path(None, prefix=p), prefix=p), route),
                                doc="Get_Attributes_All of Identity through Unconnected Send with the route path"),
                  GET_ATTRIBUTES_ALL, {}),
            _Kind("unconnected_send_read_tag",
                  _send_rr_data("unconnected_send_read_tag",
                                _unconnected_send(_cip(READ_TAG, _symbolic(tag, p), [_elements(p)], p), route)), READ_TAG, {}),
            _Kind("unconnected_send_read_tag_fragmented",
                  _send_rr_data("unconnected_send_read_tag_fragmented",
                                _unconnected_send(_cip(READ_TAG_FRAGMENTED, _symbolic(tag, p), _read_fragmented_fields(p), p), route)),
                  READ_TAG_FRAGMENTED, {}),
            _Kind("unconnected_send_write_tag",
                  _send_rr_data("unconnected_send_write_tag", _unconnected_send(_cip(WRITE_TAG, _symbolic(tag, p), _write_fields(p, 2), p), route),
                                [_write_rule(p)]), WRITE_TAG, {}, writes=True),
            _Kind("forward_open", _send_rr_data("forward_open", _cip(FORWARD_OPEN, cm_path, _forward_open_fields(connection_path)),
                                                [_forward_open_rule], doc="Forward Open of a class 3 connection to the message router"),
                  FORWARD_OPEN, {}),
            _Kind("connected_get_attribute_single",
                  _send_unit_data("connected_get_attribute_single", _cip(GET_ATTRIBUTE_SINGLE, _identity_path(1)),
                                  doc="Get_Attribute_Single on the session's Forward Open connection"), GET_ATTRIBUTE_SINGLE, {}),
            _Kind("connected_read_tag", _send_unit_data("connected_read_tag", _cip(READ_TAG, _symbolic(tag), [_elements()]),
                                                        doc="Read Tag on the session's Forward Open connection"), READ_TAG, {}),
        ]  # fmt: skip
        return tuple(kinds)

    # -- what to send -----------------------------------------------------------------------

    def templates(self) -> Sequence[Template]:
        return self._templates

    def message_types(self) -> Sequence[MessageType]:
        return tuple(k.message for k in self._kinds)

    def probe(self) -> Probe:
        return self._probe

    def probe_ok(self, reply: bytes) -> bool:
        return self.classify(self._probe.frame, reply).kind is ReplyKind.NORMAL

    def session(self) -> Session:
        return EnipSession(self._register, self._forward_open)

    def identify(self) -> list[bytes]:
        return [self._identify]

    def parse_identity(self, reply: bytes) -> dict[str, str]:
        """Vendor, device type, product name and code, revision and serial from ListIdentity."""
        values = self._identity_item(reply)
        if values is None:
            return {}
        vendor, device = values["vendor_id"], values["device_type"]
        return {
            "vendor": f"{vendor} ({VENDORS[vendor]})" if vendor in VENDORS else str(vendor),
            "device_type": f"{device} ({DEVICE_TYPES[device]})" if device in DEVICE_TYPES else str(device),
            "product": values["product_name"].decode("latin-1"),
            "product_code": str(values["product_code"]),
            "revision": f"{values['revision_major']}.{values['revision_minor']}",
            "serial": f"0x{values['serial_number']:08x}",
        }

    @staticmethod
    def _identity_item(reply: bytes) -> dict[str, Any] | None:
        packets, _ = split_packets(reply)
        if len(packets) != 1 or packets[0].command != LIST_IDENTITY or packets[0].status:
            return None
        items = parse_items(packets[0].data)
        for type_id, data in items.items:
            if type_id == IDENTITY_ITEM:
                try:
                    return IDENTITY_REPLY.decode(data)
                except DecodeError:
                    return None
        return None

    def stress_flood(self) -> tuple[bytes, str] | None:
        """ListIdentity: answered by every target, session or not (ListServices would be
        cheaper, but cpppo answers it with a 15-octet service name)."""
        return self._identify, "ListIdentity"

    def sync_request(self) -> bytes | None:
        """ListIdentity with its own sender context: its answer echoes that context."""
        return self._by_name["list_identity"].encode(sender_context=SYNC_CONTEXT)

    def is_sync_reply(self, reply: bytes) -> bool:
        return len(reply) >= HEADER_SIZE and reply[12:20] == SYNC_CONTEXT

    def needs_opening(self, frame: bytes) -> bool:
        """A frame whose first packet carries the PRE_SESSION sender context tests the state
        before RegisterSession: it goes out on a fresh connection without one."""
        return not (len(frame) >= HEADER_SIZE and frame[12:20] == PRE_SESSION)

    def expects_reply(self, frame: bytes) -> bool:
        """Always wait, also for NOP (never answered) and UnRegisterSession (answered by a close):
        a target may close the connection after either (cpppo closes it after every NOP), and
        a case sent on right after would be blamed for that close."""
        return True

    def frame_length(self, frame: bytes) -> int | None:
        if len(frame) < 4:
            return None
        return HEADER_SIZE + int.from_bytes(frame[2:4], "little")

    def repair(self, frame: bytes) -> bytes:
        """One packet whose encapsulation length, and the length of its last CPF item, agree
        with the bytes present: a mutated CIP request then reaches the message router."""
        if len(frame) < HEADER_SIZE or len(frame) - HEADER_SIZE > MAX_DATA:
            return frame
        out = bytearray(frame)
        out[2:4] = (len(frame) - HEADER_SIZE).to_bytes(2, "little")
        if int.from_bytes(out[0:2], "little") in (SEND_RR_DATA, SEND_UNIT_DATA) and len(out) >= HEADER_SIZE + 8:
            count = int.from_bytes(out[30:32], "little")
            offset = HEADER_SIZE + 8
            for n in range(min(count, 8)):
                if offset + 4 > len(out):
                    break
                length = int.from_bytes(out[offset + 2 : offset + 4], "little")
                if n == count - 1 or offset + 4 + length > len(out):
                    out[offset + 2 : offset + 4] = min(len(out) - offset - 4, 0xFFFF).to_bytes(2, "little")
                    break
                offset += 4 + length
        return bytes(out)

    # -- faults -----------------------------------------------------------------------------

    def structural_faults(self, template: Template) -> tuple[tuple[str, bytes], ...]:
        """Faults on every layer of one template: encapsulation, CPF, CIP path and data, and the
        session state (handle, connection, order of commands)."""
        frame = template.encode()
        length = int.from_bytes(frame[2:4], "little")
        command = int.from_bytes(frame[0:2], "little")
        values = template.message.decode(frame)
        names = {f.name for f in template.message.fields}

        def with_data(data: bytes) -> bytes:
            return frame[:2] + len(data).to_bytes(2, "little") + frame[4:HEADER_SIZE] + data

        faults: list[tuple[str, bytes]] = [
            ("encapsulation length one short of the data", template.encode(length=length - 1)),
            ("encapsulation length one longer than the data (target must wait or reject)", template.encode(length=length + 1)),
            ("encapsulation length 0 with the data present", template.encode(length=0)),
            ("encapsulation length 0xFFFF, the data much shorter", template.encode(length=0xFFFF)),
            ("header cut to 23 of 24 bytes", frame[: HEADER_SIZE - 1]),
            ("undefined command 0x00FF", template.encode(command=0x00FF)),
            ("command 0xFFFF", template.encode(command=0xFFFF)),
            ("legacy command 0x0001", template.encode(command=0x0001)),
            ("non-zero status in a request", template.encode(status=1)),
            ("non-zero options", template.encode(options=1)),
            ("one extra byte of data" + (", length adjusted" if length else " (the command takes none)"),
             with_data(frame[HEADER_SIZE:] + b"\x00")),
        ]  # fmt: skip
        if length:
            faults.append(("the request twice in one segment, the second one length 1 short", frame + template.encode(length=length - 1)))
        if command in SESSION_COMMANDS:
            faults += [
                (f"{COMMANDS[command]} before RegisterSession on a fresh connection", template.encode(sender_context=PRE_SESSION)),
                ("session handle never registered", template.encode(session_handle=NEVER_REGISTERED)),
                ("session handle 0xFFFFFFFF", template.encode(session_handle=0xFFFFFFFF)),
            ]
            if command != UNREGISTER_SESSION:
                faults.append((f"{COMMANDS[command]} after UnRegisterSession on the same connection",
                               self._by_name["unregister_session"].encode() + frame))
        if command in (SEND_RR_DATA, SEND_UNIT_DATA):
            faults += self._cpf_faults(template, values, with_data, frame)
            faults += self._cip_faults(template, values, names)
        if command == SEND_UNIT_DATA:
            faults += [
                ("connection id never opened by a Forward Open", template.encode(connection_id=NEVER_OPENED)),
                ("sequence count repeated (duplicate of the previous request)", template.encode(sequence_count=0xFFFF)),
            ]
        if command == REGISTER_SESSION:
            faults += [
                ("RegisterSession with protocol version 2 (unsupported)", template.encode(protocol_version=2)),
                ("RegisterSession with protocol version 0", template.encode(protocol_version=0)),
                ("RegisterSession with non-zero option flags", template.encode(option_flags=1)),
                ("RegisterSession with its data cut to 2 bytes", with_data(frame[HEADER_SIZE : HEADER_SIZE + 2])),
                ("RegisterSession twice on one connection", frame + frame),
                ("RegisterSession with a non-zero session handle", template.encode(session_handle=NEVER_REGISTERED)),
            ]
        if command in (LIST_IDENTITY, LIST_SERVICES, LIST_INTERFACES):
            faults.append((f"{COMMANDS[command]} with 4 bytes of data it does not take", with_data(b"\x00" * 4)))
        if template is self._templates[0]:
            # packets that need no template: emitted once, with the first one
            faults += [
                ("NOP carrying 16 bytes, then the request", NOP_PACKET.encode(length=16) + bytes(16) + frame),
                ("UnRegisterSession, then RegisterSession again", self._by_name["unregister_session"].encode() + frame),
            ]
        return distinct_faults(frame, faults)

    @staticmethod
    def _cpf_faults(template: Template, values: Mapping[str, Any], with_data: Callable[[bytes], bytes],
                    frame: bytes) -> list[tuple[str, bytes]]:
        data = frame[HEADER_SIZE:]
        address, payload = values["address_item_type"], values["data_item_type"]
        return [
            ("CPF item count 0", template.encode(item_count=0)),
            ("CPF item count 1 with two items present", template.encode(item_count=1)),
            ("CPF item count 3 with two items present", template.encode(item_count=3)),
            ("CPF item count 0xFFFF", template.encode(item_count=0xFFFF)),
            ("data item length one longer than the bytes present", template.encode(data_item_length=values["data_item_length"] + 1)),
            ("data item length one short of the request", template.encode(data_item_length=values["data_item_length"] - 1)),
            ("data item length 0", template.encode(data_item_length=0)),
            ("address item length 4, nothing added", template.encode(address_item_length=values["address_item_length"] + 4)),
            ("address and data item types swapped", template.encode(address_item_type=payload, data_item_type=address)),
            ("connected data item type in an unconnected request and vice versa",
             template.encode(data_item_type=CONNECTED_DATA if payload == UNCONNECTED_DATA else UNCONNECTED_DATA)),
            ("non-zero interface handle (not CIP)", template.encode(interface_handle=1)),
            ("a third, unknown item 0x7777 after the data item, count 3",
             with_data(data[:6] + (3).to_bytes(2, "little") + data[8:] + b"\x77\x77\x00\x00")),
            ("CPF cut after the item count, length adjusted", with_data(data[:8])),
        ]

    def _cip_faults(self, template: Template, values: Mapping[str, Any], names: set[str]) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        for p in ("", "embedded_"):
            if f"{p}path_size" not in names:
                continue
            where = "embedded " if p else ""
            size = values[f"{p}path_size"]
            out += [
                (f"{where}path size one word larger than the path", template.encode(**{f"{p}path_size": size + 1})),
                (f"{where}path size one word smaller than the path", template.encode(**{f"{p}path_size": size - 1})),
                (f"{where}path size 0", template.encode(**{f"{p}path_size": 0})),
                (f"{where}path size 0xFF", template.encode(**{f"{p}path_size": 0xFF})),
                (f"{where}undefined service 0x7F", template.encode(**{f"{p}service": 0x7F})),
                (f"{where}service with the reply bit set", template.encode(**{f"{p}service": values[f"{p}service"] | 0x80})),
                (f"{where}reserved service 0x00", template.encode(**{f"{p}service": 0x00})),
            ]
            if f"{p}class_segment" in names:
                out += [
                    (f"{where}class segment in the reserved logical format 3", template.encode(**{f"{p}class_segment": 0x23})),
                    (f"{where}reserved segment type 0xE0 in place of the class segment", template.encode(**{f"{p}class_segment": 0xE0})),
                    (f"{where}class segment says 16-bit, the path holds 8-bit ids", template.encode(**{f"{p}class_segment": 0x21})),
                    (f"{where}32-bit class segment (not allowed for class ids)", template.encode(**{f"{p}class_segment": 0x22})),
                    (f"{where}unknown class 0x99", template.encode(**{f"{p}class_id": 0x99})),
                    (f"{where}instance 0 (the class itself)", template.encode(**{f"{p}instance_id": 0})),
                    (f"{where}instance 0xFF that does not exist", template.encode(**{f"{p}instance_id": 0xFF})),
                ]
            if f"{p}attribute_segment" in names:
                out += [
                    (f"{where}attribute 0xFF that does not exist", template.encode(**{f"{p}attribute_id": 0xFF})),
                    (f"{where}attribute segment replaced by a second instance segment",
                     template.encode(**{f"{p}attribute_segment": values[f"{p}instance_segment"]})),
                ]
            if f"{p}symbol_segment" in names:
                symbol = values[f"{p}symbol"]
                out += [
                    (f"{where}symbol length one larger than the symbol", template.encode(**{f"{p}symbol_length": len(symbol) + 1})),
                    (f"{where}symbol length 0", template.encode(**{f"{p}symbol_length": 0})),
                    (f"{where}symbol length 0xFF", template.encode(**{f"{p}symbol_length": 0xFF})),
                    (f"{where}symbol of a tag that does not exist", template.encode(**{f"{p}symbol": b"NO_SUCH_TAG"[: len(symbol)].ljust(len(symbol), b"_")})),
                    (f"{where}symbolic segment type 0x60+length instead of 0x91", template.encode(**{f"{p}symbol_segment": 0x60 | min(len(symbol), 31)})),
                    (f"{where}symbol with a NUL and non-ASCII bytes", template.encode(**{f"{p}symbol": (b"\x00\xff" + symbol)[: len(symbol)]})),
                ]
            if f"{p}elements" in names:
                out += [
                    (f"{where}elements 0", template.encode(**{f"{p}elements": 0})),
                    (f"{where}elements 0xFFFF " + ("with data for 1" if f"{p}data" in names else "(past the end of any tag)"),
                     template.encode(**{f"{p}elements": 0xFFFF})),
                ]
            if f"{p}byte_offset" in names:
                out += [
                    (f"{where}fragmented read starting past the end of the tag", template.encode(**{f"{p}byte_offset": 0x10000})),
                    (f"{where}fragmented read at offset 0xFFFFFFFE", template.encode(**{f"{p}byte_offset": 0xFFFFFFFE})),
                    (f"{where}fragmented read at an odd offset inside an element", template.encode(**{f"{p}byte_offset": 1})),
                ]
            if f"{p}data_type" in names and f"{p}data" in names:
                out += [
                    (f"{where}write: data type DINT for INT data", template.encode(**{f"{p}data_type": 0xC4})),
                    (f"{where}write: undefined data type 0x00FF", template.encode(**{f"{p}data_type": 0x00FF})),
                    (f"{where}write: 2 elements, data for 1", template.encode(**{f"{p}elements": 2})),
                    (f"{where}write: data one byte short", template.encode(**{f"{p}data": values[f"{p}data"][:-1]})),
                ]
        if "message_size" in names:
            size = values["message_size"]
            out += [
                ("Unconnected Send message size one larger than the message", template.encode(message_size=size + 1)),
                ("Unconnected Send message size one smaller than the message", template.encode(message_size=size - 1)),
                ("Unconnected Send message size 0xFFFF", template.encode(message_size=0xFFFF)),
                ("Unconnected Send route path size one word larger than the route", template.encode(route_path_size=values["route_path_size"] + 1)),
                ("Unconnected Send route path size 0xFF", template.encode(route_path_size=0xFF)),
                ("Unconnected Send reserved priority bits set", template.encode(priority_time_tick=0xEA)),
            ]
            if self.route:
                out.append(("Unconnected Send route through port 0 (reserved)", template.encode(route_port_1=0)))
        if "timeout_multiplier" in names:
            out += [
                ("Forward Open timeout multiplier 8 (reserved)", template.encode(timeout_multiplier=8)),
                ("Forward Open connection type 3 (reserved)", template.encode(ot_parameters=0x63F4)),
                ("Forward Open O->T RPI 0", template.encode(ot_rpi=0)),
                ("Forward Open connection size 0", template.encode(ot_parameters=0x4200, to_parameters=0x4200)),
                ("Forward Open reserved transport class 7", template.encode(transport_trigger=0xA7)),
                ("Forward Open reserved production trigger", template.encode(transport_trigger=0xF3)),
                ("Forward Open connection path size one word larger", template.encode(connection_path_size=values["connection_path_size"] + 1)),
                ("Forward Open connection path size 0", template.encode(connection_path_size=0)),
                ("Forward Open repeated with the same connection serial", template.encode(connection_serial=0x1234) * 2),
            ]
        return out

    # -- what came back ---------------------------------------------------------------------

    def check_request(self, frame: bytes) -> list[str]:
        packets, rest = split_packets(frame)
        if not packets:
            if len(rest) < HEADER_SIZE:
                return [f"{len(rest)} bytes do not hold the 24-byte encapsulation header"]
            length = int.from_bytes(rest[2:4], "little")
            return [f"length={length} but {len(rest) - HEADER_SIZE} bytes follow the header"]
        asked = answered_packet(frame) or packets[-1]
        # Packets before the answered one are judged only for what they do to the session: a
        # conforming target answers them on their own, and those answers are not this reply.
        before = packets[: packets.index(asked)]
        problems = self._check_packet(asked)
        if asked.command in SESSION_COMMANDS and any(p.command == UNREGISTER_SESSION for p in before):
            problems.append(f"command={asked.command} ({asked.name}) after UnRegisterSession: the session is closed")
        return problems

    def _check_packet(self, packet: Packet) -> list[str]:
        problems: list[str] = []
        command = packet.command
        if packet.status:
            problems.append(f"status={packet.status} must be 0 in a request")
        if packet.options:
            problems.append(f"options={packet.options} must be 0")
        if command not in COMMANDS:
            problems.append(f"command={command} is not an encapsulation command a target serves")
            return problems
        if command in SESSION_COMMANDS:
            if packet.context == PRE_SESSION:
                problems.append(f"session_handle={packet.session_handle} sent before RegisterSession on this connection")
            elif packet.session_handle:
                problems.append(f"session_handle={packet.session_handle} was never registered on this connection")
        data = packet.data
        if command == REGISTER_SESSION:
            try:
                problems += REGISTER_DATA.violations(REGISTER_DATA.decode(data))
            except DecodeError:
                problems.append(f"length={len(data)} but RegisterSession data is 4 bytes")
        elif command in (SEND_RR_DATA, SEND_UNIT_DATA):
            problems += self._check_cpf(packet)
        elif command in (LIST_IDENTITY, LIST_SERVICES, LIST_INTERFACES) and data:
            problems.append(f"length={len(data)} but {COMMANDS[command]} carries no data")
        return problems

    def _check_cpf(self, packet: Packet) -> list[str]:
        data = packet.data
        try:
            head, _ = CPF_HEAD.decode_prefix(data)
        except DecodeError:
            return [f"length={len(data)} is too short for the interface handle, timeout and item count (8 bytes)"]
        problems = CPF_HEAD.violations(head)
        if head["interface_handle"]:
            problems = [f"interface_handle={head['interface_handle']} is not 0 (CIP)"]
        items = parse_items(data[6:])
        if items.problem:
            return problems + [items.problem]
        connected = packet.command == SEND_UNIT_DATA
        want = (CONNECTED_ADDRESS, CONNECTED_DATA) if connected else (NULL_ADDRESS, UNCONNECTED_DATA)
        types = tuple(t for t, _ in items.items)
        if types != want:
            shown = ", ".join(f"{t}" for t in types) or "none"
            return problems + [f"item_count={items.count} with item types {shown}: {packet.name} carries "
                               f"{ITEM_TYPES[want[0]]} ({want[0]}) then {ITEM_TYPES[want[1]]} ({want[1]})"]
        address, payload = items.items[0][1], items.items[1][1]
        if connected:
            if len(address) != 4:
                return problems + [f"connected address item length={len(address)}, not 4"]
            connection = int.from_bytes(address, "little")
            if packet.context == PRE_SESSION:
                pass  # no Forward Open can precede RegisterSession: reported with the handle
            elif connection:
                problems.append(f"connection_id={connection} was never opened by a Forward Open on this session")
            if len(payload) < 2:
                return problems + [f"connected data item length={len(payload)} has no sequence_count"]
            payload = payload[2:]
        elif address:
            problems.append(f"null address item length={len(address)}, not 0")
        request = parse_cip_request(payload)
        return problems + list(request.problems)

    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        n = len(reply)
        if n < HEADER_SIZE:
            return ReplyVerdict(ReplyKind.MALFORMED, f"reply of {n} bytes is shorter than the 24-byte encapsulation header")
        packet = Packet(reply)
        length = int.from_bytes(reply[2:4], "little")
        if length != n - HEADER_SIZE:
            return ReplyVerdict(ReplyKind.MALFORMED, f"reply length={length} but {n - HEADER_SIZE} bytes follow the header")
        asked = answered_packet(request)
        if asked is not None:
            if asked.command == SEND_UNIT_DATA and packet.command == SEND_RR_DATA:
                return self._refused_forward_open(packet)
            if packet.command != asked.command:
                return ReplyVerdict(ReplyKind.MALFORMED, f"{packet.name} reply to a {asked.name} request")
            context = asked.context
            if context != bytes(8) and packet.context != context:
                return ReplyVerdict(ReplyKind.MALFORMED, f"sender context {packet.context.hex()} does not echo the request's {context.hex()}")
        if packet.status:
            name = ENCAP_STATUS.get(packet.status, "undefined encapsulation status")
            return ReplyVerdict(ReplyKind.EXCEPTION, f"{packet.name}: {name} 0x{packet.status:04x}")
        if packet.options and (asked is None or packet.options != asked.options):
            # (a target that echoes the options of a request it should have discarded is judged
            # by check_request: the answer itself is a spec violation, not a malformed reply)
            return ReplyVerdict(ReplyKind.MALFORMED, f"{packet.name} reply with options={packet.options}, not 0")
        command = packet.command
        if command == REGISTER_SESSION:
            try:
                values = REGISTER_DATA.decode(packet.data)
            except DecodeError as exc:
                return ReplyVerdict(ReplyKind.MALFORMED, f"RegisterSession reply: {exc}")
            if not packet.session_handle:
                return ReplyVerdict(ReplyKind.MALFORMED, "RegisterSession reply with status 0 carries session handle 0")
            return ReplyVerdict(ReplyKind.NORMAL, f"session registered (protocol version {values['protocol_version']})")
        if command == UNREGISTER_SESSION:
            return ReplyVerdict(ReplyKind.MALFORMED, "UnRegisterSession is never answered")
        if command == NOP:
            return ReplyVerdict(ReplyKind.MALFORMED, "NOP is never answered")
        if command in (LIST_IDENTITY, LIST_SERVICES, LIST_INTERFACES):
            return self._classify_list(packet)
        if command in (SEND_RR_DATA, SEND_UNIT_DATA):
            return self._classify_cip(asked, packet)
        if asked is not None and command == asked.command:
            return ReplyVerdict(ReplyKind.NORMAL, f"{packet.name} answered with status 0")
        return ReplyVerdict(ReplyKind.MALFORMED, f"reply with {packet.name}")

    @staticmethod
    def _refused_forward_open(packet: Packet) -> ReplyVerdict:
        """The session's own Forward Open, sent for a connected request, did not succeed."""
        cip, problem = _cip_of(packet)
        if packet.status:
            return ReplyVerdict(ReplyKind.EXCEPTION, f"Forward Open for the connected request: "
                                f"{ENCAP_STATUS.get(packet.status, 'undefined encapsulation status')} 0x{packet.status:04x}")
        try:
            reply = parse_cip_reply(cip or b"")
        except DecodeError:
            return ReplyVerdict(ReplyKind.MALFORMED, f"SendRRData reply to a connected request: {problem or 'no CIP reply'}")
        if reply.reply_service in (FORWARD_OPEN | 0x80, LARGE_FORWARD_OPEN | 0x80) and reply.general_status:
            return ReplyVerdict(ReplyKind.EXCEPTION, f"Forward Open for the connected request refused: {reply.status_text()}")
        return ReplyVerdict(ReplyKind.MALFORMED, "SendRRData reply to a SendUnitData request")

    def _classify_list(self, packet: Packet) -> ReplyVerdict:
        items = parse_items(packet.data)
        if items.problem:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{packet.name} reply: {items.problem}")
        if packet.command == LIST_INTERFACES:
            return ReplyVerdict(ReplyKind.NORMAL, f"{items.count} interface items")
        want, layout = (IDENTITY_ITEM, IDENTITY_REPLY) if packet.command == LIST_IDENTITY else (SERVICES_ITEM, SERVICE_REPLY)
        found = [data for type_id, data in items.items if type_id == want]
        if not found:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{packet.name} reply has no {ITEM_TYPES[want]} item")
        try:
            values = layout.decode(found[0])
        except DecodeError as exc:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{packet.name} item: {exc}")
        if packet.command == LIST_IDENTITY:
            name = values["product_name"].decode("latin-1")
            return ReplyVerdict(ReplyKind.NORMAL, f"identity vendor {values['vendor_id']} product '{name}' "
                                f"revision {values['revision_major']}.{values['revision_minor']}")
        return ReplyVerdict(ReplyKind.NORMAL, f"service '{values['service_name'].rstrip(bytes(1)).decode('latin-1')}'")

    def _classify_cip(self, asked: Packet | None, packet: Packet) -> ReplyVerdict:
        data = packet.data
        if len(data) < 6:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{packet.name} reply of {len(data)} data bytes has no item list")
        items = parse_items(data[6:])
        if items.problem:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{packet.name} reply: {items.problem}")
        connected = packet.command == SEND_UNIT_DATA
        want = (CONNECTED_ADDRESS, CONNECTED_DATA) if connected else (NULL_ADDRESS, UNCONNECTED_DATA)
        types = tuple(t for t, _ in items.items)
        if types != want and (asked is None or types != _item_types(asked) or len(types) != 2):
            # (item types that mirror a wrong request's are the request's fault, not the reply's)
            return ReplyVerdict(ReplyKind.MALFORMED, f"{packet.name} reply items {list(types)}, not {list(want)}")
        payload = items.items[1][1]
        if types[1] == CONNECTED_DATA:  # (also when it mirrors a connected item in a SendRRData)
            if len(items.items[0][1]) != 4 or len(payload) < 2:
                return ReplyVerdict(ReplyKind.MALFORMED, "connected reply without a connection id and sequence count")
            payload = payload[2:]
        try:
            reply = parse_cip_reply(payload)
        except DecodeError as exc:
            return ReplyVerdict(ReplyKind.MALFORMED, f"CIP reply: {exc}")
        request = None
        if asked is not None:
            cip, _ = _cip_of(asked)
            request = parse_cip_request(cip) if cip is not None else None
        if not reply.reply_service & 0x80:
            return ReplyVerdict(ReplyKind.MALFORMED, f"reply service 0x{reply.reply_service:02x} lacks the reply bit")
        if request is None or request.service < 0:
            return self._cip_verdict(reply, None)
        final = request.final if request.embedded is not None else request
        echoes = {request.service | 0x80, final.service | 0x80}
        if reply.reply_service not in echoes:
            return ReplyVerdict(ReplyKind.MALFORMED, f"reply service 0x{reply.reply_service:02x} answers a request with "
                                f"service 0x{final.service & 0xFF:02x}")
        # Unconnected Send: success comes from the target at the end of the route (its own reply
        # service); a routing failure from the Connection Manager (0xD2).
        executed = final if reply.reply_service == final.service | 0x80 else request
        return self._cip_verdict(reply, executed)

    @staticmethod
    def _cip_verdict(reply: CipReply, request: CipRequest | None) -> ReplyVerdict:
        name = request.service_name if request is not None else f"service 0x{reply.reply_service & 0x7F:02x}"
        if reply.general_status == 0x06 and request is not None and request.service == READ_TAG_FRAGMENTED:
            return ReplyVerdict(ReplyKind.NORMAL, f"{name}: partial transfer, more data follows")
        if reply.general_status:
            return ReplyVerdict(ReplyKind.EXCEPTION, f"{name}: {reply.status_text()}")
        fault = _reply_data_fault(reply, request)
        if fault:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{name} reply: {fault}")
        return ReplyVerdict(ReplyKind.NORMAL, f"{name}: success")

    def observed_state(self, reply: bytes) -> bytes:
        """The reply without its header (the session handle differs on every connection)."""
        return reply[HEADER_SIZE:]

    def keeps_connection(self, request: bytes, reply: bytes) -> bool:
        """A target may close the TCP connection after an encapsulation error (cpppo always
        does), and ends it after an UnRegisterSession: the next case then gets a connection of its own."""
        if not reply:
            packets, _ = split_packets(request)
            return not any(p.command == UNREGISTER_SESSION for p in packets)
        return not (len(reply) >= 12 and reply[8:12] != b"\0\0\0\0")

    def is_write(self, frame: bytes) -> bool:
        """Conservative: any packet whose CIP request (or the one an Unconnected Send carries)
        may change state, also when the CPF does not parse (the service is looked for where the
        standard layouts put it), and packets behind a short encapsulation length."""
        packets, rest = split_packets(frame)
        for packet in packets + ([Packet(rest)] if len(rest) >= HEADER_SIZE else []):
            if packet.command not in (SEND_RR_DATA, SEND_UNIT_DATA):
                continue
            cip, _ = _cip_of(packet)
            if cip is None:  # where the standard layout puts the request
                at = HEADER_SIZE + (16 if packet.command == SEND_RR_DATA else 22)
                cip = packet.raw[at:] if len(packet.raw) > at else None
            if cip is not None and _may_write(parse_cip_request(cip)):
                return True
        return False

    def request_type(self, frame: bytes) -> str | None:
        """The template the answered packet's command, service and path select."""
        packet = answered_packet(frame)
        if packet is None:
            return None
        command = packet.command
        simple = {REGISTER_SESSION: "register_session", UNREGISTER_SESSION: "unregister_session", LIST_IDENTITY: "list_identity",
                  LIST_SERVICES: "list_services", LIST_INTERFACES: "list_interfaces"}  # fmt: skip
        if command in simple:
            return simple[command]
        if command not in (SEND_RR_DATA, SEND_UNIT_DATA):
            return f"undefined_command_0x{command:04x}" if command not in COMMANDS else None
        cip, _ = _cip_of(packet)
        if cip is None:
            return super().request_type(frame)
        request = parse_cip_request(cip)
        if command == SEND_UNIT_DATA:
            return "connected_read_tag" if request.service == READ_TAG else "connected_get_attribute_single"
        if request.forward_open:
            return "forward_open"
        prefix = ""
        if request.unconnected_send and request.embedded is not None:
            prefix, request = "unconnected_send_", request.embedded
        service = request.service
        if service == GET_ATTRIBUTES_ALL:
            return prefix + ("get_attribute_all" if prefix else "get_attribute_all_identity")
        if service == GET_ATTRIBUTE_SINGLE and not prefix:
            wide = any(s.kind == "class" and s.code & 3 for s in request.segments)
            return "get_attribute_single_identity_16bit" if wide else "get_attribute_single_identity"
        if service == READ_TAG:
            member = not prefix and any(s.kind == "member" for s in request.segments)
            return prefix + ("read_tag_element" if member else "read_tag")
        if service == READ_TAG_FRAGMENTED:
            return prefix + "read_tag_fragmented"
        if service == WRITE_TAG:
            return prefix + "write_tag"
        return super().request_type(frame)

    def describe(self, frame: bytes) -> str:
        packets, rest = split_packets(frame)
        parts = [_describe_packet(p) for p in packets]
        if rest:
            parts.append(f"{len(rest)} bytes that do not frame as a packet")
        return "; ".join(parts) or "empty frame"

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        """Defined values by field name, for the mutators."""
        services = sorted({*SERVICES, *CONNECTION_MANAGER_SERVICES})
        segments = [0x20, 0x21, 0x22, 0x24, 0x25, 0x26, 0x28, 0x29, 0x2C, 0x30, 0x31, 0x34, 0x38, 0x01, 0x11, 0x0F,
                    0x43, 0x50, 0x80, SYMBOL_SEGMENT, 0x60]  # fmt: skip
        return {
            "command": sorted({*COMMANDS, *OTHER_COMMANDS}),
            "status": sorted(ENCAP_STATUS),
            "sender_context": [bytes(8), PRE_SESSION, SYNC_CONTEXT],
            "address_item_type": sorted(ITEM_TYPES),
            "data_item_type": sorted(ITEM_TYPES),
            "data_type": sorted({*DATA_TYPES, STRUCTURE_TYPE}),
            "service": services,
            "embedded_service": services,
            "class_segment": segments,
            "instance_segment": segments,
            "attribute_segment": segments,
            "symbol_segment": segments,
            "class_id": sorted(CLASSES),
            "embedded_class_id": sorted(CLASSES),
            "general_status": sorted(GENERAL_STATUS),
            "embedded_data_type": sorted({*DATA_TYPES, STRUCTURE_TYPE}),
            "transport_trigger": [0x01, 0x03, 0x83, 0xA3, 0x23],
            "ot_parameters": [NETWORK_PARAMETERS, 0x2000, 0x4000, 0x0000, 0x63F4],
            "to_parameters": [NETWORK_PARAMETERS, 0x2000, 0x4000, 0x0000, 0x63F4],
        }


def _may_write(request: CipRequest) -> bool:
    if request.service < 0:
        return False
    if request.unconnected_send:
        return request.embedded is None or _may_write(request.embedded)
    if request.to_connection_manager and request.service in CONNECTION_SERVICES:
        return False
    if request.service == READ_TAG_FRAGMENTED:
        # Read Tag Fragmented when it names a tag; the Unconnected Send with the same code when
        # it does not (some stacks take every 0x52 for one): judge its embedded request then.
        if request.symbolic:
            return False
        embedded, _, _ = _parse_unconnected_send(request.body, 0)
        return embedded is None or _may_write(embedded)
    return request.service not in READ_SERVICES


def _describe_packet(packet: Packet) -> str:
    text = packet.name
    if packet.context == PRE_SESSION:
        text += " (before RegisterSession)"
    if packet.command in (SEND_RR_DATA, SEND_UNIT_DATA):
        cip, problem = _cip_of(packet)
        if cip is None:
            return f"{text}: {problem}"
        if packet.command == SEND_UNIT_DATA:
            connection = int.from_bytes(packet.raw[36:40], "little")
            text += f" on connection {connection}" if connection else " on the session's connection"
        return f"{text} {parse_cip_request(cip).describe()}"
    return text


def _reply_data_fault(reply: CipReply, request: CipRequest | None) -> str | None:
    """Why the data of a successful reply does not fit the request, or None."""
    if request is None:
        return None
    data, service = reply.data, request.service
    tag_service = not request.to_connection_manager
    if service in (READ_TAG, READ_TAG_FRAGMENTED) and tag_service:
        if len(data) < 2:
            return f"{len(data)} bytes carry no data type"
        code = int.from_bytes(data[:2], "little")
        values = data[4:] if code == STRUCTURE_TYPE else data[2:]
        if code in DATA_TYPES:
            name, size = DATA_TYPES[code]
            if len(values) % size:
                return f"{len(values)} bytes of {name} values are not whole elements"
            if service == READ_TAG and len(request.body) >= 2:
                elements = int.from_bytes(request.body[:2], "little")
                if len(values) != elements * size:
                    return f"{len(values)} bytes of {name} values but elements={elements} need {elements * size}"
        return None
    if service == WRITE_TAG and tag_service and data:
        return f"{len(data)} unexpected bytes after a Write Tag reply"
    if request.forward_open:
        try:
            FORWARD_OPEN_REPLY.decode(data)
        except DecodeError as exc:
            return str(exc)
        return None
    if _targets(request.segments, IDENTITY_CLASS) and service in (GET_ATTRIBUTES_ALL, GET_ATTRIBUTE_SINGLE):
        attribute = _first(request.segments, "attribute")
        sizes = {1: 2, 2: 2, 3: 2, 4: 2, 5: 2, 6: 4, 8: 1}
        if service == GET_ATTRIBUTE_SINGLE and attribute in sizes and len(data) != sizes[attribute]:
            return f"Identity attribute {attribute} of {len(data)} bytes, not {sizes[attribute]}"
        if service == GET_ATTRIBUTE_SINGLE and attribute == 7 and (not data or data[0] + 1 != len(data)):
            return f"product name length {data[0] if data else 'missing'} does not match its {max(len(data) - 1, 0)} bytes"
        if service == GET_ATTRIBUTES_ALL and (len(data) < 15 or 15 + data[14] > len(data)):
            return f"Identity attributes of {len(data)} bytes end before the product name"
    return None
