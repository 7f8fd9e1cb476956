"""DNP3 (IEEE 1815) over TCP, master side, sans-IO.

Covered: the data link layer (start octets 05 64, length 5..255, control with DIR/PRM/FCB/FCV and
the primary/secondary function codes, little-endian destination and source, CRC-16/DNP after the
8-octet header and after every 16-octet block of user data), the transport function (FIN, FIR,
6-bit sequence; reassembly), and the application layer: application control (FIR, FIN, CON,
UNS, 4-bit sequence), request and response function codes, IIN, and object headers with every
standard qualifier (start-stop 8/16/32-bit, all objects, counts 8/16/32-bit, index prefixes).
Object data sizes are known for the objects a master writes or commands (g12, g41, g50, g80...).

Templates are whole link frames declared with the message model: the link header, the header
CRC, the transport octet, the application fragment and one `Checksum` field after every 16
octets of user data. Every field of a template is fixed-width, so the block boundaries do not
move when the boundary strategy changes a value, and the model recomputes every CRC: an
application field can be fuzzed while the outer layers stay valid. (The declaration refuses a
field that would straddle a block boundary.) `repair` re-frames a mutated frame the same way.

Sequence numbers are relative in generated frames: templates carry transport and application
sequence 0, and `DNP3Session.prepare` adds the connection's counters (fixing the CRC of the
block it touched while keeping a deliberately wrong CRC wrong), so a fuzzed frame stays in
sequence and a multi-segment fault keeps its relative order ("repeated sequence" stays
repeated). The session frames replies, answers the outstation's link-status requests, confirms
responses that ask for it, confirms and drops unsolicited responses, and returns as the reply to
a request the link frames of the whole solicited response whose sequence matches it (all
fragments of a multi-fragment response). A second or late answer to an earlier request fragment
(a frame may carry several) is dropped; any other response with a foreign sequence is not a
reply: it is kept for `leftover`, where the engine reports it as a malformed answer (dnp3py, for
one, answers an unparseable request with sequence 0). A malformed link frame (bad CRC, bad
length, garbage) is handed over as the reply so the classifier reports it.
Nothing here opens a socket or reads a clock.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from otfuzz.errors import OtfuzzError
from otfuzz.protocols.base import OptionSpec, Probe, Protocol, ReplyKind, ReplyVerdict, Session, Template, distinct_faults
from otfuzz.protocols.model import Bytes, Checksum, Field, Length, MessageType, UInt

# -- CRC ------------------------------------------------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA6BC if crc & 1 else crc >> 1  # 0x3D65 reflected
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc_dnp(data: bytes) -> int:
    """CRC-16/DNP: polynomial 0x3D65, reflected, init 0, final XOR 0xFFFF (check 0xEA82)."""
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


# -- constants ------------------------------------------------------------------------------

START = 0x0564
HEADER_SIZE = 10  # start, length, control, destination, source, CRC
BLOCK = 16
MAX_USER_DATA = 250  # length 255 - 5
MAX_SEGMENT_DATA = MAX_USER_DATA - 1  # after the transport octet
MIN_MAX_FRAGMENT = 249  # the smallest fragment size every device must accept

DIR, PRM, FCB, FCV = 0x80, 0x40, 0x20, 0x10
RESET_LINK_STATES, TEST_LINK_STATES, CONFIRMED_USER_DATA, UNCONFIRMED_USER_DATA = 0, 2, 3, 4
REQUEST_LINK_STATUS = 9
ACK, NACK, LINK_STATUS, NOT_SUPPORTED = 0, 1, 11, 15
PRIMARY_FUNCTIONS: Mapping[int, str] = MappingProxyType(
    {0: "RESET_LINK_STATES", 2: "TEST_LINK_STATES", 3: "CONFIRMED_USER_DATA", 4: "UNCONFIRMED_USER_DATA", 9: "REQUEST_LINK_STATUS"}
)
SECONDARY_FUNCTIONS: Mapping[int, str] = MappingProxyType({0: "ACK", 1: "NACK", 11: "LINK_STATUS", 15: "NOT_SUPPORTED"})
LINK_ANSWERED = frozenset({RESET_LINK_STATES, TEST_LINK_STATES, REQUEST_LINK_STATUS})
# What the master's secondary station answers to the outstation's primary link functions.
LINK_REPLIES: Mapping[int, int] = MappingProxyType(
    {REQUEST_LINK_STATUS: LINK_STATUS, RESET_LINK_STATES: ACK, TEST_LINK_STATES: ACK, CONFIRMED_USER_DATA: ACK}
)
BROADCAST = frozenset({0xFFFD, 0xFFFE, 0xFFFF})
RESERVED_ADDRESSES = range(0xFFF0, 0xFFFD)

TH_FIN, TH_FIR = 0x80, 0x40
AC_FIR, AC_FIN, AC_CON, AC_UNS = 0x80, 0x40, 0x20, 0x10

FUNCTIONS: Mapping[int, str] = MappingProxyType(
    {
        0: "CONFIRM", 1: "READ", 2: "WRITE", 3: "SELECT", 4: "OPERATE", 5: "DIRECT_OPERATE", 6: "DIRECT_OPERATE_NR",
        7: "IMMED_FREEZE", 8: "IMMED_FREEZE_NR", 9: "FREEZE_CLEAR", 10: "FREEZE_CLEAR_NR", 11: "FREEZE_AT_TIME",
        12: "FREEZE_AT_TIME_NR", 13: "COLD_RESTART", 14: "WARM_RESTART", 15: "INITIALIZE_DATA",
        16: "INITIALIZE_APPL", 17: "START_APPL", 18: "STOP_APPL", 19: "SAVE_CONFIG", 20: "ENABLE_UNSOLICITED",
        21: "DISABLE_UNSOLICITED", 22: "ASSIGN_CLASS", 23: "DELAY_MEASURE", 24: "RECORD_CURRENT_TIME",
        25: "OPEN_FILE", 26: "CLOSE_FILE", 27: "DELETE_FILE", 28: "GET_FILE_INFO", 29: "AUTHENTICATE_FILE",
        30: "ABORT_FILE", 31: "ACTIVATE_CONFIG", 32: "AUTHENTICATE_REQ", 33: "AUTH_REQ_NO_ACK",
        129: "RESPONSE", 130: "UNSOLICITED_RESPONSE", 131: "AUTHENTICATE_RESP",
    }
)  # fmt: skip
CONFIRM, READ, WRITE, SELECT, OPERATE, DIRECT_OPERATE = 0, 1, 2, 3, 4, 5
RESPONSE, UNSOLICITED_RESPONSE, AUTHENTICATE_RESP = 129, 130, 131
REQUEST_FUNCTIONS = frozenset(range(0, 34))
NO_RESPONSE = frozenset({0, 6, 8, 10, 12, 33})  # never answered by the outstation
READ_ONLY = frozenset({0, 1, 23})  # cannot change the outstation's state
HEADERS_ONLY = frozenset({1, 7, 8, 9, 10, 20, 21, 22})  # object headers without object data
WITH_DATA = frozenset({2, 3, 4, 5, 6, 11, 12})
NO_OBJECTS = frozenset({0, 13, 14, 23, 24})

IIN1: Mapping[int, str] = MappingProxyType(
    {0x01: "BROADCAST", 0x02: "CLASS_1_EVENTS", 0x04: "CLASS_2_EVENTS", 0x08: "CLASS_3_EVENTS", 0x10: "NEED_TIME",
     0x20: "LOCAL_CONTROL", 0x40: "DEVICE_TROUBLE", 0x80: "DEVICE_RESTART"}
)  # fmt: skip
IIN2: Mapping[int, str] = MappingProxyType(
    {0x01: "NO_FUNC_CODE_SUPPORT", 0x02: "OBJECT_UNKNOWN", 0x04: "PARAMETER_ERROR", 0x08: "EVENT_BUFFER_OVERFLOW",
     0x10: "ALREADY_EXECUTING", 0x20: "CONFIG_CORRUPT", 0x40: "RESERVED_2", 0x80: "RESERVED_1"}
)  # fmt: skip
IIN2_REJECTIONS = 0x01 | 0x02 | 0x04 | 0x10
IIN2_RESERVED = 0xC0

CONTROL_STATUS: Mapping[int, str] = MappingProxyType(
    {0: "SUCCESS", 1: "TIMEOUT", 2: "NO_SELECT", 3: "FORMAT_ERROR", 4: "NOT_SUPPORTED", 5: "ALREADY_ACTIVE",
     6: "HARDWARE_ERROR", 7: "LOCAL", 8: "TOO_MANY_OBJS", 9: "NOT_AUTHORIZED", 10: "AUTOMATION_INHIBIT",
     11: "PROCESSING_LIMITED", 12: "OUT_OF_RANGE", 13: "DOWNSTREAM_LOCAL", 14: "ALREADY_COMPLETE", 15: "BLOCKED",
     16: "CANCELLED", 17: "BLOCKED_OTHER_MASTER", 18: "DOWNSTREAM_FAIL", 126: "NON_PARTICIPATING", 127: "UNDEFINED"}
)  # fmt: skip

# Qualifier = prefix code (bits 4-6) + range specifier code (bits 0-3); bit 7 reserved.
RANGE_FIELDS: Mapping[int, tuple[tuple[str, int], ...]] = MappingProxyType(
    {
        0x0: (("start", 1), ("stop", 1)), 0x1: (("start", 2), ("stop", 2)), 0x2: (("start", 4), ("stop", 4)),
        0x3: (("start", 1), ("stop", 1)), 0x4: (("start", 2), ("stop", 2)), 0x5: (("start", 4), ("stop", 4)),
        0x6: (), 0x7: (("count", 1),), 0x8: (("count", 2),), 0x9: (("count", 4),), 0xB: (("count", 1),),
    }
)  # fmt: skip
PREFIX_SIZES: Mapping[int, int] = MappingProxyType({0: 0, 1: 1, 2: 2, 3: 4, 4: 1, 5: 2, 6: 4})
QUALIFIERS: Mapping[int, str] = MappingProxyType(
    {0x00: "start-stop 8", 0x01: "start-stop 16", 0x02: "start-stop 32", 0x06: "all objects", 0x07: "count 8",
     0x08: "count 16", 0x09: "count 32", 0x17: "index 8 count 8", 0x28: "index 16 count 16",
     0x39: "index 32 count 32", 0x5B: "free format"}
)  # fmt: skip
DEFINED_GROUPS = frozenset(
    {0, 1, 2, 3, 4, 10, 11, 12, 13, 20, 21, 22, 23, 30, 31, 32, 33, 34, 40, 41, 42, 43, 50, 51, 52, 60, 70, 80, 81,
     82, 83, 85, 86, 87, 88, 90, 91, 100, 101, 102, 110, 111, 112, 113, 120, 121, 122}
)  # fmt: skip
# Octets per object of the objects a master sends data for; "bits" are packed one bit each.
OBJECT_SIZES: Mapping[tuple[int, int], int | str] = MappingProxyType(
    {
        (10, 1): "bits", (12, 1): 11, (12, 2): 11, (12, 3): "bits", (34, 1): 2, (34, 2): 4, (34, 3): 4,
        (41, 1): 5, (41, 2): 3, (41, 3): 5, (41, 4): 9, (50, 1): 6, (50, 2): 10, (50, 3): 6, (50, 4): 11,
        (52, 1): 2, (52, 2): 2, (80, 1): "bits",
    }
)  # fmt: skip
CONTROL_GROUPS = frozenset({12, 41})
# Defined variations of the common groups (0 = any variation, in reads); others are not judged.
DEFINED_VARIATIONS: Mapping[int, range] = MappingProxyType(
    {1: range(0, 3), 2: range(0, 4), 3: range(0, 3), 4: range(0, 4), 10: range(0, 3), 11: range(0, 3), 12: range(1, 4),
     13: range(1, 3), 20: range(0, 9), 21: range(0, 13), 22: range(0, 9), 23: range(0, 9), 30: range(0, 7),
     31: range(0, 9), 32: range(0, 9), 33: range(0, 9), 34: range(0, 4), 40: range(0, 5), 41: range(1, 5),
     42: range(0, 9), 43: range(0, 9), 50: range(1, 5), 51: range(1, 3), 52: range(1, 3), 60: range(1, 5), 80: range(1, 2)}
)  # fmt: skip


# -- declarations ---------------------------------------------------------------------------

LINK_HEADER = MessageType(
    "link_header",
    [
        UInt("start_octets", 16, default=START, enum={START: "05 64"}),
        UInt("length", 8, default=5, minimum=5),  # counts user data outside this declaration
        UInt("control", 8, default=DIR | PRM | UNCONFIRMED_USER_DATA),
        UInt("destination", 16, "little", default=1),
        UInt("source", 16, "little", default=2),
        Checksum("header_crc", 16, "little", covers=("start_octets", "length", "control", "destination", "source"), function=crc_dnp),
    ],
    doc="the 10-octet link header",
)
DATA_BLOCK = MessageType(
    "link_data_block",
    [Bytes("data", max_size=BLOCK), Checksum("data_crc", 16, "little", covers=("data",), function=crc_dnp)],
    doc="up to 16 octets of user data and their CRC",
)


def link_frame(user_data: bytes, *, destination: int, source: int, control: int = DIR | PRM | UNCONFIRMED_USER_DATA) -> bytes:
    """A link frame carrying `user_data` (at most 250 octets), with every CRC computed."""
    if len(user_data) > MAX_USER_DATA:
        raise ValueError(f"{len(user_data)} octets of user data do not fit one link frame (max {MAX_USER_DATA})")
    header = LINK_HEADER.encode(length=5 + len(user_data), control=control, destination=destination, source=source)
    return header + b"".join(DATA_BLOCK.encode(data=user_data[i : i + BLOCK]) for i in range(0, len(user_data), BLOCK))


def segments(fragment: bytes, *, destination: int, source: int, sequence: int = 0, size: int = MAX_SEGMENT_DATA) -> bytes:
    """An application fragment as consecutive transport segments in link frames."""
    chunks = [fragment[i : i + size] for i in range(0, len(fragment), size)] or [b""]
    out = bytearray()
    for n, chunk in enumerate(chunks):
        octet = (TH_FIR if n == 0 else 0) | (TH_FIN if n == len(chunks) - 1 else 0) | ((sequence + n) & 0x3F)
        out += link_frame(bytes([octet]) + chunk, destination=destination, source=source)
    return bytes(out)


def frame_size(length: int) -> int:
    """Octets on the wire of a link frame whose length field is `length` (>= 5)."""
    user = length - 5
    return HEADER_SIZE + user + 2 * ((user + BLOCK - 1) // BLOCK)


def _frame_type(name: str, app: Sequence[UInt], *, outstation: int, master: int, function: int = UNCONFIRMED_USER_DATA,
                doc: str = "") -> MessageType:
    """A whole link frame around `app`, with a Checksum field after every 16 octets of user data."""
    user: list[UInt] = [UInt("transport", 8, default=TH_FIR | TH_FIN), *app] if app else []
    fields: list[Field] = [
        UInt("start_octets", 16, default=START, enum={START: "05 64"}),
        Length("length", 8, covers=("control", "destination", "source", *(f.name for f in user)), minimum=5, maximum=255),
        UInt("control", 8, default=DIR | PRM | function),
        UInt("destination", 16, "little", default=outstation),
        UInt("source", 16, "little", default=master),
        Checksum("header_crc", 16, "little", covers=("start_octets", "length", "control", "destination", "source"), function=crc_dnp),
    ]
    block: list[str] = []
    used = blocks = 0
    for f in user:
        if used + f.width > BLOCK:
            raise ValueError(f"{name}: field {f.name} would straddle a 16-octet CRC block")
        fields.append(f)
        block.append(f.name)
        used += f.width
        if used == BLOCK or f is user[-1]:
            fields.append(Checksum(f"block_{blocks}_crc", 16, "little", covers=tuple(block), function=crc_dnp))
            block, used, blocks = [], 0, blocks + 1
    return MessageType(name, fields, doc=doc)


def _application(function: int, objects: Sequence[UInt] = ()) -> list[UInt]:
    return [
        UInt("app_control", 8, default=AC_FIR | AC_FIN),
        UInt("function", 8, default=function, enum={k: v for k, v in FUNCTIONS.items() if k < RESPONSE}),
        *objects,
    ]


def _object(n: int, group: int, variation: int, qualifier: int, **ranges: int) -> list[UInt]:
    """An object header; `n` > 1 suffixes the field names so several headers fit one message."""
    sfx = "" if n == 1 else f"_{n}"
    fields = [
        UInt(f"group{sfx}", 8, default=group),
        UInt(f"variation{sfx}", 8, default=variation),
        UInt(f"qualifier{sfx}", 8, default=qualifier, enum=QUALIFIERS),
    ]
    for name, width in RANGE_FIELDS[qualifier & 0x0F]:
        fields.append(UInt(f"{name}{sfx}", 8 * width, "little", default=ranges[name]))
    return fields


def _classes(*variations: int) -> list[UInt]:
    return [f for n, v in enumerate(variations, start=1) for f in _object(n, 60, v, 0x06)]


def _crob(group_variation_qualifier: tuple[int, int, int] = (12, 1, 0x28)) -> list[UInt]:
    """One control relay output block, index 0, LATCH_ON, 100 ms on/off."""
    return [
        *_object(1, *group_variation_qualifier, count=1),
        UInt("index", 16, "little"),
        UInt("control_code", 8, default=0x03),  # op type 1..4 PULSE_ON/OFF LATCH_ON/OFF, TCC bits 6-7
        UInt("op_count", 8, default=1),
        UInt("on_time", 32, "little", default=100),
        UInt("off_time", 32, "little", default=100),
        UInt("status", 8, enum=CONTROL_STATUS),
    ]


def _analog_output(variation: int) -> list[UInt]:
    """One analog output block (g41v1 int32 or g41v2 int16), index 0, value 42."""
    bits = {1: 32, 2: 16}[variation]
    return [*_object(1, 41, variation, 0x28, count=1), UInt("index", 16, "little"), UInt("value", bits, "little", default=42),
            UInt("status", 8, enum=CONTROL_STATUS)]


_TIME_2024 = 1_704_067_200_000  # 2024-01-01T00:00:00Z in ms: templates carry a fixed time, no clock here


@dataclass(frozen=True)
class _Kind:
    name: str
    function: int
    objects: tuple[UInt, ...] = ()
    writes: bool = False
    disruptive: bool = False
    link_function: int = UNCONFIRMED_USER_DATA


def _kinds() -> tuple[_Kind, ...]:
    time_and_date = (*_object(1, 50, 1, 0x07, count=1), UInt("time_low", 32, "little", default=_TIME_2024 & 0xFFFFFFFF),
                     UInt("time_high", 16, "little", default=_TIME_2024 >> 32))
    return (
        _Kind("read_class_0", READ, tuple(_classes(1))),
        _Kind("read_class_1", READ, tuple(_classes(2))),
        _Kind("read_class_2", READ, tuple(_classes(3))),
        _Kind("read_class_3", READ, tuple(_classes(4))),
        _Kind("integrity_poll", READ, tuple(_classes(2, 3, 4, 1))),
        _Kind("read_binary_inputs", READ, tuple(_object(1, 1, 2, 0x00, start=0, stop=4))),
        _Kind("read_binary_inputs_all", READ, tuple(_object(1, 1, 0, 0x06))),
        _Kind("read_analog_inputs", READ, tuple(_object(1, 30, 0, 0x01, start=0, stop=4))),
        _Kind("read_counters", READ, tuple(_object(1, 20, 0, 0x06))),
        _Kind("write_time_and_date", WRITE, time_and_date, writes=True),
        _Kind("clear_restart_bit", WRITE, (*_object(1, 80, 1, 0x00, start=7, stop=7), UInt("iin_bit", 8)), writes=True),
        _Kind("select_crob", SELECT, tuple(_crob()), writes=True),
        _Kind("operate_crob", OPERATE, tuple(_crob()), writes=True),
        _Kind("direct_operate_crob", DIRECT_OPERATE, tuple(_crob()), writes=True),
        _Kind("select_analog_output", SELECT, tuple(_analog_output(1)), writes=True),
        _Kind("operate_analog_output", OPERATE, tuple(_analog_output(1)), writes=True),
        _Kind("direct_operate_analog_output", DIRECT_OPERATE, tuple(_analog_output(1)), writes=True),
        _Kind("direct_operate_analog_output_16", DIRECT_OPERATE, tuple(_analog_output(2)), writes=True),
        _Kind("immediate_freeze", 7, tuple(_object(1, 20, 0, 0x06)), writes=True),
        _Kind("enable_unsolicited", 20, tuple(_classes(2, 3, 4)), writes=True),
        _Kind("disable_unsolicited", 21, tuple(_classes(2, 3, 4)), writes=True),
        _Kind("cold_restart", 13, writes=True, disruptive=True),
        _Kind("warm_restart", 14, writes=True, disruptive=True),
        _Kind("delay_measurement", 23),
        _Kind("confirm", CONFIRM),
        _Kind("request_link_status", -1, link_function=REQUEST_LINK_STATUS),
    )


# A small object header used by faults that need a range the template does not carry.
OBJECT_START_STOP_8 = MessageType("object_header_start_stop_8", _object(1, 1, 0, 0x00, start=0, stop=0))


# -- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LinkFrame:
    """One link frame as received; `problems` lists CRC and length faults (user data is taken
    as it stands, so a frame with a bad data CRC can still be described)."""

    raw: bytes
    control: int
    destination: int
    source: int
    user_data: bytes
    problems: tuple[str, ...] = ()

    @property
    def primary(self) -> bool:
        return bool(self.control & PRM)

    @property
    def function(self) -> int:
        return self.control & 0x0F


def _read_frame(data: bytes, pos: int) -> LinkFrame | None:
    """The link frame at `pos`, or None when no whole frame starts there."""
    if len(data) - pos < HEADER_SIZE or data[pos] != 0x05 or data[pos + 1] != 0x64:
        return None
    length = data[pos + 2]
    if length < 5:
        return None
    size = frame_size(length)
    if pos + size > len(data):
        return None
    raw = bytes(data[pos : pos + size])
    problems: list[str] = []
    if crc_dnp(raw[:8]) != int.from_bytes(raw[8:10], "little"):
        problems.append("header CRC wrong")
    user = bytearray()
    at, block = HEADER_SIZE, 0
    while at < size:
        chunk = raw[at : min(at + BLOCK, size - 2)]
        if crc_dnp(chunk) != int.from_bytes(raw[at + len(chunk) : at + len(chunk) + 2], "little"):
            problems.append(f"CRC of data block {block} wrong")
        user += chunk
        at += len(chunk) + 2
        block += 1
    return LinkFrame(raw, raw[3], int.from_bytes(raw[4:6], "little"), int.from_bytes(raw[6:8], "little"), bytes(user), tuple(problems))


def split_link_frames(data: bytes) -> tuple[list[LinkFrame], bytes]:
    """Frame `data` by the length fields: the link frames and the bytes that do not frame."""
    frames: list[LinkFrame] = []
    pos = 0
    while True:
        frame = _read_frame(data, pos)
        if frame is None:
            return frames, bytes(data[pos:])
        frames.append(frame)
        pos += len(frame.raw)


def reassemble(frames: Sequence[LinkFrame]) -> tuple[list[bytes], list[str]]:
    """Application fragments from the user data of `frames`, and every transport fault seen."""
    fragments: list[bytes] = []
    problems: list[str] = []
    current: bytearray | None = None
    expected = 0
    for n, frame in enumerate(frames, start=1):
        if not frame.user_data:
            continue
        octet = frame.user_data[0]
        seq = octet & 0x3F
        if octet & TH_FIR:
            if current is not None:
                problems.append(f"segment {n}: FIR while a fragment was unfinished")
            current = bytearray()
        elif current is None:
            problems.append(f"segment {n}: no FIR and no fragment in progress")
            continue
        elif seq != expected:
            problems.append(f"segment {n}: transport sequence {seq}, expected {expected}")
            current = None
            continue
        current += frame.user_data[1:]
        expected = (seq + 1) & 0x3F
        if octet & TH_FIN:
            fragments.append(bytes(current))
            current = None
    if current is not None:
        problems.append("last segment has no FIN: fragment unfinished")
    return fragments, problems


@dataclass(frozen=True)
class ObjectHeader:
    group: int
    variation: int
    qualifier: int
    count: int  # objects the range or count addresses (0 for "all objects")
    start: int | None = None
    stop: int | None = None
    statuses: tuple[int, ...] = ()  # status octets of control objects (g12, g41)

    def describe(self) -> str:
        where = f" {self.start}..{self.stop}" if self.start is not None else (f" x{self.count}" if self.count else "")
        return f"g{self.group}v{self.variation} q0x{self.qualifier:02x}{where}"


def parse_objects(data: bytes, function: int) -> tuple[list[ObjectHeader], list[str], bool]:
    """Walk the object headers (and object data where `function` carries data) of a fragment
    body. Returns the headers, the problems found, and whether the walk reached the end (False
    when an object of unknown size stopped it: no judgement is made past that point)."""
    headers: list[ObjectHeader] = []
    problems: list[str] = []
    pos = 0
    with_data = function in WITH_DATA or function in (RESPONSE, UNSOLICITED_RESPONSE)
    while pos < len(data):
        if len(data) - pos < 3:
            problems.append(f"object header truncated: {len(data) - pos} octet(s) left")
            return headers, problems, True
        group, variation, qualifier = data[pos], data[pos + 1], data[pos + 2]
        name = f"g{group}v{variation}"
        pos += 3
        prefix_code, range_code = (qualifier >> 4) & 0x07, qualifier & 0x0F
        if qualifier & 0x80:
            problems.append(f"{name}: qualifier 0x{qualifier:02x} has the reserved bit set")
        if prefix_code not in PREFIX_SIZES:
            problems.append(f"{name}: qualifier 0x{qualifier:02x} has undefined prefix code {prefix_code}")
            return headers, problems, True
        if range_code not in RANGE_FIELDS:
            problems.append(f"{name}: qualifier 0x{qualifier:02x} has undefined range code {range_code}")
            return headers, problems, True
        values: dict[str, int] = {}
        for field_name, width in RANGE_FIELDS[range_code]:
            if pos + width > len(data):
                problems.append(f"{name}: range field {field_name} truncated")
                return headers, problems, True
            values[field_name] = int.from_bytes(data[pos : pos + width], "little")
            pos += width
        start, stop = values.get("start"), values.get("stop")
        if start is not None and stop is not None:
            if stop < start:
                problems.append(f"{name}: range stop {stop} < start {start}")
                return headers, problems, True
            count = stop - start + 1
        else:
            count = values.get("count", 0)
            if "count" in values and count == 0:
                problems.append(f"{name}: count 0")
        if group not in DEFINED_GROUPS:
            problems.append(f"group {group} is not defined")
            return headers, problems, False
        defined = DEFINED_VARIATIONS.get(group)
        if defined is not None and variation not in defined:
            problems.append(f"{name}: variation {variation} of group {group} is not defined")
            return headers, problems, False
        size = OBJECT_SIZES.get((group, variation))
        statuses: list[int] = []
        if with_data and (group, variation) not in ((60, 1), (60, 2), (60, 3), (60, 4)) and range_code != 0x6:
            if size is None:
                headers.append(ObjectHeader(group, variation, qualifier, count, start, stop))
                return headers, problems, False
            if group in CONTROL_GROUPS and function in (SELECT, OPERATE, DIRECT_OPERATE, 6) and (
                prefix_code not in (1, 2, 3) or range_code not in (0x7, 0x8, 0x9)
            ):
                problems.append(f"{name}: control objects need an index-prefix qualifier (0x17, 0x28, 0x39), not 0x{qualifier:02x}")
            if size == "bits":
                need = (count + 7) // 8
                if pos + need > len(data):
                    problems.append(f"{name}: {need} octet(s) of packed bits truncated")
                    return headers, problems, True
                pos += need
            else:
                assert isinstance(size, int)
                per = PREFIX_SIZES[prefix_code] + size
                if count * per > len(data) - pos:
                    problems.append(f"{name}: {count} object(s) of {per} octets need {count * per}, {len(data) - pos} left")
                    return headers, problems, True
                for i in range(count):
                    at = pos + i * per
                    if group in CONTROL_GROUPS:
                        statuses.append(data[at + per - 1])
                    if (group, variation) == (12, 1) and function in (SELECT, OPERATE, DIRECT_OPERATE, 6):
                        code = data[at + PREFIX_SIZES[prefix_code]]
                        if code & 0x0F > 4 or code >> 6 == 3:
                            problems.append(f"{name}: control code 0x{code:02x} has an undefined operation type or TCC")
                pos += count * per
        elif prefix_code:
            per = PREFIX_SIZES[prefix_code]
            if prefix_code >= 4:
                problems.append(f"{name}: object-size prefix 0x{qualifier:02x} carries no data in {FUNCTIONS.get(function, function)}")
            if count * per > len(data) - pos:
                problems.append(f"{name}: {count} index prefix(es) truncated")
                return headers, problems, True
            pos += count * per
        headers.append(ObjectHeader(group, variation, qualifier, count, start, stop, tuple(statuses)))
    return headers, problems, True


def check_fragment(fragment: bytes, max_fragment: int) -> list[str]:
    """Specification violations of one application request fragment."""
    if len(fragment) < 2:
        return [f"application fragment of {len(fragment)} octet(s): no function code"]
    problems: list[str] = []
    control, function = fragment[0], fragment[1]
    if len(fragment) > max_fragment:
        problems.append(f"fragment of {len(fragment)} octets exceeds the outstation's {max_fragment}")
    if function not in REQUEST_FUNCTIONS:
        kind = "a response function" if function in FUNCTIONS else "not defined"
        return problems + [f"function code {function} is {kind}"]
    if control & (AC_FIR | AC_FIN) != AC_FIR | AC_FIN:
        problems.append(f"app control 0x{control:02x}: a request is one fragment (FIR and FIN set)")
    if control & AC_CON:
        problems.append(f"app control 0x{control:02x}: CON set in a request")
    # FCV/FCB on unconfirmed data and UNS in a request are wrong too, but nothing requires an
    # outstation to refuse them: they are faults to send, not violations to report.
    body = fragment[2:]
    if function in NO_OBJECTS:
        if body:
            problems.append(f"function {FUNCTIONS[function]}: carries no objects, {len(body)} octet(s) follow")
        return problems
    if function not in HEADERS_ONLY and function not in WITH_DATA:
        return problems  # file, application and security functions: objects not judged here
    if not body and function != READ:
        problems.append(f"function {FUNCTIONS[function]}: no objects")
    problems += parse_objects(body, function)[1]
    if function in (20, 21):
        headers = parse_objects(body, function)[0]
        if any(h.group != 60 or h.variation not in (2, 3, 4) for h in headers):
            problems.append("unsolicited control applies to class 1..3 data (g60v2..4) only")
    return problems


def _flags(value: int, names: Mapping[int, str]) -> list[str]:
    return [name for bit, name in names.items() if value & bit]


# -- session --------------------------------------------------------------------------------


@dataclass
class _Reassembly:
    frames: list[bytes] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)
    next_seq: int = 0


_ANY = -1  # a request that did not frame: any solicited response answers it


class DNP3Session(Session):
    """One master association on one TCP connection (module docstring)."""

    MAX_REASSEMBLY = 1 << 16  # a never-FIN response cannot grow the session without bound

    def __init__(self, outstation: int, master: int) -> None:
        super().__init__()
        self.outstation, self.master = outstation, master
        self.application_seq = 0  # of the next request
        self.transport_seq = 0  # of the next segment sent
        self.unsolicited = 0  # unsolicited responses received
        self._expected: int | None = None  # application sequence of the response awaited
        # Responses still owed per sequence number, for every request fragment sent: a late or
        # second answer to an earlier fragment is dropped instead of taken for a later reply.
        self._awaited: dict[int, int] = {}
        self._next_fragment: int | None = None  # sequence of the next fragment of a response
        self._awaiting_link = False  # a link-layer request waits for its secondary frame
        self._segments: _Reassembly | None = None
        self._response: list[bytes] = []  # frames of the fragments of a multi-fragment response
        self._replies: list[bytes] = []
        self._stray = bytearray()
        self._before: int | None = None  # sequence of the frame a sync request follows, still unanswered
        self._sync: int | None = None  # sequence of the sync request
        self._dangling = False  # ... ended in the start of a frame it does not complete
        self._control_at: int | None = None
        self._source = master  # the source address of the last link frame prepared

    # -- outgoing ---------------------------------------------------------------------------

    def prepare(self, frame: bytes) -> bytes:
        out = bytearray(frame)
        self._stray.clear()
        self._response.clear()
        t_base, a_base = self.transport_seq, self.application_seq
        last_t = last_a = None
        expected: int | None = None
        awaited: dict[int, int] = {}
        awaiting_link = framed = user_data = False
        source = self.master
        pos = 0
        while True:
            link = _read_frame(out, pos)
            if link is None:
                break
            framed = True
            source = link.source
            if link.primary and link.function in (CONFIRMED_USER_DATA, UNCONFIRMED_USER_DATA) and link.user_data:
                user_data = True
                at = pos + HEADER_SIZE
                first = min(BLOCK, len(link.user_data))
                delta = crc_dnp(bytes(out[at : at + first])) ^ int.from_bytes(out[at + first : at + first + 2], "little")
                octet = out[at]
                last_t = (t_base + (octet & 0x3F)) & 0x3F
                out[at] = (octet & 0xC0) | last_t
                if octet & TH_FIR and len(link.user_data) >= 3:
                    control, function = out[at + 1], out[at + 2]
                    if function != CONFIRM:
                        last_a = (a_base + (control & 0x0F)) & 0x0F
                        out[at + 1] = (control & 0xF0) | last_a
                        broadcast = link.destination in BROADCAST
                        expected = None if function in NO_RESPONSE or broadcast else last_a
                        if expected is not None:
                            awaited[last_a] = awaited.get(last_a, 0) + 1
                # keep a deliberately wrong CRC exactly as wrong as it was
                out[at + first : at + first + 2] = (crc_dnp(bytes(out[at : at + first])) ^ delta).to_bytes(2, "little")
            elif link.primary and link.function in LINK_ANSWERED:
                awaiting_link = True
            pos += len(link.raw)
        # bytes after the last whole frame that start one: the outstation waits for the rest
        self._dangling = bool(out[pos:]) and out[pos : pos + 2] == b"\x05\x64"[: len(out[pos : pos + 2])]
        self._control_at = out[HEADER_SIZE + 1] if len(out) > HEADER_SIZE + 1 else None  # where a fragment's control would be
        self._source = source  # of the last link frame
        if last_t is not None:
            self.transport_seq = (last_t + 1) & 0x3F
        if last_a is not None:
            self.application_seq = (last_a + 1) & 0x0F
        if last_a is None and (user_data or not framed):
            expected = _ANY  # no request fragment recognised: whatever the outstation answers is the answer
        self._expected = expected
        self._awaited.update(awaited)  # a reused sequence number forgets what it owed before
        self._awaiting_link = awaiting_link
        self._next_fragment = None
        self._before = self._sync = None
        return bytes(out)

    SYNC_OFFSET = 8
    """Application sequence numbers between a frame and its sync request: a multi-fragment
    answer to the frame counts up from the frame's own, and must not meet the sync's."""

    def prepare_sync(self, frame: bytes) -> bytes | None:
        """None behind bytes that end in the start of a frame they do not complete (the
        outstation would read the sync as its rest). Behind a link-layer request the answer
        awaited is a secondary link frame, which the sync's (a response) cannot be taken for:
        the link layer answers a frame before the next one reaches the application.

        Behind a frame that is owed no response, or that carries no request fragment otfuzz can
        read, any response but the sync's is the frame's; the sync's sequence number then also
        differs from the one a lenient outstation would read where a fragment's control octet
        would be.

        Behind a frame from another source address the sync comes from that address too. From
        the master, it would teach what the case did not: dnp3py learns its master from the
        first frame of a connection whose source is not 0, so after a frame from source 0 a
        sync from the master made replies to a later frame from source 1 go to the master,
        which no replay of the case (it carries no sync) reproduced. An outstation that drops
        frames from other sources drops this sync too: the wait is then the usual one."""
        before, awaiting_link = self._expected, self._awaiting_link
        if self._dangling:
            return None
        after = self.application_seq
        if before is None or before == _ANY:
            before = _ANY  # no response is owed (or any answers it): any but the sync's is the frame's
            seq = (after + self.SYNC_OFFSET) & 0x0F
            if self._control_at is not None and self._control_at & 0x0F == seq:
                seq = (seq + 1) & 0x0F
        else:
            seq, after = (before + self.SYNC_OFFSET) & 0x0F, (before + 1) & 0x0F
        if self._source != self.master:
            link = bytearray(frame[:HEADER_SIZE])
            link[6:8] = self._source.to_bytes(2, "little")
            link[8:10] = crc_dnp(bytes(link[:8])).to_bytes(2, "little")
            frame = bytes(link) + frame[HEADER_SIZE:]
        self.application_seq = seq
        out = self.prepare(frame)
        self._before, self._sync = before, self._expected
        self._awaiting_link = awaiting_link  # (the sync, a read, awaits none)
        self.application_seq = after  # the next request follows the frame, not the sync
        return out

    def is_sync_reply(self, reply: bytes) -> bool:
        seq = _response_seq(reply)
        if seq is None or seq != self._sync:
            return False
        self._before = self._sync = None  # (a late answer to the frame before is an earlier one's: dropped)
        self._awaiting_link = False
        return True

    def _confirm(self, sequence: int, unsolicited: bool) -> None:
        """Queue an application CONFIRM of the response (or unsolicited response) `sequence`."""
        octet = TH_FIR | TH_FIN | self.transport_seq
        self.transport_seq = (self.transport_seq + 1) & 0x3F
        control = AC_FIR | AC_FIN | (AC_UNS if unsolicited else 0) | (sequence & 0x0F)
        self._output += link_frame(bytes([octet, control, CONFIRM]), destination=self.outstation, source=self.master)

    # -- incoming ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while buf:
            if buf[0] != 0x05 or (len(buf) > 1 and buf[1] != 0x64):
                cut = buf.find(b"\x05\x64", 1)
                junk = bytes(buf[: cut if cut > 0 else len(buf)])
                del buf[: len(junk)]
                self._malformed(junk)
                continue
            if len(buf) < HEADER_SIZE:
                break
            if buf[2] < 5 or crc_dnp(bytes(buf[:8])) != int.from_bytes(buf[8:10], "little"):
                # the length cannot be trusted: everything received is the malformed answer
                self._malformed(bytes(buf))
                buf.clear()
                break
            link = _read_frame(buf, 0)
            if link is None:
                break  # incomplete
            del buf[: len(link.raw)]
            self._receive(link)

    def next_reply(self) -> bytes | None:
        return self._replies.pop(0) if self._replies else None

    def leftover(self) -> bytes:
        """Responses out of sequence and incomplete frames: what came back but answered nothing."""
        return bytes(self._stray) + bytes(self._buffer)

    def _malformed(self, raw: bytes) -> None:
        partial = b"".join(self._response) + (b"".join(self._segments.frames) if self._segments else b"")
        self._segments = None
        self._response = []
        self._expected, self._awaiting_link, self._next_fragment = None, False, None
        self._replies.append(partial + raw)

    def _receive(self, link: LinkFrame) -> None:
        if link.problems:
            self._malformed(link.raw)
            return
        if not link.primary:
            if self._awaiting_link:
                self._awaiting_link = False
                self._replies.append(link.raw)
            return
        function = link.function
        if function in LINK_REPLIES:
            self._output += LINK_HEADER.encode(control=DIR | LINK_REPLIES[function], destination=self.outstation, source=self.master)
        if function in (CONFIRMED_USER_DATA, UNCONFIRMED_USER_DATA) and link.user_data:
            self._segment(link)

    def _segment(self, link: LinkFrame) -> None:
        octet = link.user_data[0]
        seq = octet & 0x3F
        if octet & TH_FIR:
            if self._segments is not None:
                self._stray += b"".join(self._segments.frames)  # discarded by the new FIR
            self._segments = _Reassembly()
        elif self._segments is None or seq != self._segments.next_seq:
            self._malformed(link.raw)  # a segment no reassembly can take
            return
        parts = self._segments
        parts.frames.append(link.raw)
        parts.data += link.user_data[1:]
        parts.next_seq = (seq + 1) & 0x3F
        if len(parts.data) > self.MAX_REASSEMBLY:
            self._malformed(b"")
            return
        if octet & TH_FIN:
            self._segments = None
            self._fragment(parts.frames, bytes(parts.data))

    def _fragment(self, frames: list[bytes], fragment: bytes) -> None:
        if len(fragment) < 2:
            self._malformed(b"".join(frames))
            return
        control, function = fragment[0], fragment[1]
        seq = control & 0x0F
        if control & AC_UNS or function == UNSOLICITED_RESPONSE:
            self.unsolicited += 1
            if control & AC_CON:
                self._confirm(seq, unsolicited=True)
            return
        if control & AC_CON:
            self._confirm(seq, unsolicited=False)
        if self._next_fragment is not None and seq == self._next_fragment:
            pass  # the next fragment of the response being collected
        elif self._before is not None and (seq == self._before or self._before == _ANY and seq != self._sync):
            self._before = None  # the answer to the frame a sync request follows, before the sync's
            if self._awaited.get(seq):
                self._awaited[seq] -= 1
        elif self._expected is not None and (self._expected == _ANY or seq == self._expected):
            self._expected = None
            if self._awaited.get(seq):
                self._awaited[seq] -= 1
        elif self._awaited.get(seq):
            self._awaited[seq] -= 1  # a late or second answer to an earlier request fragment
            return
        else:
            self._stray += b"".join(frames)
            return
        self._response += frames
        if control & AC_FIN or function != RESPONSE:
            self._replies.append(b"".join(self._response))
            self._response = []
            self._next_fragment = None
        else:
            self._next_fragment = (seq + 1) & 0x0F


def _response_seq(reply: bytes) -> int | None:
    """The application sequence number of a response (its first frame's first segment)."""
    if len(reply) < HEADER_SIZE + 3 or reply[:2] != b"\x05\x64":
        return None
    return reply[HEADER_SIZE + 1] & 0x0F


# -- the protocol ---------------------------------------------------------------------------


class DNP3(Protocol):
    """DNP3 master: reads, writes, controls and restarts against one outstation."""

    name = "dnp3"
    schemes = ("dnp3",)
    default_port = 20000
    options_spec = {
        "outstation": OptionSpec("1", "link address of the outstation under test (0..65519)", int, 0, RESERVED_ADDRESSES.start - 1),
        "master": OptionSpec("2", "link address otfuzz uses as master (0..65519)", int, 0, RESERVED_ADDRESSES.start - 1),
        "max_fragment": OptionSpec("2048", "largest request fragment the outstation accepts, octets (>= 249)", int, MIN_MAX_FRAGMENT),
    }
    single_association = True
    probe_hint = "check ?outstation= (the outstation's link address) and ?master= (a master address it accepts)"
    liveness_note = (
        "class 0 read (g60v1) answered with a response free of IIN2 error bits within the deadline, sent on the fuzzing "
        "association or after it was closed, never beside it: a DNP3 outstation serves one master at a time and a "
        "second TCP connection would displace the first, so a failed probe is never caused by otfuzz itself"
    )

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        super().__init__(options, path)
        if self.options["outstation"] == self.options["master"]:
            raise OtfuzzError("dnp3: options outstation and master must differ")
        self.outstation, self.master = self.options["outstation"], self.options["master"]
        templates = []
        for kind in _kinds():
            app = _application(kind.function, kind.objects) if kind.function >= 0 else []
            message = _frame_type(kind.name, app, outstation=self.outstation, master=self.master, function=kind.link_function,
                                  doc=f"{FUNCTIONS.get(kind.function, PRIMARY_FUNCTIONS[kind.link_function])} in one link frame")
            values = {"destination": self.outstation, "source": self.master}
            templates.append(Template(kind.name, message, values, writes=kind.writes, disruptive=kind.disruptive,
                                      code=kind.function if kind.function >= 0 else None))
        self._templates = tuple(templates)
        self._probe = Probe(self._templates[0].encode(), f"class 0 read of outstation {self.outstation}")

    # -- what to send -----------------------------------------------------------------------

    def templates(self) -> Sequence[Template]:
        return self._templates

    def message_types(self) -> Sequence[MessageType]:
        return tuple(t.message for t in self._templates)

    def probe(self) -> Probe:
        return self._probe

    def probe_ok(self, reply: bytes) -> bool:
        return self.classify(self._probe.frame, reply).kind is ReplyKind.NORMAL

    def session(self) -> Session:
        return DNP3Session(self.outstation, self.master)

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        """CROB control codes (pulse on/off, latch on/off, close/trip, with queue and clear
        bits), object header qualifiers, application functions, defined groups."""
        codes = [0x01, 0x02, 0x03, 0x04, 0x41, 0x81, 0x10, 0x20, 0x00, 0x0F, 0xC1]
        qualifiers = sorted(QUALIFIERS)
        return {"control_code": codes, **{f"qualifier{n}": qualifiers for n in ("", "_2", "_3")}, "qualifier": qualifiers,
                "function": sorted(k for k in FUNCTIONS if k < RESPONSE), "op_count": [0, 1, 255],
                "status": sorted(CONTROL_STATUS)}

    def sync_request(self) -> bytes | None:
        """The health probe's class 0 read: an application request, so its answer proves the
        application layer was done with the frame before it (a link status answer would not:
        the link layer answers while the application may still be working). The session tells
        the two answers apart by their sequence numbers."""
        return self._probe.frame

    def stress_flood(self) -> tuple[bytes, str] | None:
        """Link-layer REQUEST_LINK_STATUS (fc 9): answered below the application layer."""
        template = next(t for t in self._templates if t.name == "request_link_status")
        return template.encode(), template.name

    def repair(self, frame: bytes) -> bytes:
        """Re-frame a mutated frame: start octets, length and every CRC made right for the user
        data present. CRC slots are dropped where an intact frame has them (after each 16 octets
        and at the end), so insertions and deletions shift content, not framing."""
        if len(frame) < HEADER_SIZE:
            return frame
        body = frame[HEADER_SIZE:]
        user = bytearray()
        at = 0
        while len(body) - at > 2:
            take = min(BLOCK, len(body) - at - 2)
            user += body[at : at + take]
            at += take + 2
        user = user[:MAX_USER_DATA]
        return link_frame(bytes(user), destination=int.from_bytes(frame[4:6], "little"),
                          source=int.from_bytes(frame[6:8], "little"), control=frame[3])

    def structural_faults(self, template: Template) -> tuple[tuple[str, bytes], ...]:
        """Link, transport and application faults around one valid request, outer CRCs right
        unless the CRC is the fault."""
        frame = template.encode()
        values = template.message.decode(frame)
        length = values["length"]

        def wrap(user_data: bytes) -> bytes:
            return link_frame(user_data, destination=self.outstation, source=self.master)

        faults: list[tuple[str, bytes]] = [
            ("header CRC wrong", template.encode(header_crc=values["header_crc"] ^ 0xFFFF)),
            ("length one short, header CRC right", template.encode(length=length - 1)),
            ("length one long, header CRC right", template.encode(length=length + 1)),
            ("length 0, header CRC right", template.encode(length=0)),
            ("length 4 (below the 5 minimum), header CRC right", template.encode(length=4)),
            ("length 255, header CRC right", template.encode(length=255)),
            ("start octets 05 65", template.encode(start_octets=0x0565)),
            ("start octets swapped (64 05)", template.encode(start_octets=0x6405)),
            ("addressed to another outstation", template.encode(destination=(self.outstation + 1) & 0xFFFF)),
            ("source address reserved (0xFFF0)", template.encode(source=0xFFF0)),
            ("DIR bit clear: claims to come from an outstation", template.encode(control=values["control"] & ~DIR)),
            ("PRM bit clear: a secondary frame carrying a request", template.encode(control=values["control"] & ~PRM)),
            ("undefined link function 5", template.encode(control=(values["control"] & 0xF0) | 5)),
            ("FCV set where the link function forbids it", template.encode(control=values["control"] | FCV)),
        ]
        checksums = [f.name for f in template.message.fields if isinstance(f, Checksum) and f.name != "header_crc"]
        if checksums:
            faults.append(("CRC of the first data block wrong", template.encode(**{checksums[0]: values[checksums[0]] ^ 0xFFFF})))
            faults.append(("CRC of the last data block wrong", template.encode(**{checksums[-1]: values[checksums[-1]] ^ 0x0001})))
            fragment = split_link_frames(frame)[0][0].user_data[1:]
            faults += self._transport_faults(fragment, wrap)
            faults += self._application_faults(template, values, fragment, wrap)
        return distinct_faults(frame, faults)

    def _transport_faults(self, fragment: bytes, wrap: Callable[[bytes], bytes]) -> list[tuple[str, bytes]]:
        def seg(octet: int, data: bytes) -> bytes:
            return wrap(bytes([octet]) + data)

        half = max(1, len(fragment) // 2)
        third = max(1, len(fragment) // 3)
        a, b, c = fragment[:third], fragment[third : 2 * third], fragment[2 * third :]
        padding = fragment[2:] or bytes(OBJECT_START_STOP_8.encode(group=60, variation=1, qualifier=0x06)[:3])
        oversize = bytearray(fragment)
        while len(oversize) <= self.options["max_fragment"]:
            oversize += padding
        return [
            ("fragment in two segments (valid)", seg(TH_FIR, fragment[:half]) + seg(TH_FIN | 1, fragment[half:])),
            ("first of two segments without FIR", seg(0, fragment[:half]) + seg(TH_FIN | 1, fragment[half:])),
            ("single segment with FIN but no FIR", seg(TH_FIN, fragment)),
            ("single segment with FIR but no FIN (fragment never finished)", seg(TH_FIR, fragment)),
            ("two segments with the same transport sequence", seg(TH_FIR, fragment[:half]) + seg(TH_FIN, fragment[half:])),
            ("three segments out of order (0, 2, 1)", seg(TH_FIR, a) + seg(TH_FIN | 2, c) + seg(1, b)),
            ("transport sequence gap (0, then 2)", seg(TH_FIR, fragment[:half]) + seg(TH_FIN | 2, fragment[half:])),
            ("empty transport segment (FIR and FIN, no data)", seg(TH_FIR | TH_FIN, b"")),
            (f"oversize fragment of {len(oversize)} octets (max_fragment {self.options['max_fragment']})",
             segments(bytes(oversize), destination=self.outstation, source=self.master)),
        ]

    def _application_faults(self, template: Template, values: Mapping[str, Any], fragment: bytes,
                            wrap: Callable[[bytes], bytes]) -> list[tuple[str, bytes]]:
        def app(data: bytes) -> bytes:
            return wrap(bytes([TH_FIR | TH_FIN]) + data)

        faults = [
            ("function code 0x70 (not defined)", template.encode(function=0x70)),
            ("function code 34 (first undefined request code)", template.encode(function=34)),
            ("response function code 0x81 from the master", template.encode(function=RESPONSE)),
            ("CON bit set in a request", template.encode(app_control=values["app_control"] | AC_CON)),
            ("UNS bit set in a request", template.encode(app_control=values["app_control"] | AC_UNS)),
            ("neither FIR nor FIN in app control", template.encode(app_control=values["app_control"] & 0x0F)),
            ("application fragment of only the control octet", app(fragment[:1])),
            ("one trailing octet after the last object", app(fragment + b"\x00")),
        ]
        if "qualifier" in values:
            faults += [
                ("qualifier 0x0A (undefined range code)", template.encode(qualifier=0x0A)),
                ("qualifier 0x86 (reserved bit set)", template.encode(qualifier=0x86)),
                ("qualifier 0x7F (undefined prefix and range)", template.encode(qualifier=0x7F)),
                ("object header cut after the group", app(fragment[:3])),
                ("object header cut after the variation", app(fragment[:4])),
                ("object header cut after the qualifier", app(fragment[:5])),
                ("group 255 (not defined)", template.encode(group=255)),
                ("variation 255", template.encode(variation=255)),
            ]
            if "start" in values:
                faults.append(("range stop < start", template.encode(start=5, stop=1)))
                faults.append(("range 0..255 beyond the points present", template.encode(start=0, stop=0xFF if values["qualifier"] == 0 else 0xFFFF)))
            else:
                header = OBJECT_START_STOP_8.encode(group=values["group"], variation=values["variation"], start=5, stop=1)
                faults.append(("range stop < start (start-stop header)", app(fragment[:2] + header)))
            if "count" in values:
                faults.append(("count one more than the objects present", template.encode(count=values["count"] + 1)))
                faults.append(("count 0", template.encode(count=0)))
        return faults

    # -- what came back ---------------------------------------------------------------------

    def check_request(self, frame: bytes) -> list[str]:
        frames, rest = split_link_frames(frame)
        if not frames:
            return [f"{len(frame)} octets that do not frame as a DNP3 link frame (05 64, length >= 5, whole frame)"]
        problems: list[str] = []
        if rest and rest[:2] == b"\x05\x64":
            # Octets after whole frames that are no frame belong to no answered request (a
            # conforming outstation answers the frames and drops the rest); a cut frame counts.
            problems.append(f"{len(rest)} octets of an incomplete link frame after the last whole one")
        for n, link in enumerate(frames, start=1):
            where = f"frame {n}: " if len(frames) > 1 else ""
            problems += [where + p for p in self._check_link(link)]
        fragments, transport = reassemble([f for f in frames if f.primary and f.function in (3, 4)])
        problems += transport
        for fragment in fragments:
            problems += check_fragment(fragment, self.options["max_fragment"])
        return problems

    def _check_link(self, link: LinkFrame) -> list[str]:
        problems = list(link.problems)
        control = link.control
        if not control & DIR:
            problems.append("DIR bit clear in a frame from the master")
        if not link.primary:
            return problems + [f"secondary frame (PRM clear, function {link.function}) sent as a request"]
        function = link.function
        if function not in PRIMARY_FUNCTIONS:
            return problems + [f"link function {function} is not defined"]
        if link.destination != self.outstation and link.destination not in BROADCAST:
            problems.append(f"addressed to {link.destination}, not the outstation {self.outstation}")
        if link.source in RESERVED_ADDRESSES or link.source in BROADCAST:
            problems.append(f"source address 0x{link.source:04x} is reserved")
        if function in (CONFIRMED_USER_DATA, UNCONFIRMED_USER_DATA) and not link.user_data:
            problems.append("user data frame without a transport octet")
        if function in LINK_ANSWERED and link.user_data:
            problems.append(f"link function {PRIMARY_FUNCTIONS[function]}: carries {len(link.user_data)} octets of user data")
        return problems

    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        frames, rest = split_link_frames(reply)
        if not frames:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{len(reply)} octets that do not frame as a DNP3 link frame")
        for n, link in enumerate(frames, start=1):
            if link.problems:
                return ReplyVerdict(ReplyKind.MALFORMED, f"link frame {n}: {', '.join(link.problems)}")
        if rest:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{len(rest)} octets after the last whole link frame")
        asked = split_link_frames(request)[0]
        for link in frames:
            if link.control & DIR:
                return ReplyVerdict(ReplyKind.MALFORMED, "DIR bit set: the reply claims to come from a master")
            if asked and (link.destination, link.source) != (asked[0].source, asked[0].destination):
                return ReplyVerdict(ReplyKind.MALFORMED, f"reply from {link.source} to {link.destination}; request went from "
                                                         f"{asked[0].source} to {asked[0].destination}")
        first = frames[0]
        if not first.primary:
            name = SECONDARY_FUNCTIONS.get(first.function, f"secondary function {first.function}")
            if len(frames) > 1 or first.user_data or first.function not in SECONDARY_FUNCTIONS:
                return ReplyVerdict(ReplyKind.MALFORMED, f"link {name} with user data or followed by more frames")
            kind = ReplyKind.EXCEPTION if first.function in (NACK, NOT_SUPPORTED) else ReplyKind.NORMAL
            return ReplyVerdict(kind, f"link {name}")
        fragments, transport = reassemble(frames)
        if transport:
            return ReplyVerdict(ReplyKind.MALFORMED, "; ".join(transport))
        return self._classify_response(request, asked, fragments)

    def _classify_response(self, request: bytes, asked: list[LinkFrame], fragments: list[bytes]) -> ReplyVerdict:
        iin1 = iin2 = 0
        statuses: list[int] = []
        request_fragments = reassemble([f for f in asked if f.primary])[0]
        request_function = request_fragments[-1][1] if request_fragments and len(request_fragments[-1]) > 1 else None
        for n, fragment in enumerate(fragments):
            if len(fragment) < 4:
                return ReplyVerdict(ReplyKind.MALFORMED, f"response fragment of {len(fragment)} octets has no IIN")
            control, function = fragment[0], fragment[1]
            if function == AUTHENTICATE_RESP:
                return ReplyVerdict(ReplyKind.EXCEPTION, "secure authentication challenge (AUTHENTICATE_RESP)")
            if function != RESPONSE:
                return ReplyVerdict(ReplyKind.MALFORMED, f"function code {function} ({FUNCTIONS.get(function, 'undefined')}) is not a response")
            if bool(control & AC_FIR) != (n == 0) or bool(control & AC_FIN) != (n == len(fragments) - 1):
                return ReplyVerdict(ReplyKind.MALFORMED, f"response fragment {n + 1} of {len(fragments)} has FIR/FIN wrong (0x{control:02x})")
            if control & AC_UNS:
                return ReplyVerdict(ReplyKind.MALFORMED, "UNS bit set in a solicited response")
            if n and control & 0x0F != (fragments[n - 1][0] + 1) & 0x0F:
                return ReplyVerdict(ReplyKind.MALFORMED, f"response fragment {n + 1} breaks the application sequence")
            iin1 |= fragment[2]
            iin2 |= fragment[3]
            if request_function in (SELECT, OPERATE, DIRECT_OPERATE):
                statuses += [s for h in parse_objects(fragment[4:], RESPONSE)[0] for s in h.statuses]
        if iin2 & IIN2_RESERVED:
            return ReplyVerdict(ReplyKind.MALFORMED, f"reserved IIN2 bits set (0x{iin2:02x})")
        flags = _flags(iin1, IIN1)
        shown = f"; IIN1 {', '.join(flags)}" if flags else ""
        if iin2 & IIN2_REJECTIONS:
            return ReplyVerdict(ReplyKind.EXCEPTION, f"IIN2 {', '.join(_flags(iin2 & IIN2_REJECTIONS, IIN2))}{shown}")
        refused = [s for s in statuses if s]
        if refused:
            names = ", ".join(f"{s} ({CONTROL_STATUS.get(s, 'undefined')})" for s in refused)
            return ReplyVerdict(ReplyKind.EXCEPTION, f"control status {names}{shown}")
        size = sum(len(f) for f in fragments)
        return ReplyVerdict(ReplyKind.NORMAL, f"response, {len(fragments)} fragment(s), {size} octets{shown}")

    # -- what a capture shows ---------------------------------------------------------------

    def split_messages(self, data: bytes) -> tuple[list[bytes], bytes]:
        """Link frames by their length octet and CRC blocks (a fragment may span several frames)."""
        frames, rest = split_link_frames(data)
        return [f.raw for f in frames], rest

    def normalise_request(self, frame: bytes) -> bytes:
        """Transport and application sequence numbers set to 0: the session numbers every frame
        relative to its own counters. CRCs are made right for the result."""
        frames, rest = split_link_frames(frame)
        if len(frames) != 1 or rest or not frames[0].user_data or len(frame) < HEADER_SIZE + 3:
            return frame
        out = bytearray(frame)
        out[HEADER_SIZE] &= TH_FIN | TH_FIR
        if out[HEADER_SIZE] & TH_FIR:
            out[HEADER_SIZE + 1] &= 0xF0
        return self.repair(bytes(out))

    def session_control(self, frame: bytes) -> bool:
        """Application CONFIRMs: the session confirms responses by itself."""
        frames, _ = split_link_frames(frame)
        return bool(frames) and all(len(f.user_data) >= 3 and f.user_data[0] & TH_FIR and f.user_data[2] == CONFIRM
                                    for f in frames)

    def is_write(self, frame: bytes) -> bool:
        """Conservative: any request fragment start whose function could change state, found at
        any 05 64 in the frame and whatever its CRCs (a lenient outstation may accept it)."""
        pos = frame.find(b"\x05\x64")
        while pos >= 0:
            if len(frame) - pos >= HEADER_SIZE + 3:
                control = frame[pos + 3]
                user = frame[pos + HEADER_SIZE : pos + HEADER_SIZE + 3]
                if control & PRM and user[0] & TH_FIR and user[2] not in READ_ONLY:
                    return True
            pos = frame.find(b"\x05\x64", pos + 1)
        return False

    def expects_reply(self, frame: bytes) -> bool:
        """Confirms, no-ack functions and broadcasts are never answered."""
        frames, _ = split_link_frames(frame)
        if not frames:
            return True
        for link in frames:
            if link.primary and link.function in LINK_ANSWERED:
                return True
        fragments, _ = reassemble([f for f in frames if f.primary and f.function in (3, 4)])
        if not fragments or len(fragments[-1]) < 2:
            return True
        if frames[-1].destination in BROADCAST:
            return False
        return fragments[-1][1] not in NO_RESPONSE

    def describe(self, frame: bytes) -> str:
        frames, rest = split_link_frames(frame)
        if not frames:
            return f"{len(frame)} octets, no DNP3 link frame"
        link = frames[0]
        route = f"to {link.destination} from {link.source}"
        count = f", {len(frames)} link frames" if len(frames) > 1 else ""
        faults = sorted({p for f in frames for p in f.problems})
        tail = (f" ({'; '.join(faults)})" if faults else "") + (f", {len(rest)} unframed octets" if rest else "")
        fragments, _ = reassemble(frames)
        if not link.primary or link.function not in (3, 4) or not fragments or len(fragments[0]) < 2:
            names = SECONDARY_FUNCTIONS if not link.primary else PRIMARY_FUNCTIONS
            return f"link {names.get(link.function, f'function {link.function}')} {route}{count}{tail}"
        fragment = fragments[0]
        headers = parse_objects(fragment[2:], fragment[1])[0]
        objects = " ".join(h.describe() for h in headers[:4]) + (" ..." if len(headers) > 4 else "")
        return f"{FUNCTIONS.get(fragment[1], f'function {fragment[1]}')} {objects} {route}{count}{tail}".replace("  ", " ")
