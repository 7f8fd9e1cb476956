"""Modbus/TCP (MODBUS Application Protocol v1.1b3 over the MBAP header), sans-IO.

Every public function code is declared once with the message model: the MBAP header
(`transaction_id`, `protocol_id`, `length`, `unit_id`), the `function_code` and the PDU fields
with the specification's limits ("quantity 1..125") and cross-field rules ("byte count equals
2 x quantity", "address + quantity must not pass 65535"). The same declarations build the
templates, decode requests for `check_request`, decode replies for `classify`, and tell the
mutators where the boundaries are. Diagnostics (fc 8) is declared per sub-function and
Encapsulated Interface Transport (fc 43) per MEI type, because their layouts and their effect
on the device differ. Nothing here opens a socket or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any

from otfuzz.errors import DecodeError
from otfuzz.protocols.base import OptionSpec, Probe, Protocol, ReplyKind, ReplyVerdict, Session, Template, distinct_faults
from otfuzz.protocols.model import REST, Bytes, Field, Length, MessageType, UInt

MAX_ADU = 260  # 7-byte MBAP header + 253-byte PDU
MAX_LENGTH = 254  # MBAP length covers unit id + PDU
HEADER_SIZE = 7  # MBAP header without the function code

EXCEPTION_CODES: Mapping[int, str] = MappingProxyType(
    {
        0x01: "illegal function",
        0x02: "illegal data address",
        0x03: "illegal data value",
        0x04: "server device failure",
        0x05: "acknowledge",
        0x06: "server device busy",
        0x08: "memory parity error",
        0x0A: "gateway path unavailable",
        0x0B: "gateway target device failed to respond",
    }
)

# Function codes the specification sets aside for vendors: a normal answer is legitimate, but
# nobody outside the vendor knows what they do to the device.
USER_DEFINED = frozenset(range(65, 73)) | frozenset(range(100, 111))
# Reserved codes with known historical use, some of them dangerous (90 is Schneider UMAS, which
# can stop a PLC; 125/126 program Modicon controllers).
RESERVED = frozenset({9, 10, 13, 14, 41, 42, 90, 91, 125, 126, 127})


# -- fast decoding --------------------------------------------------------------------------


class _Decoder:
    """A declaration as the per-case hot path uses it: the model's compiled decoding, with only
    the limits that matter for this use checked (reply layouts skip the MBAP header's, which
    the classifier judges itself)."""

    __slots__ = ("message", "name", "head", "limited", "rules", "rest_lengths")

    def __init__(self, message: MessageType, *, check_header: bool = True) -> None:
        self.message = message
        self.name = message.name
        self.head = message.head.struct
        header = set() if check_header else {f.name for f in _header()}
        self.limited = tuple(f for f in message.limited_fields if f.name not in header)
        self.rules = tuple(message.constraints)
        # lengths that count everything after themselves, with the offset where that starts
        offset, rest = 0, []
        for f in message.fields[: len(message.head.names)]:
            offset += f.width  # type: ignore[union-attr]
            if isinstance(f, Length) and f.covers == REST and f.name not in header:
                rest.append((f.name, offset))
        self.rest_lengths = tuple(rest)

    def decode_prefix(self, data: bytes) -> tuple[dict[str, Any], int]:
        """Parse the fields from the start of `data`; raises DecodeError like the model."""
        return self.message.decode_prefix(data)

    def decode(self, data: bytes) -> dict[str, Any]:
        values, end = self.decode_prefix(data)
        if end != len(data):
            raise DecodeError(f"{self.name}: {len(data) - end} unexpected trailing bytes")
        return values

    def partial_violations(self, data: bytes) -> list[str]:
        """What a truncated request breaks in the fields it still holds whole (a byte count that
        disagrees with its quantity stays a violation when the data after it is cut)."""
        return self.violations(self.message.decode_partial(data), partial=True)

    def violations(self, values: Mapping[str, Any], partial: bool = False) -> list[str]:
        """Field limits and rules; `partial` values skip the fields and rules whose fields were cut off."""
        limited = [f for f in self.limited if f.name in values] if partial else self.limited
        problems = [p for p in (f.violation(values[f.name]) for f in limited) if p]
        for rule in self.rules:
            try:
                problem = rule(values)
            except KeyError:
                if not partial:
                    raise
                continue  # a field it needs was cut off
            if problem:
                problems.append(problem)
        return problems


# -- declarations ---------------------------------------------------------------------------


def _header(code: int | None = None, title: str = "") -> list[Field]:
    """MBAP header plus function code; `code` pins the function code as the only defined value."""
    return [
        UInt("transaction_id", 16, default=1),
        UInt("protocol_id", 16, default=0, enum={0: "MODBUS"}),
        Length("length", 16, covers=REST, minimum=2, maximum=MAX_LENGTH),
        UInt("unit_id", 8, default=1),
        UInt("function_code", 8, default=code or 0, enum=None if code is None else {code: title}),
    ]


def _address(name: str = "address", default: int = 0) -> UInt:
    return UInt(name, 16, default=default)


def _quantity(name: str, maximum: int, default: int = 1) -> UInt:
    return UInt(name, 16, default=default, minimum=1, maximum=maximum)


def _no_overflow(address: str, quantity: str) -> Callable[[Mapping[str, Any]], str | None]:
    """Spec rule: the addressed range must end at or before address 65535."""

    def rule(values: Mapping[str, Any]) -> str | None:
        end = values[address] + values[quantity]
        if end > 0x10000:
            return f"{address}+{quantity}={end} runs past the last address 65535"
        return None

    return rule


def _count_matches(count: str, quantity: str, bytes_for: Callable[[int], int], what: str) -> Callable[[Mapping[str, Any]], str | None]:
    """Spec rule: a byte count must agree with the quantity it carries."""

    def rule(values: Mapping[str, Any]) -> str | None:
        want = bytes_for(values[quantity])
        if values[count] != want:
            return f"{count}={values[count]} but {quantity}={values[quantity]} needs {want} ({what})"
        return None

    return rule


def _bits(quantity: int) -> int:
    return (quantity + 7) // 8


def _words(quantity: int) -> int:
    return 2 * quantity


# A file sub-request (fc 20 and 21). The first is declared inline in each request so the
# mutators see its fields; further sub-requests ride in `more_sub_requests`, decoded with these.
_FILE_READ_GROUP = MessageType(
    "file_sub_request",
    [
        UInt("reference_type", 8, default=6, enum={6: "file record"}),
        UInt("file_number", 16, default=1, minimum=1),
        UInt("record_number", 16, maximum=0x270F),
        UInt("record_length", 16, default=1),
    ],
)
_FILE_WRITE_GROUP = MessageType(
    "file_sub_request_with_data",
    [
        UInt("reference_type", 8, default=6, enum={6: "file record"}),
        UInt("file_number", 16, default=1, minimum=1),
        UInt("record_number", 16, maximum=0x270F),
        Length("record_length", 16, covers=("record_data",), unit=2),
        Bytes("record_data", size_from="record_length", unit=2),
    ],
)


def _walk_groups(group: MessageType, data: bytes) -> tuple[list[dict[str, Any]], str | None]:
    """Decode repeated sub-requests; the second item says why the bytes do not divide up."""
    out: list[dict[str, Any]] = []
    offset = 0
    while offset < len(data):
        try:
            values, offset = group.decode_prefix(data, offset)
        except DecodeError as exc:
            return out, f"sub-request {len(out) + 2}: {exc}"
        out.append(values)
    return out, None


def _file_read_rules(values: Mapping[str, Any]) -> str | None:
    count = values["byte_count"]
    more = values["more_sub_requests"]
    if count != 7 + len(more):
        return f"byte_count={count} but {7 + len(more)} bytes of sub-requests follow"
    if not 0x07 <= count <= 0xF5 or count % 7:
        return f"byte_count={count} is not a multiple of 7 within 7..245"
    groups, problem = _walk_groups(_FILE_READ_GROUP, more)
    if problem:
        return problem
    groups.insert(0, values)
    for n, group in enumerate(groups[1:], start=2):
        bad = _FILE_READ_GROUP.violations(group)
        if bad:
            return f"sub-request {n}: {bad[0]}"
    reply = 2 + sum(2 + 2 * g["record_length"] for g in groups)
    if reply > 253:
        return f"records asked for need a {reply}-byte reply, above the 253-byte PDU"
    return None


def _file_write_rules(values: Mapping[str, Any]) -> str | None:
    count = values["request_data_length"]
    size = 7 + len(values["record_data"]) + len(values["more_sub_requests"])
    if count != size:
        return f"request_data_length={count} but {size} bytes of sub-requests follow"
    if not 0x09 <= count <= 0xFB:
        return f"request_data_length={count} outside 9..251"
    groups, problem = _walk_groups(_FILE_WRITE_GROUP, values["more_sub_requests"])
    if problem:
        return problem
    for n, group in enumerate(groups, start=2):
        bad = _FILE_WRITE_GROUP.violations(group)
        if bad:
            return f"sub-request {n}: {bad[0]}"
    return None


def _delimiter_rule(values: Mapping[str, Any]) -> str | None:
    if values["data"] & 0xFF:
        return f"data=0x{values['data']:04x}: the byte after the delimiter must be 00"
    return None


# -- replies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Fault:
    """Why a normal reply is wrong; `content_only` when the layout is right but an echo differs."""

    text: str
    content_only: bool = False


ReplyCheck = Callable[["_Function", "Mapping[str, Any] | None", bytes, bytes], "_Fault | None"]


def _reply_type(name: str, *pdu: Field) -> _Decoder:
    # classify checks the MBAP header itself, before any reply layout is chosen
    return _Decoder(MessageType(name, [*_header(), *pdu]), check_header=False)


_COUNTED_REPLY = _reply_type("counted_reply", Length("byte_count", 8, covers=("values",)), Bytes("values", size_from="byte_count"))
_STATUS_REPLY = _reply_type("exception_status_reply", UInt("status", 8))
_EVENT_COUNTER_REPLY = _reply_type(
    "comm_event_counter_reply", UInt("status", 16, enum={0: "ready", 0xFFFF: "busy"}), UInt("event_count", 16)
)
_EVENT_LOG_REPLY = _reply_type(
    "comm_event_log_reply",
    Length("byte_count", 8, covers=REST),
    UInt("status", 16, enum={0: "ready", 0xFFFF: "busy"}),
    UInt("event_count", 16),
    UInt("message_count", 16),
    Bytes("events", max_size=64),
)
_WRITE_MULTIPLE_REPLY = _reply_type("write_multiple_reply", _address(), UInt("quantity", 16))
_DIAGNOSTIC_VALUE_REPLY = _reply_type("diagnostic_value_reply", UInt("sub_function", 16), UInt("data", 16))
_FILE_READ_REPLY = _reply_type("read_file_record_reply", Length("response_data_length", 8, covers=REST), Bytes("sub_responses"))
_FIFO_REPLY = _reply_type(
    "read_fifo_queue_reply",
    Length("byte_count", 16, covers=REST),
    UInt("fifo_count", 16, maximum=31),
    Bytes("values", size_from="fifo_count", unit=2),
)
_DEVICE_ID_REPLY = _reply_type(
    "read_device_identification_reply",
    UInt("mei_type", 8, enum={0x0E: "read device identification"}),
    UInt("read_device_id_code", 8),
    UInt("conformity_level", 8),
    UInt("more_follows", 8, enum={0: "no", 0xFF: "yes"}),
    UInt("next_object_id", 8),
    UInt("number_of_objects", 8),
    Bytes("objects"),
)
_EXCEPTION_REPLY = _reply_type("exception_reply", UInt("exception_code", 8))


def _decode_reply(layout: _Decoder, reply: bytes) -> tuple[dict[str, Any] | None, _Fault | None]:
    try:
        values = layout.decode(reply)
    except DecodeError as exc:
        return None, _Fault(f"does not parse as {layout.name}: {exc}")
    for name, end in layout.rest_lengths:
        if values[name] != len(reply) - end:
            return values, _Fault(f"{name}={values[name]} but {len(reply) - end} bytes follow")
    bad = layout.violations(values)
    return values, (_Fault(f"{layout.name}: {bad[0]}") if bad else None)


def _reply_counted(per: Callable[[int], int], quantity: str) -> ReplyCheck:
    """Reads: the byte count must equal what the quantity asked for needs."""

    def check(func: _Function, request: Mapping[str, Any] | None, req: bytes, reply: bytes) -> _Fault | None:
        values, fault = _decode_reply(_COUNTED_REPLY, reply)
        if fault or values is None:
            return fault
        if request is not None:
            want = per(request[quantity])
            if values["byte_count"] != want:
                return _Fault(f"byte_count={values['byte_count']} but {quantity}={request[quantity]} asks for {want} bytes")
        return None

    return check


def _reply_echo(func: _Function, request: Mapping[str, Any] | None, req: bytes, reply: bytes) -> _Fault | None:
    """Writes of one item, mask write, write file record, most diagnostics: the reply is the request."""
    if reply == req:
        return None
    if len(reply) != len(req):
        if request is None and _whole(func, reply):
            # The request did not decode (cut short, counts that disagree) and the server answered
            # with a whole message of the function's own layout: it acted on what it made of the
            # request. That is the request's spec violation, not a malformed reply.
            return _Fault(f"{func.title} reply echoes a whole request, not the one sent", content_only=True)
        return _Fault(f"{func.title} reply of {len(reply)} bytes; the echo of the request has {len(req)}")
    return _Fault(f"{func.title} reply does not echo the request ({reply[8:].hex()} vs {req[8:].hex()})", content_only=True)


def _with_length(data: bytes) -> bytes:
    """`data` with its MBAP length field made to count the bytes after it."""
    return data[:4] + (len(data) - 6).to_bytes(2, "big") + data[6:]


def _whole(func: _Function, frame: bytes) -> bool:
    try:
        func.decoder.decode(frame)
    except DecodeError:
        return False
    return True


def _reply_echoes(layout: _Decoder, *names: str) -> ReplyCheck:
    """Replies with a layout of their own that repeat some request fields (write multiple:
    address and quantity; diagnostic counters: the sub-function)."""

    def check(func: _Function, request: Mapping[str, Any] | None, req: bytes, reply: bytes) -> _Fault | None:
        values, fault = _decode_reply(layout, reply)
        if fault or values is None or request is None:
            return fault
        for name in names:
            if values[name] != request[name]:
                return _Fault(f"{func.title} reply echoes {name}={values[name]}, request had {request[name]}", content_only=True)
        return None

    return check


def _reply_layout(layout: _Decoder) -> ReplyCheck:
    def check(func: _Function, request: Mapping[str, Any] | None, req: bytes, reply: bytes) -> _Fault | None:
        return _decode_reply(layout, reply)[1]

    return check


def _reply_file_read(func: _Function, request: Mapping[str, Any] | None, req: bytes, reply: bytes) -> _Fault | None:
    values, fault = _decode_reply(_FILE_READ_REPLY, reply)
    if fault or values is None:
        return fault
    data = values["sub_responses"]
    sizes: list[int] = []
    offset = 0
    while offset < len(data):
        size = data[offset]
        if size < 1 or offset + 1 + size > len(data):
            return _Fault(f"sub-response {len(sizes) + 1} claims {size} bytes, {len(data) - offset - 1} remain")
        if data[offset + 1] != 6:
            return _Fault(f"sub-response {len(sizes) + 1} has reference type {data[offset + 1]}, not 6")
        sizes.append(size - 1)
        offset += 1 + size
    if request is not None:
        groups, _ = _walk_groups(_FILE_READ_GROUP, request["more_sub_requests"])
        asked = [2 * g["record_length"] for g in [request, *groups]]
        if sizes != asked:
            return _Fault(f"record data of {sizes} bytes, the request asked for {asked}")
    return None


def _reply_device_id(func: _Function, request: Mapping[str, Any] | None, req: bytes, reply: bytes) -> _Fault | None:
    values, fault = _decode_reply(_DEVICE_ID_REPLY, reply)
    if fault or values is None:
        return fault
    if request is not None and values["read_device_id_code"] != request["read_device_id_code"]:
        return _Fault(f"read_device_id_code={values['read_device_id_code']} does not echo {request['read_device_id_code']}")
    objects, problem = _device_objects(values["objects"])
    if problem:
        return _Fault(problem)
    if len(objects) != values["number_of_objects"]:
        return _Fault(f"number_of_objects={values['number_of_objects']} but {len(objects)} objects follow")
    return None


def _device_objects(data: bytes) -> tuple[dict[int, bytes], str | None]:
    objects: dict[int, bytes] = {}
    offset = 0
    while offset < len(data):
        if offset + 2 > len(data):
            return objects, f"object list ends inside an object header at byte {offset}"
        size = data[offset + 1]
        if offset + 2 + size > len(data):
            return objects, f"object 0x{data[offset]:02x} claims {size} bytes, {len(data) - offset - 2} remain"
        objects[data[offset]] = data[offset + 2 : offset + 2 + size]
        offset += 2 + size
    return objects, None


def _reply_any(func: _Function, request: Mapping[str, Any] | None, req: bytes, reply: bytes) -> _Fault | None:
    """Undefined diagnostics sub-functions and other MEI types: only the sub-code echo is known."""
    if reply[8:10] != req[8:10]:
        return _Fault(f"{func.title} reply does not echo the sub-code {req[8:10].hex()}")
    return None


# -- the function table ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Function:
    """One request layout with its effect on the device and the rule its normal reply obeys."""

    code: int
    sub: int | None  # diagnostics sub-function or MEI type; None for plain function codes
    decoder: _Decoder
    title: str
    example: tuple[tuple[str, Any], ...]
    check_reply: ReplyCheck
    writes: bool = False
    disruptive: bool = False
    template: bool = True  # False for catch-alls that exist only to decode undefined sub-codes

    @property
    def message(self) -> MessageType:
        return self.decoder.message


def _function(
    code: int,
    name: str,
    pdu: Sequence[Field],
    check: ReplyCheck,
    *,
    sub: int | None = None,
    example: Mapping[str, Any] | None = None,
    rules: Sequence[Callable[[Mapping[str, Any]], str | None]] = (),
    **flags: Any,
) -> _Function:
    message = MessageType(name, [*_header(code, name), *pdu], constraints=tuple(rules))
    title = name.replace("_", " ").replace("/", ": ")
    return _Function(code, sub, _Decoder(message), title, tuple((example or {}).items()), check, **flags)


def _diagnostic(sub: int, name: str, data: Field, check: ReplyCheck, *, rules: Sequence[Callable[[Mapping[str, Any]], str | None]] = (), **flags: Any) -> _Function:
    return _function(
        8, f"diagnostics/{name}", [UInt("sub_function", 16, default=sub, enum={sub: name}), data], check, sub=sub, rules=rules, **flags
    )


_ZERO_DATA = {0: "0x0000"}
_DIAGNOSTIC_NAMES = {
    0x00: "return_query_data",
    0x01: "restart_communications_option",
    0x02: "return_diagnostic_register",
    0x03: "change_ascii_input_delimiter",
    0x04: "force_listen_only_mode",
    0x0A: "clear_counters_and_diagnostic_register",
    0x0B: "return_bus_message_count",
    0x0C: "return_bus_communication_error_count",
    0x0D: "return_bus_exception_error_count",
    0x0E: "return_server_message_count",
    0x0F: "return_server_no_response_count",
    0x10: "return_server_nak_count",
    0x11: "return_server_busy_count",
    0x12: "return_bus_character_overrun_count",
    0x14: "clear_overrun_counter_and_flag",
}

_FUNCTIONS: tuple[_Function, ...] = (
    _function(1, "read_coils", [_address(), _quantity("quantity", 2000, 16)], _reply_counted(_bits, "quantity"),
              rules=[_no_overflow("address", "quantity")], example={"address": 0, "quantity": 16}),
    _function(2, "read_discrete_inputs", [_address(), _quantity("quantity", 2000, 16)], _reply_counted(_bits, "quantity"),
              rules=[_no_overflow("address", "quantity")], example={"address": 0, "quantity": 16}),
    _function(3, "read_holding_registers", [_address(), _quantity("quantity", 125, 1)], _reply_counted(_words, "quantity"),
              rules=[_no_overflow("address", "quantity")], example={"address": 0, "quantity": 10}),
    _function(4, "read_input_registers", [_address(), _quantity("quantity", 125, 1)], _reply_counted(_words, "quantity"),
              rules=[_no_overflow("address", "quantity")], example={"address": 0, "quantity": 10}),
    _function(5, "write_single_coil", [_address(), UInt("value", 16, default=0xFF00, enum={0x0000: "OFF", 0xFF00: "ON"})],
              _reply_echo, example={"address": 0, "value": 0xFF00}, writes=True),
    # Writing register 1 with 1 and 2..3 with 2..3 keeps a datastore that holds i at i unchanged.
    _function(6, "write_single_register", [_address(), UInt("value", 16)], _reply_echo,
              example={"address": 1, "value": 1}, writes=True),
    _function(7, "read_exception_status", [], _reply_layout(_STATUS_REPLY)),
    _diagnostic(0x00, _DIAGNOSTIC_NAMES[0x00], Bytes("data", default=b"\xa5\x37", max_size=250), _reply_echo),
    _diagnostic(0x01, _DIAGNOSTIC_NAMES[0x01], UInt("data", 16, enum={0: "keep event log", 0xFF00: "clear event log"}), _reply_echo,
                writes=True, disruptive=True),
    _diagnostic(0x02, _DIAGNOSTIC_NAMES[0x02], UInt("data", 16, enum=_ZERO_DATA), _reply_echoes(_DIAGNOSTIC_VALUE_REPLY, "sub_function")),
    _diagnostic(0x03, _DIAGNOSTIC_NAMES[0x03], UInt("data", 16, default=0x0A00), _reply_echo, rules=[_delimiter_rule], writes=True),
    # The specification says listen-only mode is never answered; a reply is a deviation.
    _diagnostic(0x04, _DIAGNOSTIC_NAMES[0x04], UInt("data", 16, enum=_ZERO_DATA), _reply_echo, writes=True, disruptive=True),
    _diagnostic(0x0A, _DIAGNOSTIC_NAMES[0x0A], UInt("data", 16, enum=_ZERO_DATA), _reply_echo, writes=True),
    *(
        _diagnostic(sub, _DIAGNOSTIC_NAMES[sub], UInt("data", 16, enum=_ZERO_DATA), _reply_echoes(_DIAGNOSTIC_VALUE_REPLY, "sub_function"))
        for sub in range(0x0B, 0x13)
    ),
    _diagnostic(0x14, _DIAGNOSTIC_NAMES[0x14], UInt("data", 16, enum=_ZERO_DATA), _reply_echo, writes=True),
    # Catch-all for undefined sub-functions: its enum makes the sub-function itself the problem.
    _function(8, "diagnostics", [UInt("sub_function", 16, enum=_DIAGNOSTIC_NAMES), Bytes("data", max_size=250)], _reply_any,
              sub=-1, template=False, writes=True),
    _function(11, "get_comm_event_counter", [], _reply_layout(_EVENT_COUNTER_REPLY)),
    _function(12, "get_comm_event_log", [], _reply_layout(_EVENT_LOG_REPLY)),
    _function(15, "write_multiple_coils",
              [_address(), _quantity("quantity", 1968, 10), Length("byte_count", 8, covers=("values",)),
               Bytes("values", size_from="byte_count", default=b"\xcd\x01", max_size=246)],
              _reply_echoes(_WRITE_MULTIPLE_REPLY, "address", "quantity"),
              rules=[_count_matches("byte_count", "quantity", _bits, "one bit per coil"), _no_overflow("address", "quantity")],
              example={"address": 0, "quantity": 10, "values": b"\xcd\x01"}, writes=True),
    _function(16, "write_multiple_registers",
              [_address(), _quantity("quantity", 123, 2), Length("byte_count", 8, covers=("values",)),
               Bytes("values", size_from="byte_count", default=b"\x00\x02\x00\x03", max_size=246)],
              _reply_echoes(_WRITE_MULTIPLE_REPLY, "address", "quantity"),
              rules=[_count_matches("byte_count", "quantity", _words, "two bytes per register"), _no_overflow("address", "quantity")],
              example={"address": 2, "quantity": 2, "values": b"\x00\x02\x00\x03"}, writes=True),
    _function(17, "report_server_id", [], _reply_layout(_COUNTED_REPLY)),
    _function(20, "read_file_record",
              [Length("byte_count", 8, covers=REST, minimum=7, maximum=0xF5), *_FILE_READ_GROUP.fields,
               Bytes("more_sub_requests", max_size=0xF5 - 7)],
              _reply_file_read, rules=[_file_read_rules],
              example={"file_number": 4, "record_number": 1, "record_length": 2}),
    _function(21, "write_file_record",
              [Length("request_data_length", 8, covers=REST, minimum=9, maximum=0xFB), *_FILE_WRITE_GROUP.fields,
               Bytes("more_sub_requests", max_size=0xFB - 9)],
              _reply_echo, rules=[_file_write_rules],
              example={"file_number": 4, "record_number": 7, "record_data": bytes.fromhex("06af04be100d")}, writes=True),
    # AND 0xFFFF / OR 0x0000 leaves the register as it was.
    _function(22, "mask_write_register", [_address(), UInt("and_mask", 16, default=0xFFFF), UInt("or_mask", 16)], _reply_echo,
              example={"address": 4, "and_mask": 0xFFFF, "or_mask": 0}, writes=True),
    _function(23, "read_write_multiple_registers",
              [_address("read_address"), _quantity("read_quantity", 125, 6), _address("write_address"),
               _quantity("write_quantity", 121, 3), Length("write_byte_count", 8, covers=("write_values",)),
               Bytes("write_values", size_from="write_byte_count", default=bytes.fromhex("000e000f0010"), max_size=242)],
              _reply_counted(_words, "read_quantity"),
              rules=[_count_matches("write_byte_count", "write_quantity", _words, "two bytes per register"),
                     _no_overflow("read_address", "read_quantity"), _no_overflow("write_address", "write_quantity")],
              example={"read_address": 3, "read_quantity": 6, "write_address": 14, "write_quantity": 3,
                       "write_values": bytes.fromhex("000e000f0010")}, writes=True),
    _function(24, "read_fifo_queue", [_address("fifo_pointer_address")], _reply_layout(_FIFO_REPLY)),
    _function(43, "read_device_identification",
              [UInt("mei_type", 8, default=0x0E, enum={0x0E: "read device identification"}),
               UInt("read_device_id_code", 8, default=1, enum={1: "basic", 2: "regular", 3: "extended", 4: "specific"}),
               UInt("object_id", 8)],
              _reply_device_id, sub=0x0E),
    # Other MEI types (13 is CANopen General Reference, which can write device objects).
    _function(43, "encapsulated_interface_transport",
              [UInt("mei_type", 8, enum={0x0D: "CANopen general reference", 0x0E: "read device identification"}), Bytes("data")],
              _reply_any, sub=-1, template=False, writes=True),
)

_PLAIN: Mapping[int, _Function] = MappingProxyType({f.code: f for f in _FUNCTIONS if f.sub is None})
_BY_SUB: Mapping[tuple[int, int], _Function] = MappingProxyType({(f.code, f.sub): f for f in _FUNCTIONS if f.sub is not None})
_MBAP = MessageType("mbap_header", _header())
_MBAP_STRUCT = _Decoder(_MBAP).head  # header + function code in one unpack, for the hot path
_LENGTH_AT = next(span.offset for span in _MBAP.spans() if span.field.name == "length")


def _lookup(frame: bytes) -> _Function | None:
    """The declaration that decodes `frame`, chosen by function code (and sub-code)."""
    code = frame[HEADER_SIZE]
    found = _PLAIN.get(code)
    if found is not None:
        return found
    if code == 8:
        sub = int.from_bytes(frame[8:10], "big") if len(frame) >= 10 else -1
        return _BY_SUB.get((8, sub)) or _BY_SUB[(8, -1)]
    if code == 43:
        mei = frame[8] if len(frame) >= 9 else -1
        return _BY_SUB.get((43, mei)) or _BY_SUB[(43, -1)]
    return None


def _undefined_code(code: int) -> str | None:
    """Why a function code that has no declaration is wrong, or None for vendor codes."""
    if code in USER_DEFINED:
        return None
    if code == 0:
        return "function code 0 is not a valid function"
    if code & 0x80:
        return f"function code 0x{code:02x} has the exception bit set; requests never do"
    if code in RESERVED:
        return f"function code {code} (0x{code:02x}) is reserved, not a public Modbus function"
    return f"function code {code} (0x{code:02x}) is not a defined Modbus function"


@lru_cache(maxsize=256)
def _exception_detail(code: int) -> str:
    name = EXCEPTION_CODES.get(code, "undefined exception code")
    return f"exception 0x{code:02x} {name}"


# -- session --------------------------------------------------------------------------------


class ModbusSession(Session):
    """Frames replies by the MBAP length; an absurd length takes the whole buffer as one frame so
    the classifier reports it instead of the engine waiting for bytes that will never come."""

    def next_reply(self) -> bytes | None:
        buf = self._buffer
        if len(buf) < _LENGTH_AT + 2:
            return None
        length = (buf[_LENGTH_AT] << 8) | buf[_LENGTH_AT + 1]
        if length < 2 or length > MAX_LENGTH:
            frame = bytes(buf)
            buf.clear()
            return frame
        end = _LENGTH_AT + 2 + length
        if len(buf) < end:
            return None
        frame = bytes(buf[:end])
        del buf[:end]
        return frame


# -- the protocol ---------------------------------------------------------------------------


class ModbusTCP(Protocol):
    """Modbus/TCP: every public function code, declared with the specification's limits."""

    name = "modbus"
    schemes = ("modbus",)
    default_port = 502
    options_spec = {
        "unit": OptionSpec("1", "unit identifier put in every request (0..255)", int, 0, 255),
        "probe_address": OptionSpec("0", "holding register the health probe reads (0..65535)", int, 0, 0xFFFF),
    }
    liveness_note = "read of one holding register (fc 3) on its own connection answered normally within the deadline"
    probe_hint = "check ?unit= (the unit identifier the device answers) and ?probe_address= (a holding register it has)"

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        super().__init__(options, path)
        self._templates = tuple(self._template(f) for f in _FUNCTIONS if f.template)
        self._probe = Probe(
            _PLAIN[3].message.encode(transaction_id=0x7072, unit_id=self.options["unit"], address=self.options["probe_address"], quantity=1),
            f"read holding register {self.options['probe_address']} (fc 3) of unit {self.options['unit']}",
        )
        self._identify = _BY_SUB[(43, 0x0E)].message.encode(transaction_id=0x6964, unit_id=self.options["unit"])

    def _template(self, func: _Function) -> Template:
        values = {"transaction_id": 1, "unit_id": self.options["unit"], **dict(func.example)}
        return Template(func.message.name, func.message, values, writes=func.writes, disruptive=func.disruptive, code=func.code)

    # -- what to send -----------------------------------------------------------------------

    def templates(self) -> Sequence[Template]:
        return self._templates

    def message_types(self) -> Sequence[MessageType]:
        return tuple(f.message for f in _FUNCTIONS)

    def probe(self) -> Probe:
        return self._probe

    def probe_ok(self, reply: bytes) -> bool:
        return self.classify(self._probe.frame, reply).kind is ReplyKind.NORMAL

    def session(self) -> Session:
        return ModbusSession()

    def identify(self) -> list[bytes]:
        return [self._identify]

    def parse_identity(self, reply: bytes) -> dict[str, str]:
        """Vendor, product code and revision from a read-device-identification reply."""
        if self.classify(self._identify, reply).kind is not ReplyKind.NORMAL:
            return {}
        objects, _ = _device_objects(_DEVICE_ID_REPLY.decode(reply)["objects"])
        names = {0: "vendor", 1: "product_code", 2: "revision"}
        return {names[k]: v.decode("utf-8", "replace") for k, v in objects.items() if k in names}

    def structural_faults(self, template: Template) -> tuple[tuple[str, bytes], ...]:
        """Faults of the framing around a valid request: what parsers most often get wrong."""
        frame = template.encode()
        length = len(frame) - 6
        code = frame[HEADER_SIZE]

        mid = HEADER_SIZE + 1 + (len(frame) - HEADER_SIZE - 1) // 2
        faults: list[tuple[str, bytes]] = [
            ("MBAP length one short", template.encode(length=length - 1)),
            ("MBAP length one long (target must wait or reject)", template.encode(length=length + 1)),
            ("MBAP length zero", template.encode(length=0)),
            ("MBAP length 0xFFFF", template.encode(length=0xFFFF)),
            ("MBAP length 1 (unit id only, no function code)", template.encode(length=1)),
            ("truncated to the MBAP header, length unchanged", frame[:HEADER_SIZE]),
            ("truncated to header and function code, length adjusted", _with_length(frame[: HEADER_SIZE + 1])),
            ("cut mid-PDU, length adjusted", _with_length(frame[:mid])),
            ("cut mid-PDU, length unchanged", frame[:mid]),
            ("one trailing byte counted in the length", _with_length(frame + b"\x00")),
            ("four trailing bytes counted in the length", _with_length(frame + b"\xff\xff\xff\xff")),
            ("trailing bytes padding the ADU to 261 bytes", _with_length(frame + b"\x00" * (MAX_ADU + 1 - len(frame)))),
            ("protocol id 1", template.encode(protocol_id=1)),
            ("protocol id 0xFFFF", template.encode(protocol_id=0xFFFF)),
            (f"exception bit set on function code (0x{code | 0x80:02x})", template.encode(function_code=code | 0x80)),
        ]
        faults += [(f"undefined function code 0x{fc:02x}", template.encode(function_code=fc)) for fc in (0, 9, 0x41, 0x64, 0x7F, 0x80, 0xFF)]
        names = {f.name for f in template.message.fields}
        for count, quantity in (("byte_count", "quantity"), ("write_byte_count", "write_quantity")):
            if count not in names or quantity not in names:
                continue
            right = template.message.decode(frame)[count]
            # the smallest quantity whose data no longer fits the byte count actually sent
            bigger = 8 * right + 1 if code == 15 else right // 2 + 1
            faults += [
                (f"{count} one more than {quantity} needs", template.encode(**{count: right + 1})),
                (f"{count} one less than {quantity} needs", template.encode(**{count: right - 1})),
                (f"{count} zero, data unchanged", template.encode(**{count: 0})),
                (f"{quantity} {bigger}: more than the data carries", template.encode(**{quantity: bigger})),
            ]
        return distinct_faults(frame, faults)

    # -- what came back ---------------------------------------------------------------------

    def repair(self, frame: bytes) -> bytes:
        """MBAP length = bytes after it, protocol id 0: the mutated PDU then reaches the parser."""
        if len(frame) < HEADER_SIZE + 1 or len(frame) - 6 > 0xFFFF:
            return frame
        return frame[:2] + b"\x00\x00" + (len(frame) - 6).to_bytes(2, "big") + frame[6:]

    def frame_length(self, frame: bytes) -> int | None:
        if len(frame) < 6:
            return None
        return 6 + ((frame[4] << 8) | frame[5])

    def request_id(self, frame: bytes) -> int | None:
        """The transaction id, for a frame a server frames as one request: the MODBUS protocol
        id and a length that matches (a server may drop anything else, or read past it)."""
        if len(frame) <= HEADER_SIZE or frame[2] or frame[3] or 6 + ((frame[4] << 8) | frame[5]) != len(frame):
            return None
        return (frame[0] << 8) | frame[1]

    def reply_id(self, reply: bytes) -> int | None:
        return (reply[0] << 8) | reply[1] if len(reply) >= 2 else None

    def with_request_id(self, frame: bytes, request_id: int) -> bytes:
        return request_id.to_bytes(2, "big") + frame[2:]

    @staticmethod
    def _first_adu(frame: bytes) -> bytes:
        """The ADU the MBAP length delimits: bytes past it are the next request in the stream."""
        if len(frame) >= 6:
            end = 6 + ((frame[4] << 8) | frame[5])
            if HEADER_SIZE + 1 <= end < len(frame):
                return frame[:end]
        return frame

    def check_request(self, frame: bytes) -> list[str]:
        frame = self._first_adu(frame)
        n = len(frame)
        if n < HEADER_SIZE + 1:
            return [f"{n}-byte frame is shorter than an MBAP header and function code (8 bytes)"]
        _, protocol_id, length, _, code = _MBAP_STRUCT.unpack_from(frame)
        problems: list[str] = []
        if length != n - 6:
            problems.append(f"length={length} but {n - 6} bytes follow it")
        if n > MAX_ADU:
            problems.append(f"ADU of {n} bytes exceeds the {MAX_ADU}-byte maximum")
        func = _lookup(frame)
        if func is None:
            if protocol_id:
                problems.append(f"protocol_id={protocol_id} is not 0 (MODBUS)")
            undefined = _undefined_code(code)
            if undefined:
                problems.append(undefined)
            return problems
        message = func.message
        try:
            values, end = func.decoder.decode_prefix(frame)
        except DecodeError as exc:
            return [*problems, f"{message.name} truncated: {exc}", *func.decoder.partial_violations(frame)]
        if end != n:
            problems.append(f"{n - end} trailing bytes after the {message.name} request")
        problems += func.decoder.violations(values)
        return problems

    def _answered_adu(self, frame: bytes, reply: bytes) -> bytes:
        """The ADU of `frame` a reply answers: the first one, unless another that followed in the same
        stream carries the reply's transaction id, unit and function code and the first does not (a
        target that drops the first, say for its foreign protocol id, and answers the next is right)."""
        first = self._first_adu(frame)
        if len(first) == len(frame) or len(reply) <= HEADER_SIZE:
            return first

        def answers(adu: bytes) -> bool:
            return len(adu) > HEADER_SIZE and adu[:2] == reply[:2] and adu[6] == reply[6] and adu[7] == reply[7] & 0x7F

        if answers(first):
            return first
        later, rest = self.split_messages(frame[len(first):])
        same_id = [adu for adu in (*later, rest) if adu[:2] == reply[:2]]
        match = next((adu for adu in same_id if answers(adu)), None)
        if match is not None:
            return match
        if same_id and first[:2] != reply[:2]:
            return same_id[0]  # only a later one has its transaction id: judged against that one
        return first

    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        request = self._answered_adu(request, reply)
        n = len(reply)
        if n < HEADER_SIZE + 2:
            return ReplyVerdict(ReplyKind.MALFORMED, f"reply of {n} bytes is too short for any Modbus/TCP reply")
        tid, protocol_id, length, unit, code = _MBAP_STRUCT.unpack_from(reply)
        if length != n - 6:
            return ReplyVerdict(ReplyKind.MALFORMED, f"wrong length field: length={length} but {n - 6} bytes follow")
        if protocol_id:
            return ReplyVerdict(ReplyKind.MALFORMED, f"protocol id {protocol_id} in reply, not 0")
        if len(request) >= 2 and reply[:2] != request[:2]:
            return ReplyVerdict(ReplyKind.MALFORMED, f"wrong transaction id {tid}, request had {int.from_bytes(request[:2], 'big')}")
        if len(request) >= HEADER_SIZE and unit != request[6]:
            return ReplyVerdict(ReplyKind.MALFORMED, f"wrong unit id {unit}, request had {request[6]}")
        asked = request[HEADER_SIZE] if len(request) > HEADER_SIZE else None
        if code & 0x80:
            return self._classify_exception(request, reply, asked, code)
        if code != asked:
            return ReplyVerdict(ReplyKind.MALFORMED, f"function code echo wrong: 0x{code:02x} answers a request with {_fc_text(asked)}")
        func = _lookup(request)
        if func is None:
            return ReplyVerdict(ReplyKind.NORMAL, f"fc 0x{code:02x} reply (no declared layout)")
        values: dict[str, Any] | None
        try:
            values, end = func.decoder.decode_prefix(request)
        except DecodeError:
            values, end = None, len(request)
        fault = func.check_reply(func, values, request, reply)
        judged = request
        if fault is not None and end < len(request):
            # Trailing bytes: a lenient server may read the request's fields and ignore the rest
            # (the request's spec violation, reported as such); a reply that answers what it read
            # is a correct reply to that.
            read = _with_length(request[:end])
            again = func.check_reply(func, values, read, reply)
            if again is None or again.content_only:
                fault, judged = again, read  # the right shape for what it read; its content is judged below
        if fault is None:
            return ReplyVerdict(ReplyKind.NORMAL, func.title)
        if fault.content_only and self.check_request(judged):
            # The request was invalid and the target acted on it anyway: the engine reports the
            # spec violation; calling the reply malformed would hide that.
            return ReplyVerdict(ReplyKind.NORMAL, fault.text)
        return ReplyVerdict(ReplyKind.MALFORMED, fault.text)

    def _classify_exception(self, request: bytes, reply: bytes, asked: int | None, code: int) -> ReplyVerdict:
        if len(reply) == HEADER_SIZE + 2:  # the only size an exception reply has (most replies to fuzzing are these)
            detail = _exception_detail(reply[HEADER_SIZE + 1])
        else:
            values, _ = _decode_reply(_EXCEPTION_REPLY, reply)
            if values is None:
                return ReplyVerdict(ReplyKind.MALFORMED, f"exception reply of {len(reply)} bytes, not {HEADER_SIZE + 2}")
            detail = _exception_detail(values["exception_code"])
        if asked is not None and code == asked | 0x80:
            return ReplyVerdict(ReplyKind.EXCEPTION, detail)
        # pymodbus answers requests its decoder refuses with fc 0x80: a rejection, not a fault.
        if code == 0x80 and (asked is None or _lookup(request) is None or self.check_request(request)):
            return ReplyVerdict(ReplyKind.EXCEPTION, f"{detail} (fc 0x80: request not decodable)")
        return ReplyVerdict(ReplyKind.MALFORMED, f"function code echo wrong: exception 0x{code:02x} answers a request with {_fc_text(asked)}")

    def is_write(self, frame: bytes) -> bool:
        """Conservative: anything that might change the device, including frames hidden behind a
        short MBAP length (the target parses the remainder as the next request)."""
        offset = 0
        for _ in range(64):
            if len(frame) - offset <= HEADER_SIZE:
                return False
            part = frame[offset:]
            if _may_write(part):
                return True
            length = int.from_bytes(part[4:6], "big")
            if length < 2 or length > MAX_LENGTH:
                return False
            offset += 6 + length
        return True

    def request_type(self, frame: bytes) -> str | None:
        """The declared function (and sub-function) the first ADU's function code selects."""
        if len(frame) <= HEADER_SIZE:
            return None
        func = _lookup(self._first_adu(frame))
        if func is not None:
            return func.message.name
        code = frame[HEADER_SIZE]
        return f"{'user_defined' if code in USER_DEFINED else 'undefined'}_function_0x{code:02x}"

    def reply_values(self, request: bytes, reply: bytes) -> list[int]:
        """Register values of read replies (fc 3, 4, 23) and the address a write echoes."""
        if len(reply) < HEADER_SIZE + 2 or reply[HEADER_SIZE] & 0x80:
            return []
        code = reply[HEADER_SIZE]
        if code in (3, 4, 23):
            data = reply[HEADER_SIZE + 2 :]
            return list(dict.fromkeys(int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data) - 1, 2)))[:16]
        if code in (5, 6, 15, 16) and len(reply) >= HEADER_SIZE + 3:
            return [int.from_bytes(reply[HEADER_SIZE + 1 : HEADER_SIZE + 3], "big")]
        return []

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        """Values the specification gives a meaning: coil states, diagnostics data, MEI types,
        device identification object ids and codes, file record reference types."""
        return {
            "value": [0x0000, 0xFF00],
            "sub_function": sorted(_DIAGNOSTIC_NAMES),
            "data": [0x0000, 0xFF00, 0xA537],
            "mei_type": [0x0D, 0x0E],
            "read_device_id_code": [1, 2, 3, 4],
            "object_id": [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x80, 0xFF],
            "reference_type": [6],
            "function_code": [1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43, 90],
            "unit_id": [0, 1, 247, 255],
            "and_mask": [0x0000, 0xFFFF, 0xF2F2],
            "or_mask": [0x0000, 0xFFFF, 0x0025],
        }

    def stress_flood(self) -> tuple[bytes, str] | None:
        """Diagnostics 8/0 (return query data): Modbus's own loopback test."""
        return _BY_SUB[(8, 0)].message.encode(transaction_id=1, unit_id=self.options["unit"]), "diagnostics/return_query_data"

    def describe(self, frame: bytes) -> str:
        if len(frame) <= HEADER_SIZE:
            return f"{len(frame)}-byte fragment {frame.hex()}"
        code = frame[HEADER_SIZE]
        func = _lookup(frame)
        if func is None:
            kind = "user-defined" if code in USER_DEFINED else "undefined"
            return f"{kind} function code 0x{code:02x}, unit {frame[6]}, {len(frame)} bytes"
        try:
            values, _ = func.decoder.decode_prefix(frame)
        except DecodeError:
            return f"{func.title} (fc {code}), truncated at {len(frame)} bytes"
        shown = []
        for f in func.message.fields[5:]:
            if isinstance(f, Length):
                continue
            value = values[f.name]
            if isinstance(value, bytes):
                shown.append(f"{f.name}={value[:16].hex()}{'...' if len(value) > 16 else ''}")
            else:
                shown.append(f"{f.name}={value}")
        return f"{func.title} (fc {code}) unit {values['unit_id']}" + (": " + " ".join(shown) if shown else "")


def _fc_text(code: int | None) -> str:
    return "no function code" if code is None else f"fc 0x{code:02x}"


def _may_write(frame: bytes) -> bool:
    code = frame[HEADER_SIZE]
    if code in USER_DEFINED or code in RESERVED:
        return True  # unknown semantics: never assume a vendor code is harmless
    func = _lookup(frame)
    if func is None:
        return False  # undefined codes and exception-bit codes have no effect on a conforming device
    return func.writes or func.disruptive
