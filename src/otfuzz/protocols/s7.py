"""S7comm (Siemens S7-300/400 communication) over ISO-on-TCP, sans-IO.

Three layers, each declared with the message model: the TPKT header of RFC 1006 (version 3, a
16-bit length counting the whole packet), the ISO 8073 class 0 COTP TPDUs a client sends (CR with
its TPDU size and TSAP parameters, DT with its EOT bit, DR) and the S7 PDU: a 10-octet header
(protocol id 0x32, ROSCTR job 1 or userdata 7, PDU reference, parameter and data lengths; replies
of type ack 2 and ack-data 3 add the error class and code) followed by the parameter and data
parts of Setup Communication (max AmQ calling/called, PDU size), Read Var and Write Var with S7ANY
items (area, DB number, byte.bit address, transport size, count), the PI services that restart a
CPU (P_PROGRAM), PLC Stop and userdata reads of the system status list (SZL: module and component
identification). There is no public specification of S7comm: the layouts and code names follow
the Wireshark dissector and are checked against python-snap7; every rule `check_request` applies
is named there.

A connection is opened by COTP CR (called TSAP 0x01 rack*32+slot for the URL's rack and slot),
answered by CC, then Setup Communication, whose ack-data gives the negotiated PDU size.
`S7Session.prepare` writes a PDU reference unique on the connection into every S7 PDU: the
reference sent is the session's counter plus the frame's own `pdu_ref` field, which templates
leave at 0, so a fuzzed field elsewhere never reuses a reference while a fault that wants one
reused says so by its offset. Replies are matched by PDU reference, also when many requests are
outstanding (floods): an answer with a reference never sent (or already answered) is never taken
for a reply; it stays in `leftover()` where the engine reports it.

Frames that contain a COTP CR carry their own handshake: `needs_opening` is False for them, the
engine sends them on a fresh connection, and `check_request` judges them from the state of a
fresh connection (a DT before the CR, a job before Setup Communication, a second CR are state
faults). Every other frame is judged as sent after the opening. Nothing here opens a socket or
reads a clock.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from otfuzz.errors import DecodeError
from otfuzz.protocols.base import OptionSpec, Probe, Protocol, ReplyKind, ReplyVerdict, Session, Template, distinct_faults
from otfuzz.protocols.model import REST, Bytes, Field, Length, MessageType, UInt

# -- the specification's numbers ---------------------------------------------------------------

TPKT_VERSION = 3
TPKT_HEADER = 4
MIN_PACKET = TPKT_HEADER + 3  # TPKT header and the 3-octet DT header: the shortest TPDU
MAX_PACKET = 0xFFFF

COTP_CR, COTP_CC, COTP_DR, COTP_DC, COTP_DT, COTP_ER = 0xE0, 0xD0, 0x80, 0xC0, 0xF0, 0x70
COTP_TYPES: Mapping[int, str] = MappingProxyType(
    {0xE0: "CR", 0xD0: "CC", 0x80: "DR", 0xC0: "DC", 0xF0: "DT", 0x70: "ER", 0x10: "ED", 0x20: "EA", 0x50: "RJ", 0x60: "AK"}
)
RESPONDER_TYPES = frozenset({COTP_CC, COTP_DC, COTP_ER})  # TPDUs only the called side sends
EOT = 0x80
PARAM_TPDU_SIZE, PARAM_CALLING_TSAP, PARAM_CALLED_TSAP = 0xC0, 0xC1, 0xC2
TPDU_SIZES = range(7, 12)  # 2**7..2**11 octets: the sizes class 0 allows (ISO 8073 13.3.4 b)
DEFAULT_TPDU_CODE = 0x0A  # 1024 octets
CALLING_TSAP = b"\x01\x00"
DR_REASONS: Mapping[int, str] = MappingProxyType(
    {
        0x00: "reason not specified", 0x01: "congestion at TSAP", 0x02: "session entity not attached to TSAP",
        0x03: "address unknown", 0x80: "normal disconnect", 0x81: "remote transport entity congestion",
        0x82: "connection negotiation failed", 0x83: "duplicate source reference", 0x84: "mismatched references",
        0x85: "protocol error", 0x87: "reference overflow", 0x88: "connection request refused",
        0x8A: "header or parameter length invalid",
    }
)  # fmt: skip

S7_PROTOCOL_ID = 0x32
JOB, ACK, ACK_DATA, USERDATA = 1, 2, 3, 7
ROSCTR: Mapping[int, str] = MappingProxyType({JOB: "job", ACK: "ack", ACK_DATA: "ack-data", USERDATA: "userdata"})
JOB_HEADER, REPLY_HEADER = 10, 12

SETUP_COMMUNICATION, READ_VAR, WRITE_VAR, PI_SERVICE, PLC_STOP = 0xF0, 0x04, 0x05, 0x28, 0x29
FUNCTIONS: Mapping[int, str] = MappingProxyType(
    {
        0x00: "CPU services", 0x01: "mode transition", 0xF0: "Setup Communication", 0x04: "Read Var", 0x05: "Write Var",
        0x1A: "Request download", 0x1B: "Download block", 0x1C: "Download ended", 0x1D: "Start upload", 0x1E: "Upload",
        0x1F: "End upload", 0x28: "PI service", 0x29: "PLC Stop",
    }
)  # fmt: skip
READ_FUNCTIONS = frozenset({SETUP_COMMUNICATION, READ_VAR})  # jobs that cannot change the CPU
PI_SERVICES = frozenset({b"P_PROGRAM", b"_INSE", b"_DELE", b"_GARB", b"_MODU"})
PI_RESERVED = bytes.fromhex("000000000000fd")
STOP_RESERVED = bytes(5)
COLD_START = b"C "  # the P_PROGRAM argument of a cold restart; none for a warm (hot) restart

VAR_SPEC, S7ANY, S7ANY_SPEC_LENGTH = 0x12, 0x10, 10
ITEM_SIZE = 2 + S7ANY_SPEC_LENGTH
AREAS: Mapping[int, str] = MappingProxyType(
    {
        0x01: "data record", 0x03: "S7-200 system info", 0x05: "S7-200 system flags", 0x06: "S7-200 analog inputs",
        0x07: "S7-200 analog outputs", 0x1C: "counters (C)", 0x1D: "timers (T)", 0x1E: "S7-200 IEC counters",
        0x1F: "S7-200 IEC timers", 0x80: "direct peripheral access (P)", 0x81: "inputs (I)", 0x82: "outputs (Q)",
        0x83: "flags (M)", 0x84: "data blocks (DB)", 0x85: "instance data blocks (DI)", 0x86: "local data (L)",
        0x87: "previous local data (V)",
    }
)  # fmt: skip
AREA_SHORT = {0x80: "P", 0x81: "I", 0x82: "Q", 0x83: "M", 0x84: "DB", 0x85: "DI", 0x86: "L", 0x87: "V", 0x1C: "C", 0x1D: "T"}
DB_AREAS = frozenset({0x84, 0x85})
COUNTER_TIMER = MappingProxyType({0x1C: 0x1C, 0x1D: 0x1D, 0x1E: 0x1E, 0x1F: 0x1F})  # area -> its only transport size
# Item transport sizes: name and octets per element (None where the element size varies by CPU family).
TRANSPORT_SIZES: Mapping[int, tuple[str, int | None]] = MappingProxyType(
    {
        0x01: ("BIT", 1), 0x02: ("BYTE", 1), 0x03: ("CHAR", 1), 0x04: ("WORD", 2), 0x05: ("INT", 2), 0x06: ("DWORD", 4),
        0x07: ("DINT", 4), 0x08: ("REAL", 4), 0x09: ("DATE", 2), 0x0A: ("TOD", 4), 0x0B: ("TIME", 4), 0x0C: ("S5TIME", 2),
        0x0F: ("DATE_AND_TIME", 8), 0x1C: ("COUNTER", 2), 0x1D: ("TIMER", 2), 0x1E: ("IEC_COUNTER", None),
        0x1F: ("IEC_TIMER", None), 0x20: ("HS_COUNTER", None),
    }
)  # fmt: skip
BIT = 0x01
# Data part transport sizes and whether their length counts bits (else octets).
DATA_TRANSPORT_SIZES: Mapping[int, str] = MappingProxyType(
    {0x00: "NULL", 0x03: "BIT", 0x04: "BYTE/WORD/DWORD", 0x05: "INTEGER", 0x06: "DINTEGER", 0x07: "REAL", 0x09: "OCTET STRING"}
)
LENGTH_IN_BITS = frozenset({0x03, 0x04, 0x05})
ITEM_RETURN_CODES: Mapping[int, str] = MappingProxyType(
    {
        0x00: "reserved", 0x01: "hardware fault", 0x03: "accessing the object not allowed", 0x05: "address out of range",
        0x06: "data type not supported", 0x07: "data type inconsistent", 0x0A: "object does not exist", 0xFF: "success",
    }
)  # fmt: skip
SUCCESS = 0xFF
ERROR_CLASSES: Mapping[int, str] = MappingProxyType(
    {0x00: "no error", 0x81: "application relationship", 0x82: "object definition", 0x83: "no resources available",
     0x84: "error on service processing", 0x85: "error on supplies", 0x87: "access error"}
)  # fmt: skip
# Header and userdata error codes (class << 8 | code), as far as they concern the services here.
ERROR_CODES: Mapping[int, str] = MappingProxyType(
    {
        0x0110: "invalid block number", 0x0111: "invalid request length", 0x0112: "invalid parameter",
        0x0113: "invalid block type", 0x0114: "block not found", 0x011C: "protocol error", 0x0140: "insufficient memory",
        0x0141: "job cannot be processed for lack of resources", 0x8001: "service cannot be performed in the current status",
        0x8100: "service unknown to the module", 0x8104: "service not implemented on the module or frame error",
        0x8204: "type specification for the object inconsistent", 0x8302: "too few resources available",
        0x8304: "no further parallel upload possible", 0x8305: "function not available",
        0x8401: "invalid service sequence", 0x8402: "service cannot execute owing to the status of the object",
        0x8404: "the function cannot be performed", 0x8500: "wrong frames (PDU size error)",
        0x8701: "error addressing the object (area length error)", 0x8702: "requested service not supported by the module",
        0x8703: "access to object refused", 0x8704: "object damaged", 0xD001: "illegal job number",
        0xD03F: "coding error in the parameter section", 0xD041: "illegal status list ID",
        0xD05F: "coding error in the data section", 0xD081: "function not permitted in the current mode",
        0xD0A1: "function not permitted in the current protection level", 0xD401: "information function unavailable",
        0xD402: "information function unavailable", 0xD405: "service not supported or syntax error in function parameters",
        0xD406: "required information currently unavailable", 0xD601: "syntax error in function parameter",
        0xD602: "incorrect password entered",
    }
)  # fmt: skip

UD_PARAM_HEAD = 0x000112
UD_REQUEST_METHOD, UD_RESPONSE_METHOD = 0x11, 0x12
UD_TYPE_REQUEST, UD_TYPE_RESPONSE = 0x4, 0x8
UD_GROUPS: Mapping[int, str] = MappingProxyType(
    {0x1: "programmer commands", 0x2: "cyclic services", 0x3: "block functions", 0x4: "CPU functions", 0x5: "security",
     0x6: "PBC BSEND", 0x7: "time functions"}
)  # fmt: skip
GROUP_CPU, READ_SZL = 0x4, 0x01
CPU_SUBFUNCTIONS = frozenset({0x01, 0x02, 0x03, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x11, 0x12, 0x13, 0x16})
# Userdata services that only read (group, subfunction): block lists and info, SZL, clock.
UD_READS = frozenset({(0x3, 0x01), (0x3, 0x02), (0x3, 0x03), (GROUP_CPU, READ_SZL), (0x7, 0x01)})
SZL_MODULE_IDENTIFICATION, SZL_COMPONENT_IDENTIFICATION = 0x0011, 0x001C
SZL_IDS: Mapping[int, str] = MappingProxyType(
    {0x0000: "list of SZL IDs", 0x0011: "module identification", 0x001C: "component identification",
     0x0111: "one module identification record", 0x0131: "communication capabilities", 0x0132: "communication status",
     0x0232: "protection level", 0x0424: "CPU mode", 0x0074: "LED status", 0x00A0: "diagnostic buffer"}
)  # fmt: skip
SZL_REPLY_HEAD = 8  # SZL ID, index, LENTHDR, N_DR
PDU_MINIMUM = REPLY_HEADER  # a PDU smaller than an ack-data header cannot carry any answer
LINK_FAULTS_WITH = "read_szl_module_identification"  # the template whose fault list has the TPKT/COTP faults in full


# -- declarations ------------------------------------------------------------------------------


def _tpkt() -> list[Field]:
    return [
        UInt("tpkt_version", 8, default=TPKT_VERSION, enum={TPKT_VERSION: "RFC 1006"}),
        UInt("tpkt_reserved", 8),
        Length("tpkt_length", 16, covers=REST, adjust=TPKT_HEADER),
    ]


def _cotp_dt() -> list[Field]:
    return [
        Length("cotp_length", 8, covers=("cotp_type", "cotp_eot")),
        UInt("cotp_type", 8, default=COTP_DT, enum={COTP_DT: "DT"}),
        UInt("cotp_eot", 8, default=EOT, enum={EOT: "last data unit", 0x00: "more data units follow"}),
    ]


def _s7_header(rosctr: int, params: Sequence[Field], data: Sequence[Field]) -> list[Field]:
    return [
        UInt("protocol_id", 8, default=S7_PROTOCOL_ID, enum={S7_PROTOCOL_ID: "S7comm"}),
        UInt("rosctr", 8, default=rosctr, enum={JOB: "job", USERDATA: "userdata"}),
        UInt("redundancy_id", 16),  # reserved, 0
        UInt("pdu_ref", 16),  # an offset from the session's counter (module docstring)
        Length("param_length", 16, covers=tuple(f.name for f in params)),
        Length("data_length", 16, covers=tuple(f.name for f in data)),
    ]


def _explicit(fields: Sequence[Field]) -> list[Field]:
    """The fields of one part with every REST length made an explicit list of that part's fields,
    so the part keeps its meaning when other parts follow it in a composed message."""
    names = [f.name for f in fields]
    out: list[Field] = []
    for i, f in enumerate(fields):
        if isinstance(f, Length) and f.covers == REST:
            f = replace(f, covers=tuple(names[i + 1 :]))
        out.append(f)
    return out


def _prefixed(fields: Sequence[Field], prefix: str) -> list[Field]:
    """The same fields under prefixed names (a second packet of the same kind in one frame)."""
    out: list[Field] = []
    for f in _explicit(fields):
        if isinstance(f, Length):
            f = replace(f, covers=tuple(prefix + n for n in f.covers))
        if isinstance(f, Bytes) and f.size_from is not None:
            f = replace(f, size_from=prefix + f.size_from)
        out.append(replace(f, name=prefix + f.name))
    return out


def _dt_message(name: str, rosctr: int, params: Sequence[Field], data: Sequence[Field] = (), doc: str = "") -> MessageType:
    """A request in one TPKT packet: TPKT, COTP DT, S7 header, parameter and data parts."""
    params, data = _explicit(params), _explicit(data)
    return MessageType(name, [*_tpkt(), *_cotp_dt(), *_s7_header(rosctr, params, data), *params, *data], doc=doc)


# One S7ANY item of a Read Var or Write Var parameter part.
ITEM = MessageType(
    "s7any_item",
    [
        UInt("var_spec", 8, default=VAR_SPEC, enum={VAR_SPEC: "variable specification"}),
        Length("spec_length", 8, covers=REST),
        UInt("syntax_id", 8, default=S7ANY, enum={S7ANY: "S7ANY"}),
        UInt("transport_size", 8, default=0x02, enum={k: v[0] for k, v in TRANSPORT_SIZES.items()}),
        UInt("count", 16, default=1, minimum=1),
        UInt("db_number", 16),
        UInt("area", 8, default=0x84, enum=AREAS),
        UInt("address", 24, maximum=0x7FFFF),  # byte address (16 bits) << 3 | bit; bits 19..23 are 0
    ],
)


def _item_rules(values: Mapping[str, Any]) -> list[str]:
    """Cross-field rules of one S7ANY item."""
    out: list[str] = []
    size, area, count, address = values["transport_size"], values["area"], values["count"], values["address"]
    if size == BIT and count != 1:
        out.append(f"count={count}: a BIT item addresses exactly 1 bit")
    if size != BIT and size not in COUNTER_TIMER.values() and address & 7:
        out.append(f"address={address} has bit offset {address & 7}: only BIT items address single bits")
    if area in DB_AREAS and values["db_number"] == 0:
        out.append(f"db_number=0 below minimum 1 for area 0x{area:02x}")
    if (area in COUNTER_TIMER or size in COUNTER_TIMER.values()) and COUNTER_TIMER.get(area) != size:
        out.append(f"transport_size={size} does not fit area 0x{area:02x} (counters and timers go together)")
    return out


def _var_params(function: int, title: str) -> list[Field]:
    return [
        UInt("function", 8, default=function, enum={function: title}),
        UInt("item_count", 8, default=1, minimum=1),
        *_explicit(ITEM.fields),
    ]


DATA_ITEM = MessageType(
    "data_item",
    [
        UInt("return_code", 8),  # reserved (0) in a request
        UInt("data_transport_size", 8, default=0x04, enum=DATA_TRANSPORT_SIZES),
        UInt("item_length", 16),  # bits or octets by the transport size: repair() keeps it in step
    ],
)
SETUP_PARAMS = MessageType(
    "setup_communication_params",
    [
        UInt("function", 8, default=SETUP_COMMUNICATION, enum={SETUP_COMMUNICATION: "Setup Communication"}),
        UInt("setup_reserved", 8),
        UInt("max_amq_calling", 16, default=1, minimum=1),
        UInt("max_amq_called", 16, default=1, minimum=1),
        UInt("pdu_length", 16, default=480, minimum=PDU_MINIMUM),
    ],
)
PI_PARAMS = MessageType(
    "pi_service_params",
    [
        UInt("function", 8, default=PI_SERVICE, enum={PI_SERVICE: "PI service"}),
        Bytes("pi_reserved", size=7, default=PI_RESERVED),
        Length("parameter_block_length", 16, covers=("parameter_block",)),
        Bytes("parameter_block", size_from="parameter_block_length"),
        Length("pi_service_length", 8, covers=("pi_service",)),
        Bytes("pi_service", size_from="pi_service_length", default=b"P_PROGRAM"),
    ],
)
STOP_PARAMS = MessageType(
    "plc_stop_params",
    [
        UInt("function", 8, default=PLC_STOP, enum={PLC_STOP: "PLC Stop"}),
        Bytes("stop_reserved", size=5, default=STOP_RESERVED),
        Length("pi_service_length", 8, covers=("pi_service",)),
        Bytes("pi_service", size_from="pi_service_length", default=b"P_PROGRAM"),
    ],
)
UD_PARAMS = MessageType(
    "userdata_params",
    [
        UInt("param_head", 24, default=UD_PARAM_HEAD, enum={UD_PARAM_HEAD: "userdata parameter head"}),
        Length("ud_param_length", 8, covers=REST),
        UInt("method", 8, default=UD_REQUEST_METHOD, enum={UD_REQUEST_METHOD: "request", UD_RESPONSE_METHOD: "follow-up"}),
        UInt("type_group", 8, default=(UD_TYPE_REQUEST << 4) | GROUP_CPU),
        UInt("subfunction", 8, default=READ_SZL),
        UInt("sequence", 8),
    ],
)
SZL_REQUEST_DATA = MessageType(
    "read_szl_data",
    [
        UInt("szl_return_code", 8, default=SUCCESS),
        UInt("szl_transport_size", 8, default=0x09, enum={0x09: "OCTET STRING"}),
        Length("szl_data_length", 16, covers=REST),
        UInt("szl_id", 16, default=SZL_MODULE_IDENTIFICATION),
        UInt("szl_index", 16),
    ],
)
COTP_CR_FIELDS: list[Field] = [
    *_tpkt(),
    Length("cotp_length", 8, covers=REST),
    UInt("cotp_type", 8, default=COTP_CR, enum={COTP_CR: "CR"}),
    UInt("dst_ref", 16, maximum=0),
    UInt("src_ref", 16, default=0x0001),
    UInt("class_option", 8),
    UInt("tpdu_size_code", 8, default=PARAM_TPDU_SIZE, enum={PARAM_TPDU_SIZE: "TPDU size"}),
    UInt("tpdu_size_length", 8, default=1, enum={1: "one octet"}),
    UInt("tpdu_size", 8, default=DEFAULT_TPDU_CODE, minimum=TPDU_SIZES.start, maximum=TPDU_SIZES.stop - 1),
    UInt("calling_tsap_code", 8, default=PARAM_CALLING_TSAP, enum={PARAM_CALLING_TSAP: "calling TSAP"}),
    Length("calling_tsap_length", 8, covers=("calling_tsap",)),
    Bytes("calling_tsap", size_from="calling_tsap_length", default=CALLING_TSAP),
    UInt("called_tsap_code", 8, default=PARAM_CALLED_TSAP, enum={PARAM_CALLED_TSAP: "called TSAP"}),
    Length("called_tsap_length", 8, covers=("called_tsap",)),
    Bytes("called_tsap", size_from="called_tsap_length", default=b"\x01\x01"),
]
COTP_CR_MESSAGE = MessageType("cotp_connection_request", COTP_CR_FIELDS, doc="COTP CR: TPDU size, calling and called TSAP")
COTP_DR_MESSAGE = MessageType(
    "cotp_disconnect_request",
    [*_tpkt(), Length("cotp_length", 8, covers=REST), UInt("cotp_type", 8, default=COTP_DR, enum={COTP_DR: "DR"}),
     UInt("dst_ref", 16, default=0x0001), UInt("src_ref", 16, default=0x0001), UInt("reason", 8, default=0x80, enum=DR_REASONS)],
)  # fmt: skip
DT_PACKET = MessageType("cotp_data", [*_tpkt(), *_cotp_dt(), Bytes("payload")], doc="COTP DT around any payload")

SETUP_MESSAGE = _dt_message("setup_communication", JOB, SETUP_PARAMS.fields, doc="Setup Communication on an open connection")
SETUP_WITH_CR = MessageType(
    "setup_communication", [*_prefixed(COTP_CR_FIELDS, "cr_"), *SETUP_MESSAGE.fields], doc="COTP CR, then Setup Communication"
)
READ_VAR_MESSAGE = _dt_message(
    "read_var", JOB, [*_var_params(READ_VAR, "Read Var"), Bytes("more_items", max_size=480)], doc="Read Var: S7ANY items"
)
WRITE_VAR_MESSAGE = _dt_message(
    "write_var", JOB, _var_params(WRITE_VAR, "Write Var"), [*DATA_ITEM.fields, Bytes("data", default=b"\x00\x01\x02\x03")],
    doc="Write Var: one S7ANY item and its data item",
)
PI_MESSAGE = _dt_message("pi_service", JOB, PI_PARAMS.fields, doc="PI service (P_PROGRAM restarts the CPU)")
STOP_MESSAGE = _dt_message("plc_stop", JOB, STOP_PARAMS.fields, doc="PLC Stop")
SZL_MESSAGE = _dt_message("read_szl", USERDATA, UD_PARAMS.fields, SZL_REQUEST_DATA.fields, doc="userdata: read SZL")


def item_bytes(transport_size: int, db_number: int, area: int, byte: int, count: int = 1, bit: int = 0) -> bytes:
    """One S7ANY item (for `more_items`), encoded by its declaration."""
    return ITEM.encode(transport_size=transport_size, count=count, db_number=db_number, area=area, address=(byte << 3) | bit)


# -- framing -----------------------------------------------------------------------------------


def split_packets(data: bytes) -> tuple[list[bytes], bytes]:
    """Frame `data` by the TPKT length: the complete packets and what does not frame (bytes that
    are not a TPKT header, a length below 7, or an incomplete last packet)."""
    out: list[bytes] = []
    pos = 0
    n = len(data)
    while n - pos >= TPKT_HEADER and data[pos] == TPKT_VERSION:
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < MIN_PACKET or pos + length > n:
            break
        out.append(bytes(data[pos : pos + length]))
        pos += length
    return out, bytes(data[pos:])


def cotp_type(packet: bytes) -> int:
    """The TPDU code of a packet (CR and CC carry a credit in the low nibble in other classes)."""
    code = packet[5]
    return code & 0xF0 if code & 0xF0 in (COTP_CR, COTP_CC) else code


def dt_payload(packet: bytes) -> bytes:
    """The user data of a DT packet: after its header, whose length the LI octet gives."""
    return packet[min(len(packet), TPKT_HEADER + 1 + packet[4]) :]


@dataclass(frozen=True)
class Unit:
    """What the peer acts on: one COTP TPDU, or one TSDU of DT fragments up to the one with EOT.

    `kind` is the TPDU code; for DT, `payload` is the reassembled S7 PDU and `complete` says
    whether a fragment with EOT ended it.
    """

    kind: int
    packets: tuple[bytes, ...]
    payload: bytes = b""
    complete: bool = True

    @property
    def packet(self) -> bytes:
        return self.packets[0]


def units(data: bytes) -> tuple[list[Unit], bytes]:
    """The TPDUs and TSDUs of `data` in order, and the bytes that do not frame."""
    packets, rest = split_packets(data)
    out: list[Unit] = []
    fragments: list[bytes] = []
    for packet in packets:
        kind = cotp_type(packet)
        if kind == COTP_DT and packet[4] >= 2 and len(packet) >= TPKT_HEADER + 3:
            fragments.append(packet)
            if packet[6] & EOT:
                out.append(Unit(COTP_DT, tuple(fragments), b"".join(dt_payload(p) for p in fragments)))
                fragments = []
            continue
        if fragments:
            out.append(Unit(COTP_DT, tuple(fragments), b"".join(dt_payload(p) for p in fragments), complete=False))
            fragments = []
        out.append(Unit(kind, (packet,)))
    if fragments:
        out.append(Unit(COTP_DT, tuple(fragments), b"".join(dt_payload(p) for p in fragments), complete=False))
    return out, rest


def cotp_parameters(data: bytes) -> tuple[dict[int, bytes], str | None]:
    """The variable part of a CR, CC or DR: parameters by code, and why the list does not parse."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            return out, f"cotp parameter at octet {pos} has no length"
        code, size = data[pos], data[pos + 1]
        if pos + 2 + size > len(data):
            return out, f"cotp parameter 0x{code:02x} length={size} runs past the header ({len(data) - pos - 2} octets left)"
        if code in out:
            return out, f"cotp parameter 0x{code:02x} appears twice"
        out[code] = data[pos + 2 : pos + 2 + size]
        pos += 2 + size
    return out, None


@dataclass(frozen=True)
class S7Pdu:
    """An S7 PDU cut into its parts by its own lengths; `problem` says why the lengths do not fit."""

    rosctr: int
    pdu_ref: int
    params: bytes
    data: bytes
    error: int = 0  # error class << 8 | error code (ack and ack-data only)
    problem: str | None = None

    @property
    def function(self) -> int | None:
        return self.params[0] if self.params else None


def parse_s7(payload: bytes, *, request: bool = False) -> S7Pdu | str:
    """Cut an S7 PDU; a string says why it is not one. A request's header is always 10 octets
    (only answers carry the error class and code), whatever its ROSCTR says."""
    if len(payload) < JOB_HEADER:
        return f"S7 PDU of {len(payload)} octets is shorter than its 10-octet header"
    if payload[0] != S7_PROTOCOL_ID:
        return f"protocol_id=0x{payload[0]:02x} is not 0x32 (S7comm)"
    rosctr = payload[1]
    header = REPLY_HEADER if rosctr in (ACK, ACK_DATA) and not request else JOB_HEADER
    if len(payload) < header:
        return f"{ROSCTR[rosctr]} PDU of {len(payload)} octets is shorter than its {header}-octet header"
    ref = (payload[4] << 8) | payload[5]
    param_length = (payload[6] << 8) | payload[7]
    data_length = (payload[8] << 8) | payload[9]
    error = ((payload[10] << 8) | payload[11]) if header == REPLY_HEADER else 0
    body = len(payload) - header
    params = payload[header : header + param_length]
    data = payload[header + param_length : header + param_length + data_length]
    problem = None
    if param_length + data_length != body:
        problem = f"param_length={param_length} and data_length={data_length} but {body} octets follow the header"
    return S7Pdu(rosctr, ref, bytes(params), bytes(data), error, problem)


def split_items(params: bytes) -> tuple[list[bytes], bytes]:
    """The variable specifications after function and item count, each by its own length octet."""
    items: list[bytes] = []
    pos = 2
    while pos + 2 <= len(params) and pos + 2 + params[pos + 1] <= len(params):
        size = 2 + params[pos + 1]
        items.append(params[pos : pos + size])
        pos += size
    return items, params[pos:]


def decode_item(raw: bytes) -> tuple[dict[str, Any] | None, list[str]]:
    """An S7ANY item and every way it breaks the rules."""
    if len(raw) != ITEM_SIZE or raw[2] != S7ANY:
        if len(raw) >= 3 and raw[2] != S7ANY:
            return None, [f"syntax_id=0x{raw[2]:02x} is not S7ANY (0x10)"]
        return None, [f"spec_length={len(raw) - 2} but an S7ANY address is 10 octets"]
    values = ITEM.decode(raw)
    return values, ITEM.violations(values) + _item_rules(values)


def item_octets(values: Mapping[str, Any]) -> int | None:
    """Octets of data an item addresses (None when the element size is not known)."""
    size = TRANSPORT_SIZES.get(values["transport_size"], ("", None))[1]
    if size is None:
        return None
    return 1 if values["transport_size"] == BIT else size * values["count"]


def data_octets(transport_size: int, length: int) -> int:
    """Octets a data item carries for its length field (bits or octets by transport size)."""
    return (length + 7) // 8 if transport_size in LENGTH_IN_BITS else length


def split_data_items(data: bytes, count: int, *, reply: bool) -> tuple[list[tuple[int, int, int, bytes]], str | None]:
    """Data items (return code, transport size, length, data) with the fill octet after an item of
    odd length except the last; the second item says why the bytes do not divide up."""
    out: list[tuple[int, int, int, bytes]] = []
    pos = 0
    for n in range(count):
        if pos + 4 > len(data):
            return out, f"data item {n + 1} of {count} missing ({len(data) - pos} octets left)"
        code, size, length = data[pos], data[pos + 1], (data[pos + 2] << 8) | data[pos + 3]
        octets = 0 if reply and code != SUCCESS else data_octets(size, length)
        if pos + 4 + octets > len(data):
            return out, f"data item {n + 1}: item_length={length} needs {octets} octets, {len(data) - pos - 4} follow"
        out.append((code, size, length, data[pos + 4 : pos + 4 + octets]))
        pos += 4 + octets
        if n < count - 1 and octets % 2:
            pos += 1  # fill octet
    if pos < len(data):
        return out, f"{len(data) - pos} octets after the last of {count} data items"
    return out, None


def error_text(error: int) -> str:
    """An S7 error (class << 8 | code) with both names."""
    cls = ERROR_CLASSES.get(error >> 8, "undefined class")
    name = ERROR_CODES.get(error, "")
    return f"error 0x{error:04x} ({cls}{': ' + name if name else ''})"


def return_code_text(code: int) -> str:
    return f"return code 0x{code:02x} {ITEM_RETURN_CODES.get(code, 'undefined')}"


def item_text(values: Mapping[str, Any]) -> str:
    """An item in STEP 7 notation: DB1.DBB0 BYTE x4, MB0, DB1.DBX5.1, C0."""
    area, size, address = values["area"], values["transport_size"], values["address"]
    name = TRANSPORT_SIZES.get(size, (f"size 0x{size:02x}", 0))[0]
    short = AREA_SHORT.get(area, f"area 0x{area:02x}")
    if area in COUNTER_TIMER:
        where = f"{short}{address}"
    elif area not in AREA_SHORT:
        where = f"{short} byte {address >> 3}{f'.{address & 7}' if size == BIT else ''}"
    else:
        where = f"{short}{values['db_number']}." if area in DB_AREAS else short
        where += f"{'DB' if area in DB_AREAS else ''}{'X' if size == BIT else 'B'}{address >> 3}"
        where += f".{address & 7}" if size == BIT else ""
    return f"{where} {name} x{values['count']}"


# -- requests: what the engine sends -----------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """What one request unit asks for, as far as the reply depends on it."""

    kind: int  # COTP type of the unit
    s7: S7Pdu | None = None
    src_ref: int = 0  # CR
    tpdu_code: int | None = None  # CR: the TPDU size asked for
    items: tuple[dict[str, Any] | None, ...] = ()  # Read/Write Var: every item present (None: does not decode)
    szl: tuple[int, int] | None = None  # read SZL: (ID, index)
    pdu_length: int | None = None  # Setup Communication: the PDU size asked for


def _request(unit: Unit) -> Request:
    if unit.kind == COTP_CR:
        packet = unit.packet
        values: dict[int, bytes] = {}
        if len(packet) >= TPKT_HEADER + 7:
            values, _ = cotp_parameters(packet[TPKT_HEADER + 7 : TPKT_HEADER + 1 + packet[4]])
        size = values.get(PARAM_TPDU_SIZE, b"")
        src = (packet[8] << 8 | packet[9]) if len(packet) >= 10 else 0
        return Request(COTP_CR, src_ref=src, tpdu_code=size[0] if len(size) == 1 else None)
    if unit.kind != COTP_DT:
        return Request(unit.kind)
    pdu = parse_s7(unit.payload, request=True)
    if isinstance(pdu, str):
        return Request(COTP_DT)
    if pdu.rosctr == USERDATA:
        szl = None
        if len(pdu.params) >= 7 and pdu.params[5] & 0x0F == GROUP_CPU and pdu.params[6] == READ_SZL and len(pdu.data) >= 8:
            szl = ((pdu.data[4] << 8) | pdu.data[5], (pdu.data[6] << 8) | pdu.data[7])
        return Request(COTP_DT, pdu, szl=szl)
    if pdu.function in (READ_VAR, WRITE_VAR):
        return Request(COTP_DT, pdu, items=tuple(decode_item(raw)[0] for raw in split_items(pdu.params)[0]))
    if pdu.function == SETUP_COMMUNICATION and len(pdu.params) >= 8:
        return Request(COTP_DT, pdu, pdu_length=(pdu.params[6] << 8) | pdu.params[7])
    return Request(COTP_DT, pdu)


def last_request(frame: bytes) -> Request | None:
    """The request unit whose answer is the reply to `frame`: its last unit (None when nothing frames)."""
    found, _ = units(frame)
    return _request(found[-1]) if found else None


def _function_name(pdu: S7Pdu) -> str:
    if pdu.rosctr == USERDATA:
        return "userdata request"
    if pdu.function is None:
        return "job without function"
    return FUNCTIONS.get(pdu.function, f"function 0x{pdu.function:02x}")


# -- session -----------------------------------------------------------------------------------

_CC, _DC, _ANY = "CC", "DC", "ANY"


class S7Session(Session):
    """One ISO-on-TCP connection: COTP CR/CC, Setup Communication, PDU references (module docstring).

    Replies are sorted in `feed`: an S7 PDU whose reference is outstanding is a reply (in the
    order they come, so pipelined floods are counted); one owed to an earlier unit of the same
    frame is dropped; one with a reference never sent is kept for `leftover`.
    """

    MAX_AWAITED = 65536

    def __init__(self, opening: Sequence[bytes]) -> None:
        super().__init__()
        self._opening = list(opening)
        self.next_ref = 1
        self.connected = False  # CC received
        self.tpdu_size: int | None = None  # octets, from the CC
        self.pdu_size: int | None = None  # negotiated by Setup Communication
        self.max_amq_calling: int | None = None
        self.max_amq_called: int | None = None
        self._awaited: Counter[int] = Counter()  # references sent and not answered
        self._order: deque[int] = deque()
        self._owed: Counter[int] = Counter()  # references of earlier units of a frame: answers dropped
        self._owed_cotp: Counter[str] = Counter()
        self._pending: str | None = None  # a COTP answer or any answer expected for the last unit
        self._fragments: list[bytes] = []
        self._replies: list[bytes] = []
        self._stray = bytearray()

    def opening(self) -> list[bytes]:
        return list(self._opening)

    # -- outgoing ---------------------------------------------------------------------------

    def prepare(self, frame: bytes) -> bytes:
        packets, rest = split_packets(frame)
        out = bytearray(frame)
        expectations: list[str | int] = []
        pos = 0
        current: str | int = _ANY  # what answers the TSDU being sent (its first fragment carries the header)
        inside = False  # a DT without EOT was sent: the TSDU goes on
        for packet in packets:
            kind = cotp_type(packet)
            if kind == COTP_DT and packet[4] >= 2:
                if not inside:
                    current = self._patch(out, pos, packet)
                inside = not packet[6] & EOT
                if not inside:
                    expectations.append(current)
            else:
                if inside:
                    expectations.append(_ANY)
                    inside = False
                expectations.append(_CC if kind == COTP_CR else _DC if kind == COTP_DR else _ANY)
            pos += len(packet)
        if inside:
            expectations.append(_ANY)  # a TSDU that never ends: whatever comes answers it
        if rest and (not packets or rest[0] == TPKT_VERSION):
            expectations.append(_ANY)
        self._expect(expectations)
        return bytes(out)

    def _patch(self, out: bytearray, pos: int, packet: bytes) -> str | int:
        """Write the connection's next PDU reference (plus the frame's offset) into the S7 header
        that starts in `packet` at `pos`; returns the reference, or ANY when there is no header."""
        at = pos + TPKT_HEADER + 1 + packet[4]
        if packet[4] != 2 or at + JOB_HEADER > pos + len(packet) or out[at] != S7_PROTOCOL_ID:
            return _ANY
        offset = (out[at + 4] << 8) | out[at + 5]
        ref = (self.next_ref + offset) & 0xFFFF
        if ref == 0 and offset == 0:
            ref = 1
        self.next_ref = (ref + 1) & 0xFFFF or 1
        out[at + 4 : at + 6] = ref.to_bytes(2, "big")
        return ref

    def _expect(self, expectations: list[str | int]) -> None:
        last = expectations.pop() if expectations else None
        for earlier in expectations:
            if isinstance(earlier, int):
                self._owed[earlier] += 1
                self._await(earlier)
            elif earlier in (_CC, _DC):
                self._owed_cotp[earlier] += 1
        self._pending = None
        if isinstance(last, int):
            self._await(last)
        else:
            self._pending = last

    def _await(self, ref: int) -> None:
        self._awaited[ref] += 1
        self._order.append(ref)
        if len(self._order) > self.MAX_AWAITED:
            old = self._order.popleft()
            if self._awaited[old] > 0:
                self._awaited[old] -= 1

    # -- incoming ---------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while buf:
            if buf[0] != TPKT_VERSION or (len(buf) >= TPKT_HEADER and ((buf[2] << 8) | buf[3]) < MIN_PACKET):
                # no length to frame by: everything received is the malformed answer
                self._deliver(bytes(buf))
                buf.clear()
                return
            if len(buf) < TPKT_HEADER:
                return
            length = (buf[2] << 8) | buf[3]
            if len(buf) < length:
                return
            packet = bytes(buf[:length])
            del buf[:length]
            self._receive(packet)

    def next_reply(self) -> bytes | None:
        return self._replies.pop(0) if self._replies else None

    def leftover(self) -> bytes:
        """Answers with a PDU reference never sent, and incomplete packets."""
        return bytes(self._stray) + b"".join(self._fragments) + bytes(self._buffer)

    @property
    def _expecting(self) -> bool:
        return self._pending is not None or +self._awaited != Counter()

    def _deliver(self, raw: bytes) -> None:
        """Hand over an answer the classifier must judge (it may be malformed), or keep it as stray."""
        if self._expecting:
            self._pending = None
            self._replies.append(raw)
        else:
            self._stray += raw

    def _receive(self, packet: bytes) -> None:
        kind = cotp_type(packet)
        if kind in (COTP_CC, COTP_DC):
            name = _CC if kind == COTP_CC else _DC
            if kind == COTP_CC:
                self._learn_cc(packet)
            if self._owed_cotp[name] > 0:
                self._owed_cotp[name] -= 1
            elif self._pending in (name, _ANY):
                self._pending = None
                self._replies.append(packet)
            else:
                self._deliver(packet)
            return
        if kind != COTP_DT or len(packet) < TPKT_HEADER + 3 or packet[4] < 2:
            self._deliver(packet)  # DR, ER or anything else the peer says instead of answering
            return
        self._fragments.append(packet)
        if not packet[6] & EOT:
            return
        fragments, self._fragments = self._fragments, []
        payload = b"".join(dt_payload(p) for p in fragments)
        raw = b"".join(fragments)
        if len(payload) < JOB_HEADER or payload[0] != S7_PROTOCOL_ID:
            self._deliver(raw)
            return
        ref = (payload[4] << 8) | payload[5]
        self._learn_setup(payload)
        if self._owed[ref] > 0:
            self._owed[ref] -= 1
            self._awaited[ref] = max(0, self._awaited[ref] - 1)
        elif self._awaited[ref] > 0:
            self._awaited[ref] -= 1
            self._replies.append(raw)
        elif self._pending == _ANY:
            self._pending = None
            self._replies.append(raw)
        else:
            self._stray += raw

    def _learn_cc(self, packet: bytes) -> None:
        self.connected = True
        if len(packet) >= TPKT_HEADER + 7:
            params, _ = cotp_parameters(packet[TPKT_HEADER + 7 : TPKT_HEADER + 1 + packet[4]])
            size = params.get(PARAM_TPDU_SIZE, b"")
            if len(size) == 1 and size[0] < 16:
                self.tpdu_size = 1 << size[0]

    def _learn_setup(self, payload: bytes) -> None:
        pdu = parse_s7(payload)
        if isinstance(pdu, str) or pdu.rosctr != ACK_DATA or pdu.error or pdu.function != SETUP_COMMUNICATION:
            return
        if len(pdu.params) >= 8:
            self.max_amq_calling = (pdu.params[2] << 8) | pdu.params[3]
            self.max_amq_called = (pdu.params[4] << 8) | pdu.params[5]
            self.pdu_size = (pdu.params[6] << 8) | pdu.params[7]


# -- the protocol ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    name: str
    message: MessageType
    values: Mapping[str, Any]
    code: int
    writes: bool = False
    disruptive: bool = False


class S7Comm(Protocol):
    """S7comm client side: Setup Communication, Read/Write Var, PI services, SZL reads."""

    name = "s7"
    schemes = ("s7",)
    default_port = 102
    options_spec = {
        "rack": OptionSpec("0", "rack of the CPU (0..7), part of the called TSAP", int, 0, 7),
        "slot": OptionSpec("1", "slot of the CPU (0..31), part of the called TSAP", int, 0, 31),
        "connection_type": OptionSpec("1", "connection type in the called TSAP: 1 PG, 2 OP, 3 S7 basic", int, 1, 3),
        "pdu": OptionSpec("480", "PDU size asked for in Setup Communication (240..960)", int, 240, 960),
        "db": OptionSpec("1", "data block the reads, writes and the health probe address (1..65535)", int, 1, 0xFFFF),
    }
    liveness_note = ("Read Var of the first 4 bytes of the ?db= data block, after COTP CR and Setup Communication on its "
                     "own connection, answered with item return code 0xFF within the deadline")
    probe_hint = ("check ?rack= and ?slot= (the CPU's position: called TSAP 0x01, rack*32+slot) and ?db= "
                  "(a data block the CPU has, at least 4 bytes long)")

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        super().__init__(options, path)
        db, pdu = self.options["db"], self.options["pdu"]
        tsap = bytes([self.options["connection_type"], (self.options["rack"] << 5) | self.options["slot"]])
        self.called_tsap = tsap
        cr = {"called_tsap": tsap}
        setup = {"pdu_length": pdu}
        read_item = {"transport_size": 0x02, "count": 4, "db_number": db, "area": 0x84, "address": 0}
        more = item_bytes(0x02, 0, 0x83, 0) + item_bytes(BIT, db, 0x84, 5, bit=1) + item_bytes(0x1C, 0, 0x1C, 0)
        # codes: the COTP TPDU code, the S7 job function, or for userdata (function group << 8 | subfunction)
        kinds = (
            _Kind("cotp_connection_request", COTP_CR_MESSAGE, cr, COTP_CR),
            _Kind("setup_communication", SETUP_WITH_CR, {**{"cr_" + k: v for k, v in cr.items()}, **setup}, SETUP_COMMUNICATION),
            _Kind("read_var", READ_VAR_MESSAGE, read_item, READ_VAR),
            _Kind("read_var_multi", READ_VAR_MESSAGE,
                  {"item_count": 4, "transport_size": 0x02, "count": 2, "db_number": db, "area": 0x84, "address": 4 << 3,
                   "more_items": more}, READ_VAR),
            _Kind("write_var", WRITE_VAR_MESSAGE,
                  {**read_item, "data_transport_size": 0x04, "item_length": 32, "data": b"\x00\x01\x02\x03"}, WRITE_VAR, writes=True),
            _Kind("read_szl_module_identification", SZL_MESSAGE, {"szl_id": SZL_MODULE_IDENTIFICATION}, (GROUP_CPU << 8) | READ_SZL),
            _Kind("read_szl_component_identification", SZL_MESSAGE, {"szl_id": SZL_COMPONENT_IDENTIFICATION},
                  (GROUP_CPU << 8) | READ_SZL),
            _Kind("plc_stop", STOP_MESSAGE, {}, PLC_STOP, writes=True, disruptive=True),
            _Kind("plc_hot_start", PI_MESSAGE, {}, PI_SERVICE, writes=True, disruptive=True),
            _Kind("plc_cold_start", PI_MESSAGE, {"parameter_block": COLD_START}, PI_SERVICE, writes=True, disruptive=True),
        )
        self._templates = tuple(
            Template(k.name, k.message, k.values, writes=k.writes, disruptive=k.disruptive, code=k.code) for k in kinds
        )
        self._by_name = {t.name: t for t in self._templates}
        self._cr = self._by_name["cotp_connection_request"].encode()
        self._setup = SETUP_MESSAGE.encode(pdu_length=pdu)
        self._probe = Probe(self._by_name["read_var"].encode(), f"Read Var DB{db}.DBB0 BYTE x4")
        self._identify = [self._by_name["read_szl_module_identification"].encode(),
                          self._by_name["read_szl_component_identification"].encode()]

    # -- what to send -----------------------------------------------------------------------

    def templates(self) -> Sequence[Template]:
        return self._templates

    def message_types(self) -> Sequence[MessageType]:
        return (COTP_CR_MESSAGE, SETUP_WITH_CR, READ_VAR_MESSAGE, WRITE_VAR_MESSAGE, SZL_MESSAGE, STOP_MESSAGE, PI_MESSAGE)

    def probe(self) -> Probe:
        return self._probe

    def probe_ok(self, reply: bytes) -> bool:
        return self.classify(self._probe.frame, reply).kind is ReplyKind.NORMAL

    def session(self) -> S7Session:
        return S7Session([self._cr, self._setup])

    def stress_flood(self) -> tuple[bytes, str] | None:
        """Read SZL 0x0011 (module identification): a small answer every CPU gives, from its
        system status list rather than the user program's memory."""
        return self._identify[0], "read SZL 0x0011 (module identification)"

    def needs_opening(self, frame: bytes) -> bool:
        """A frame with a COTP CR in it makes its own connection (module docstring)."""
        found, _ = units(frame)
        return not any(u.kind == COTP_CR for u in found)

    def frame_length(self, frame: bytes) -> int | None:
        if len(frame) < TPKT_HEADER:
            return None
        return (frame[2] << 8) | frame[3]

    def repair(self, frame: bytes) -> bytes:
        """TPKT, COTP and S7 lengths made to agree with the octets present, packet by packet; the
        last packet takes every octet to the end of the frame."""
        packets: list[bytearray] = []
        pos = 0
        while pos < len(frame):
            start = pos
            if len(frame) - pos >= TPKT_HEADER and frame[pos] == TPKT_VERSION:
                length = (frame[pos + 2] << 8) | frame[pos + 3]
                if MIN_PACKET <= length and pos + length < len(frame) and frame[pos + length] == TPKT_VERSION:
                    packets.append(bytearray(frame[pos : pos + length]))
                    pos += length
                    continue
            packets.append(bytearray(frame[start:]))
            break
        out = bytearray()
        for packet in packets:
            out += _repair_packet(packet)
        return bytes(out)

    def structural_faults(self, template: Template) -> tuple[tuple[str, bytes], ...]:
        """Faults of every layer around one valid request, and the connection state faults."""
        frame = template.encode()
        if template.message is COTP_CR_MESSAGE:
            return distinct_faults(frame, self._cr_faults(template))
        if template.message is SETUP_WITH_CR:
            return distinct_faults(frame, self._setup_faults(template))
        return distinct_faults(frame, self._dt_faults(template, frame))

    def _dt_faults(self, template: Template, frame: bytes) -> list[tuple[str, bytes]]:
        """Connection state first, then the S7 header, the service, and the layers below (those in
        full only with one template: they do not depend on the S7 PDU inside)."""
        payload = dt_payload(frame)

        def wrapped(data: bytes, **fields: int) -> bytes:
            return DT_PACKET.encode(payload=data, **fields)

        def pdu(**fields: Any) -> bytes:
            return template.encode(**fields)

        param_length = (payload[6] << 8) | payload[7]
        data_length = (payload[8] << 8) | payload[9]
        split = len(payload) // 2
        job = payload[1] == JOB
        function = payload[JOB_HEADER] if len(payload) > JOB_HEADER else None
        faults: list[tuple[str, bytes]] = [
            ("COTP DT before the CR on a fresh connection (the request, then a CR)", frame + self._cr),
            ("COTP DR, then the request", COTP_DR_MESSAGE.encode() + frame),
            ("COTP CR on an established connection, then the request", self._cr + self._setup + self._cr + frame),
            (f"{'job' if job else 'userdata request'} before Setup Communication (CR, then the request)", self._cr + frame),
            ("protocol id 0x33", pdu(protocol_id=0x33)),
            ("protocol id 0x72 (S7comm-plus)", pdu(protocol_id=0x72)),
            ("protocol id 0x00", pdu(protocol_id=0x00)),
            ("ROSCTR 0 (undefined)", pdu(rosctr=0)),
            ("ROSCTR 2 (ack) from the client", pdu(rosctr=ACK)),
            ("ROSCTR 3 (ack-data) from the client", pdu(rosctr=ACK_DATA)),
            (f"ROSCTR {USERDATA if job else JOB} ({'userdata' if job else 'job'}) on this request", pdu(rosctr=USERDATA if job else JOB)),
            ("redundancy id 0xFFFF (reserved)", pdu(redundancy_id=0xFFFF)),
            ("PDU reference offset 0xFFFF: reuses the previous reference", pdu(pdu_ref=0xFFFF)),
            ("parameter length one more than present", pdu(param_length=param_length + 1)),
            ("parameter length one less than present", pdu(param_length=max(param_length - 1, 0))),
            ("parameter length 0", pdu(param_length=0)),
            ("parameter length 0xFFFF", pdu(param_length=0xFFFF)),
            ("data length one more than present", pdu(data_length=data_length + 1)),
            ("data length 0xFFFF", pdu(data_length=0xFFFF)),
            ("S7 header cut to 9 octets, TPKT adjusted", wrapped(payload[:9])),
            ("S7 header only, lengths say nothing follows", wrapped(payload[:6] + bytes(4))),
            ("one octet after the S7 PDU, S7 lengths unchanged", wrapped(payload + b"\x00")),
            ("S7 PDU above the negotiated PDU size (500 extra data octets counted)",
             wrapped(payload[:8] + (data_length + 500).to_bytes(2, "big") + payload[10:] + bytes(500))),
        ]
        if function in (READ_VAR, WRITE_VAR):
            faults += self._var_faults(template, pdu, wrapped, payload)
        elif not job:
            faults += self._userdata_faults(pdu)
        elif function in (PI_SERVICE, PLC_STOP):
            faults += [
                ("PI service name P_PROGRAX (undefined)", pdu(pi_service=b"P_PROGRAX")),
                ("PI service name empty", pdu(pi_service=b"")),
                ("PI service length one more than the name", pdu(pi_service_length=len(b"P_PROGRAM") + 1)),
                ("PI service length 0xFF", pdu(pi_service_length=0xFF)),
            ]
            if function == PI_SERVICE:
                faults.append(("PI parameter block length 0xFFFF", pdu(parameter_block_length=0xFFFF)))
        if job:
            faults += [(f"function 0x{fc:02x} ({FUNCTIONS.get(fc, 'undefined')})", pdu(function=fc)) for fc in (0x00, 0x03, 0x1A, 0xFF)]
        faults += [
            ("TPKT length one short of the packet", pdu(tpkt_length=len(frame) - 1)),
            ("TPKT length one longer than the packet", pdu(tpkt_length=len(frame) + 1)),
            ("COTP DT without EOT, nothing follows", pdu(cotp_eot=0x00)),
            ("S7 PDU in two DT fragments (valid segmentation)", wrapped(payload[:split], cotp_eot=0) + wrapped(payload[split:])),
        ]
        if template.name == LINK_FAULTS_WITH:
            faults += [
                ("TPKT version 2", pdu(tpkt_version=2)),
                ("TPKT version 0xFF", pdu(tpkt_version=0xFF)),
                ("TPKT reserved octet 0xFF", pdu(tpkt_reserved=0xFF)),
                ("TPKT length 0", pdu(tpkt_length=0)),
                ("TPKT length 4 (header only)", pdu(tpkt_length=4)),
                ("TPKT length 6, below the shortest TPDU", pdu(tpkt_length=6)),
                ("TPKT length 0xFFFF", pdu(tpkt_length=0xFFFF)),
                ("cut inside the COTP header, TPKT adjusted", _retpkt(frame[:6])),
                ("COTP length 0", pdu(cotp_length=0)),
                ("COTP length 1 (no EOT octet)", pdu(cotp_length=1)),
                ("COTP length 3 with one extra header octet, TPKT adjusted",
                 _retpkt(frame[:4] + b"\x03" + frame[5:7] + b"\x00" + payload)),
                ("COTP length 0xFF", pdu(cotp_length=0xFF)),
                ("COTP type CR instead of DT", pdu(cotp_type=COTP_CR)),
                ("COTP type CC (sent by the responder)", pdu(cotp_type=COTP_CC)),
                ("COTP type ED (expedited data, not in class 0)", pdu(cotp_type=0x10)),
                ("COTP type 0x00 (undefined)", pdu(cotp_type=0x00)),
                ("COTP DT with TPDU-NR bits set beside EOT", pdu(cotp_eot=0x81)),
                ("S7 PDU in two DT fragments, the second without EOT",
                 wrapped(payload[:split], cotp_eot=0) + wrapped(payload[split:], cotp_eot=0)),
                ("S7 PDU in 30 one-octet DT fragments", b"".join(wrapped(payload[i : i + 1], cotp_eot=0) for i in range(29))
                 + wrapped(payload[29:])),
                ("DT of 1100 octets, above the 1024-octet TPDU size", wrapped(payload + bytes(1100 - len(payload)))),
            ]
        return faults

    def _var_faults(self, template: Template, pdu: Callable[..., bytes], wrapped: Callable[..., bytes],
                    payload: bytes) -> list[tuple[str, bytes]]:
        values = dict(template.values)
        count = values.get("item_count", 1)
        more = values.get("more_items", b"")
        item = ITEM.encode({f.name: values[f.name] for f in ITEM.fields if f.name in values})
        faults = [
            ("item count 0", pdu(item_count=0)),
            (f"item count {count + 1}, {count} present", pdu(item_count=count + 1)),
            ("area 0x00 (undefined)", pdu(area=0x00)),
            ("area 0xFF (undefined)", pdu(area=0xFF)),
            ("transport size 0x00 (undefined)", pdu(transport_size=0x00)),
            ("transport size 0xFF (undefined)", pdu(transport_size=0xFF)),
            ("count 0", pdu(count=0)),
            ("DB number 0", pdu(db_number=0)),
            ("DB number 9999 (does not exist)", pdu(db_number=9999)),
            ("byte address with bit offset 3 on a BYTE item", pdu(address=3)),
            ("address 0xFFFFFF (above the 16-bit byte address)", pdu(address=0xFFFFFF)),
        ]
        if template.message is READ_VAR_MESSAGE:
            return faults + [
                ("item count 255", pdu(item_count=255)),
                ("variable specification 0x00", pdu(var_spec=0)),
                ("spec length 9", pdu(spec_length=9)),
                ("spec length 11", pdu(spec_length=11)),
                ("syntax id 0xB0 (DB read, another layout)", pdu(syntax_id=0xB0)),
                ("area DI (instance data block)", pdu(area=0x85)),
                ("area local data (L), not reachable over the network", pdu(area=0x86)),
                ("transport size 0x0D (undefined)", pdu(transport_size=0x0D)),
                ("transport size COUNTER on a DB item", pdu(transport_size=0x1C)),
                ("BIT item with count 2", pdu(transport_size=BIT, count=2)),
                ("count 1000: the data needs more than the PDU", pdu(count=1000)),
                ("count 0xFFFF", pdu(count=0xFFFF)),
                ("DB number 65535 (does not exist)", pdu(db_number=0xFFFF)),
                ("start at the last 16-bit byte address 65535", pdu(address=0xFFFF << 3)),
                ("40 items: the request is above the PDU size", pdu(item_count=40, more_items=item * 39)),
                ("more items present than counted", pdu(item_count=max(1, count - 1))),
                ("half an item after the counted ones", pdu(more_items=more + ITEM.encode()[:6])),
                ("4 data octets after a Read Var, counted in the data length",
                 wrapped(payload[:8] + b"\x00\x04" + payload[10:] + b"\xff\x04\x00\x08")),
            ]
        data = values.get("data", b"")
        return faults + [
            ("data item length one octet (8 bits) longer than the data", pdu(item_length=(len(data) + 1) * 8)),
            ("data item length 0 with data present", pdu(item_length=0)),
            ("data item length in octets where bits are due", pdu(item_length=len(data))),
            ("data transport size NULL", pdu(data_transport_size=0)),
            ("data transport size 0xFF (undefined)", pdu(data_transport_size=0xFF)),
            ("data item return code 0xFF in a request (reserved)", pdu(return_code=0xFF)),
            ("data one octet short, item length adjusted", pdu(data=data[:-1], item_length=(len(data) - 1) * 8)),
            ("count 2 but 4 octets of data", pdu(count=2)),
            ("item count 2, one item and one data item", pdu(item_count=2)),
            ("no data part at all, data length 0", wrapped(payload[:8] + b"\x00\x00" + payload[10 : -len(data) - 4])),
            ("write of 1000 octets: the request is above the PDU size", pdu(count=1000, item_length=8000, data=bytes(1000))),
        ]

    @staticmethod
    def _userdata_faults(pdu: Callable[..., bytes]) -> list[tuple[str, bytes]]:
        return [
            ("userdata parameter head 0x000113", pdu(param_head=0x000113)),
            ("userdata parameter length 8 with 4 octets", pdu(ud_param_length=8)),
            ("userdata parameter length 0", pdu(ud_param_length=0)),
            ("userdata method 0x00", pdu(method=0x00)),
            ("userdata type response (8) in a request", pdu(type_group=(UD_TYPE_RESPONSE << 4) | GROUP_CPU)),
            ("userdata type 0 (push) in a request", pdu(type_group=GROUP_CPU)),
            ("userdata function group 0 (undefined)", pdu(type_group=UD_TYPE_REQUEST << 4)),
            ("userdata function group 0xF (undefined)", pdu(type_group=(UD_TYPE_REQUEST << 4) | 0xF)),
            ("SZL subfunction 0xFF (undefined)", pdu(subfunction=0xFF)),
            ("SZL data length 2 (ID only)", pdu(szl_data_length=2)),
            ("SZL data transport size NULL", pdu(szl_transport_size=0)),
            ("SZL request return code 0x00", pdu(szl_return_code=0)),
            ("SZL ID 0xFFFF (not a list)", pdu(szl_id=0xFFFF)),
            ("SZL index 0xFFFF", pdu(szl_index=0xFFFF)),
        ]

    def _cr_faults(self, template: Template) -> list[tuple[str, bytes]]:
        def cr(**fields: Any) -> bytes:
            return template.encode(**fields)

        frame = template.encode()
        li = frame[4]
        return [
            ("TPKT version 2", cr(tpkt_version=2)),
            ("TPKT length one short", cr(tpkt_length=len(frame) - 1)),
            ("TPKT length one long", cr(tpkt_length=len(frame) + 1)),
            ("COTP length one short", cr(cotp_length=li - 1)),
            ("COTP length one long", cr(cotp_length=li + 1)),
            ("COTP length 0", cr(cotp_length=0)),
            ("COTP length 6 (no parameters counted)", cr(cotp_length=6)),
            ("CR cut after the fixed part, lengths adjusted", _retpkt(frame[:4] + b"\x06" + frame[5:11])),
            ("destination reference 0x1234 (must be 0 in a CR)", cr(dst_ref=0x1234)),
            ("class 4 with extended formats asked", cr(class_option=0x42)),
            ("class 5 (undefined)", cr(class_option=0x50)),
            ("TPDU size code 6 (64 octets, below class 0)", cr(tpdu_size=6)),
            ("TPDU size code 12 (4096 octets, above class 0)", cr(tpdu_size=12)),
            ("TPDU size code 0xFF", cr(tpdu_size=0xFF)),
            ("TPDU size parameter of 2 octets", cr(tpdu_size_length=2)),
            ("called TSAP length 0xFF, past the header", cr(called_tsap_length=0xFF)),
            ("calling TSAP empty", cr(calling_tsap=b"")),
            ("called TSAP of rack 7 slot 31", cr(called_tsap=bytes([self.called_tsap[0], 0xFF]))),
            ("called TSAP empty", cr(called_tsap=b"")),
            ("parameter code 0xC0 twice", _retpkt_cr(frame + bytes([PARAM_TPDU_SIZE, 1, DEFAULT_TPDU_CODE]))),
            ("unknown parameter 0xF0 appended", _retpkt_cr(frame + b"\xf0\x01\x00")),
            ("COTP type 0xE1 (credit in class 0)", cr(cotp_type=0xE1)),
            ("CR twice", frame + frame),
        ]

    def _setup_faults(self, template: Template) -> list[tuple[str, bytes]]:
        def setup(**fields: Any) -> bytes:
            return template.encode(**fields)

        return [
            ("PDU length 0", setup(pdu_length=0)),
            ("PDU length 11, below an ack-data header", setup(pdu_length=11)),
            ("PDU length 0xFFFF (the CPU negotiates down)", setup(pdu_length=0xFFFF)),
            ("max AmQ calling 0", setup(max_amq_calling=0)),
            ("max AmQ called 0", setup(max_amq_called=0)),
            ("max AmQ calling 0xFFFF", setup(max_amq_calling=0xFFFF)),
            ("reserved octet 0xFF", setup(setup_reserved=0xFF)),
            ("parameter length 7", setup(param_length=7)),
            ("parameter part cut to 7 octets, lengths adjusted", self._cr + _repair_packet(bytearray(self._setup[:-1]))),
            ("8 data octets after Setup Communication, counted", self._cr + _repair_packet(bytearray(self._setup + bytes(8)))),
            ("Setup Communication before the CR (DT, then CR)", self._setup + self._cr),
            ("Setup Communication twice", setup() + self._setup),
            ("CR with TPDU size code 7 (128 octets), then Setup Communication", setup(cr_tpdu_size=7)),
            ("ROSCTR userdata on Setup Communication", setup(rosctr=USERDATA)),
        ]

    # -- what came back ---------------------------------------------------------------------

    def check_request(self, frame: bytes) -> list[str]:
        found, rest = units(frame)
        problems: list[str] = []
        if rest and (not found or rest[0] == TPKT_VERSION):
            problems.append(_unframed(rest))
        opened = self.needs_opening(frame)
        state = _State(connected=opened, set_up=opened, pdu=self.options["pdu"], tpdu=1 << DEFAULT_TPDU_CODE)
        for n, unit in enumerate(found, start=1):
            where = f"TPDU {n}: " if len(found) > 1 else ""
            problems += [where + p for p in self._check_unit(unit, state)]
        return problems

    def _check_unit(self, unit: Unit, state: _State) -> list[str]:
        problems: list[str] = []
        for packet in unit.packets:  # (the TPKT reserved octet is a fault to send; nothing requires refusing it)
            if TPKT_HEADER + 1 + packet[4] > len(packet):
                problems.append(f"cotp_length={packet[4]} runs past the TPKT packet ({len(packet) - TPKT_HEADER - 1} octets)")
        kind = unit.kind
        if kind == COTP_CR:
            if state.connected:
                problems.append("cotp CR on an established connection")
            problems += _check_cr(unit.packet, state)
            state.connected, state.set_up = True, False
            return problems
        if kind == COTP_DR:
            state.connected, state.disconnected = False, True
            return problems + _check_dr(unit.packet)
        if kind != COTP_DT:
            name = COTP_TYPES.get(kind)
            if kind in RESPONDER_TYPES:
                return problems + [f"cotp_type=0x{kind:02x} ({name}) is sent by the responder, not a client"]
            if name:
                return problems + [f"cotp_type=0x{kind:02x} ({name}) is not used in class 0"]
            return problems + [f"cotp_type=0x{kind:02x} is not a defined TPDU"]
        if not state.connected:
            problems.append("cotp DT after a disconnect request (DR)" if state.disconnected else "cotp DT before the connection request (CR)")
        for packet in unit.packets:
            if packet[4] != 2:
                problems.append(f"cotp_length={packet[4]}: a class 0 DT header is 2 octets")
            if len(packet) - TPKT_HEADER > state.tpdu:
                problems.append(f"tpdu of {len(packet) - TPKT_HEADER} octets above the TPDU size {state.tpdu} of the connection")
        if not unit.complete:
            problems.append("cotp_eot=0: the TSDU never ends (no DT with EOT follows)")
        return problems + self._check_s7(unit.payload, state)

    def _check_s7(self, payload: bytes, state: _State) -> list[str]:
        pdu = parse_s7(payload, request=True)
        if isinstance(pdu, str):
            return [pdu]
        problems: list[str] = []
        if pdu.rosctr not in (JOB, USERDATA):
            name = ROSCTR.get(pdu.rosctr)
            return [f"rosctr={pdu.rosctr}{f' ({name})' if name else ''} is not a request (job 1 or userdata 7)"]
        if pdu.problem:
            problems.append(pdu.problem)
        if len(payload) > state.pdu:
            problems.append(f"s7 PDU of {len(payload)} octets above the PDU size {state.pdu}")
        if pdu.rosctr == USERDATA:
            if not state.set_up:
                problems.append("userdata request before Setup Communication")
            return problems + _check_userdata(pdu)
        function = pdu.function
        if function is None:
            return problems + ["param_length=0: a job carries a function code"]
        if function == SETUP_COMMUNICATION:
            more, asked = _check_setup(pdu)
            state.set_up = True
            if asked is not None and asked >= PDU_MINIMUM:
                state.pdu = min(state.pdu, asked)
            return problems + more
        if not state.set_up:
            problems.append(f"{FUNCTIONS.get(function, 'job')} before Setup Communication")
        if function == READ_VAR:
            return problems + _check_var(pdu, state.pdu, write=False)
        if function == WRITE_VAR:
            return problems + _check_var(pdu, state.pdu, write=True)
        if function in (PI_SERVICE, PLC_STOP):
            return problems + _check_pi(pdu)
        if function not in FUNCTIONS:
            problems.append(f"function=0x{function:02x} is not a defined S7 job function")
        return problems

    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        packets, rest = split_packets(reply)
        if not packets:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{len(reply)} octets that do not frame as a TPKT packet")
        if rest:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{len(rest)} octets after the TPKT packets of the reply")
        asked = last_request(request)
        kind = cotp_type(packets[0])
        if kind != COTP_DT:
            return _classify_cotp(asked, packets[0], len(packets))
        payload = b""
        for n, packet in enumerate(packets):
            if cotp_type(packet) != COTP_DT or packet[4] != 2:
                return ReplyVerdict(ReplyKind.MALFORMED, f"DT fragment {n + 1} of the reply has cotp_length={packet[4]}, not 2")
            if bool(packet[6] & EOT) != (n == len(packets) - 1):
                return ReplyVerdict(ReplyKind.MALFORMED, f"EOT on DT fragment {n + 1} of {len(packets)}")
            payload += dt_payload(packet)
        pdu = parse_s7(payload)
        if isinstance(pdu, str):
            return ReplyVerdict(ReplyKind.MALFORMED, pdu)
        if pdu.problem:
            return ReplyVerdict(ReplyKind.MALFORMED, pdu.problem)
        if len(payload) > self.options["pdu"]:
            return ReplyVerdict(ReplyKind.MALFORMED, f"reply PDU of {len(payload)} octets above the PDU size {self.options['pdu']} asked for")
        want = asked.s7 if asked is not None and asked.kind == COTP_DT else None
        if pdu.rosctr == USERDATA:
            if want is not None and want.rosctr != USERDATA:
                return ReplyVerdict(ReplyKind.MALFORMED, f"userdata PDU answers a {_function_name(want)} job")
            return _classify_userdata(asked, pdu)
        if pdu.rosctr not in (ACK, ACK_DATA):
            return ReplyVerdict(ReplyKind.MALFORMED, f"rosctr={pdu.rosctr} ({ROSCTR.get(pdu.rosctr, 'undefined')}) is not an answer")
        if want is not None and want.rosctr == USERDATA:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{ROSCTR[pdu.rosctr]} PDU answers a userdata request")
        if pdu.error:
            return ReplyVerdict(ReplyKind.EXCEPTION, error_text(pdu.error))
        if pdu.function is None:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{ROSCTR[pdu.rosctr]} without error and without parameters")
        if want is not None and want.function is not None and pdu.function != want.function:
            return ReplyVerdict(ReplyKind.MALFORMED,
                                f"function 0x{pdu.function:02x} answers a request of function 0x{want.function:02x}")
        return _classify_job(asked if want is not None else None, pdu)

    def keeps_connection(self, request: bytes, reply: bytes) -> bool:
        """A COTP disconnect request ends the connection; a job whose function otfuzz does not
        model (CPU services, the download and upload functions) may be one the target does not
        serve at all: it may end the connection."""
        asked = last_request(request)
        if not reply and asked is not None and asked.kind in (COTP_DR, COTP_DC, COTP_ER):
            return False  # a disconnect (or an error) asks the target to end the connection
        if reply or asked is None or asked.kind != COTP_DT or asked.s7 is None or asked.s7.rosctr != JOB:
            return True
        return asked.s7.function in (SETUP_COMMUNICATION, READ_VAR, WRITE_VAR, PI_SERVICE, PLC_STOP)

    def is_write(self, frame: bytes) -> bool:
        """Conservative: every job that is not a read or Setup Communication, every userdata
        service that is not a known read, wherever a lenient CPU might find one (a DT payload
        taken at its LI or at the fixed 3-octet header, rosctr 2/3 treated as a job)."""
        packets, rest = split_packets(frame)
        for payload in _payload_readings(packets, rest):
            if _may_write(payload):
                return True
        return False

    def request_type(self, frame: bytes) -> str | None:
        """The template name the last request unit's own dispatch fields select."""
        asked = last_request(frame)
        if asked is None:
            return None
        if asked.kind == COTP_CR:
            found, _ = units(frame)
            return "setup_communication" if len(found) > 1 else "cotp_connection_request"
        pdu = asked.s7
        if asked.kind != COTP_DT or pdu is None:
            return f"cotp_{COTP_TYPES.get(asked.kind, f'0x{asked.kind:02x}').lower()}"
        if pdu.rosctr == USERDATA:
            if asked.szl is not None:
                return {SZL_MODULE_IDENTIFICATION: "read_szl_module_identification",
                        SZL_COMPONENT_IDENTIFICATION: "read_szl_component_identification"}.get(asked.szl[0], "read_szl")
            return "userdata"
        function = pdu.function
        if function == SETUP_COMMUNICATION:
            return "setup_communication"
        if function == READ_VAR:
            return "read_var_multi" if len(pdu.params) > 1 and pdu.params[1] > 1 else "read_var"
        if function == WRITE_VAR:
            return "write_var"
        if function == PLC_STOP:
            return "plc_stop"
        if function == PI_SERVICE:
            try:
                block = PI_PARAMS.decode_prefix(pdu.params)[0]["parameter_block"]
            except DecodeError:
                return "pi_service"
            return "plc_cold_start" if block == COLD_START else "plc_hot_start" if not block else "pi_service"
        if function is None:
            return None
        return f"{'function' if function in FUNCTIONS else 'undefined_function'}_0x{function:02x}"

    def describe(self, frame: bytes) -> str:
        found, rest = units(frame)
        parts = [_describe_unit(u) for u in found]
        if rest:
            parts.append(f"{len(rest)} unframed octets")
        return "; ".join(parts) or "empty frame"

    def identify(self) -> list[bytes]:
        return list(self._identify)

    def parse_identity(self, reply: bytes) -> dict[str, str]:
        """Product (order number), revision and module names from the SZL identification lists."""
        packets, _ = split_packets(reply)
        if not packets:
            return {}
        pdu = parse_s7(b"".join(dt_payload(p) for p in packets if cotp_type(p) == COTP_DT))
        if isinstance(pdu, str) or pdu.rosctr != USERDATA:
            return {}
        szl = _szl_records(pdu.data)
        if isinstance(szl, str):
            return {}
        szl_id, _, size, records = szl
        out: dict[str, str] = {}
        if szl_id & 0xFF == SZL_MODULE_IDENTIFICATION & 0xFF:
            for record in records:
                if len(record) < 22:
                    continue
                index, mlfb = (record[0] << 8) | record[1], _text(record[2:22])
                if index == 0x0001 and mlfb:
                    out["product_code"] = mlfb
                    if mlfb.startswith("6ES7"):
                        out["vendor"] = "Siemens"
                if size == 28 and record[24] == ord("V"):
                    out["revision"] = f"V{record[25]}.{record[26]}.{record[27]}"
                elif size < 28 and index == 0x0001 and "revision" not in out:
                    out["revision"] = f"V{record[-3]}.{record[-2]}.{record[-1]}"  # python-snap7's 26-octet record
        elif szl_id & 0xFF == SZL_COMPONENT_IDENTIFICATION:
            names = {1: "name", 2: "module_name", 4: "copyright", 5: "serial_number", 7: "module_type"}
            for record in records:
                index = (record[0] << 8) | record[1] if len(record) >= 2 else 0
                if index in names and _text(record[2:]):
                    out[names[index]] = _text(record[2:])
            if "Siemens" in out.get("copyright", ""):
                out["vendor"] = "Siemens"
            if "module_type" in out:
                out["product"] = out["module_type"]
        return out

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        return {
            "area": tuple(AREAS),
            "transport_size": tuple(TRANSPORT_SIZES),
            "data_transport_size": tuple(DATA_TRANSPORT_SIZES),
            "syntax_id": (S7ANY, 0x11, 0x12, 0x13, 0xB0, 0xB2),
            "function": tuple(FUNCTIONS),
            "rosctr": tuple(ROSCTR),
            "cotp_type": tuple(COTP_TYPES),
            "tpdu_size": tuple(range(7, 14)),
            "szl_id": tuple(SZL_IDS),
            "type_group": tuple((UD_TYPE_REQUEST << 4) | g for g in UD_GROUPS),
            "return_code": tuple(ITEM_RETURN_CODES),
            "pi_service": tuple(sorted(PI_SERVICES)),
            "parameter_block": (b"", COLD_START),
            "reason": tuple(DR_REASONS),
        }


# -- request checks ----------------------------------------------------------------------------


@dataclass
class _State:
    """What `check_request` knows of the connection while walking the units of one frame."""

    connected: bool
    set_up: bool
    pdu: int
    tpdu: int
    disconnected: bool = False


def _unframed(rest: bytes) -> str:
    if rest[0] != TPKT_VERSION:
        return f"tpkt_version={rest[0]}: {len(rest)} octets that do not start a TPKT packet"
    if len(rest) < TPKT_HEADER:
        return f"TPKT header cut to {len(rest)} octets"
    length = (rest[2] << 8) | rest[3]
    if length < MIN_PACKET:
        return f"tpkt_length={length} below the shortest TPDU ({MIN_PACKET} octets)"
    return f"tpkt_length={length} but {len(rest)} octets follow"


def _check_cr(packet: bytes, state: _State) -> list[str]:
    problems: list[str] = []
    li = packet[4]
    if li < 6 or len(packet) < TPKT_HEADER + 7:
        return [f"cotp_length={li}: a CR header is at least 6 octets"]
    if TPKT_HEADER + 1 + li < len(packet):
        problems.append(f"cotp_length={li} but {len(packet) - TPKT_HEADER - 1} octets follow (a CR carries no user data here)")
    if packet[5] & 0x0F:
        problems.append(f"cotp_type=0x{packet[5]:02x}: the credit is 0 in class 0")
    dst_ref = (packet[6] << 8) | packet[7]
    if dst_ref:
        problems.append(f"dst_ref={dst_ref}: a CR carries destination reference 0")
    if packet[10] >> 4 > 4:
        problems.append(f"class_option=0x{packet[10]:02x}: class {packet[10] >> 4} is not defined (0..4)")
    params, problem = cotp_parameters(packet[TPKT_HEADER + 7 : TPKT_HEADER + 1 + li])
    if problem:
        problems.append(problem)
    size = params.get(PARAM_TPDU_SIZE)
    if size is not None:
        if len(size) != 1:
            problems.append(f"tpdu_size_length={len(size)}: the TPDU size parameter is 1 octet")
        elif size[0] not in TPDU_SIZES:
            problems.append(f"tpdu_size={size[0]} outside {TPDU_SIZES.start}..{TPDU_SIZES.stop - 1} (128..2048 octets in class 0)")
        else:
            state.tpdu = 1 << size[0]
    return problems


def _check_dr(packet: bytes) -> list[str]:
    if packet[4] < 6 or len(packet) < TPKT_HEADER + 7:
        return [f"cotp_length={packet[4]}: a DR header is at least 6 octets"]
    return []


def _parameters_only(pdu: S7Pdu, layout: MessageType, title: str) -> tuple[dict[str, Any] | None, list[str]]:
    """The parameter part of a job that carries no data, decoded by its declaration."""
    problems = [f"data_length={len(pdu.data)}: {title} carries no data"] if pdu.data else []
    try:
        return layout.decode(pdu.params), problems
    except DecodeError as exc:
        return None, problems + [f"{layout.name}: {exc}"]


def _check_setup(pdu: S7Pdu) -> tuple[list[str], int | None]:
    values, problems = _parameters_only(pdu, SETUP_PARAMS, "Setup Communication")
    if values is None:
        return problems, None
    return problems + SETUP_PARAMS.violations(values), values["pdu_length"]


def _check_var(pdu: S7Pdu, pdu_size: int, *, write: bool) -> list[str]:
    params = pdu.params
    if len(params) < 2:
        return ["param_length=1: no item count after the function"]
    count = params[1]
    problems: list[str] = []
    if count == 0:
        problems.append("item_count=0 below minimum 1")
    raw_items, leftover = split_items(params)
    if leftover:
        problems.append(f"{len(leftover)} octets after the last whole item in the parameter part")
    if count != len(raw_items):
        problems.append(f"item_count={count} but {len(raw_items)} items follow")
    items: list[dict[str, Any]] = []
    for n, raw in enumerate(raw_items, start=1):
        values, bad = decode_item(raw)
        where = f"item {n}: " if len(raw_items) > 1 else ""
        problems += [where + b for b in bad]
        if values is not None:
            items.append(values)
    if not write:
        if pdu.data:
            problems.append(f"data_length={len(pdu.data)}: Read Var carries no data")
        reply = REPLY_HEADER + 2
        for n, values in enumerate(items):
            octets = item_octets(values) or 0
            reply += 4 + octets + (1 if octets % 2 and n < len(items) - 1 else 0)
        if reply > pdu_size:
            problems.append(f"reply_size={reply} octets for the items asked, above the PDU size {pdu_size}")
        return problems
    data_items, problem = split_data_items(pdu.data, len(raw_items), reply=False)
    if problem:
        problems.append(problem)
    for n, ((_, size, length, data), values) in enumerate(zip(data_items, items), start=1):
        where = f"data item {n}: " if len(data_items) > 1 else ""
        if size not in DATA_TRANSPORT_SIZES or size == 0:
            problems.append(where + f"data_transport_size={size} is not a data transport size")
            continue
        want = item_octets(values)
        if want is not None and len(data) != want:
            problems.append(where + f"item_length={length} carries {len(data)} octets but count={values['count']} "
                                    f"of {TRANSPORT_SIZES[values['transport_size']][0]} needs {want}")
    return problems


def _check_pi(pdu: S7Pdu) -> list[str]:
    layout = PI_PARAMS if pdu.function == PI_SERVICE else STOP_PARAMS
    values, problems = _parameters_only(pdu, layout, FUNCTIONS[pdu.function or 0])
    if values is None:
        return problems
    service = values["pi_service"]
    if service not in PI_SERVICES:
        problems.append(f"pi_service of {len(service)} octets is not a defined PI service name")
    elif pdu.function == PLC_STOP and service != b"P_PROGRAM":
        problems.append(f"pi_service of {len(service)} octets: PLC Stop names P_PROGRAM")
    return problems


def _check_userdata(pdu: S7Pdu) -> list[str]:
    try:
        values, end = UD_PARAMS.decode_prefix(pdu.params)
    except DecodeError as exc:
        return [f"userdata parameters: {exc}"]
    problems = UD_PARAMS.violations(values)
    if values["ud_param_length"] != len(pdu.params) - 4:
        problems.append(f"ud_param_length={values['ud_param_length']} but {len(pdu.params) - 4} octets follow")
    kind, group = values["type_group"] >> 4, values["type_group"] & 0x0F
    if kind != UD_TYPE_REQUEST:
        problems.append(f"userdata type={kind}: a request has type 4")
    if group not in UD_GROUPS:
        problems.append(f"userdata function group={group} is not defined")
    if (group, values["subfunction"]) == (GROUP_CPU, READ_SZL) and values["method"] == UD_REQUEST_METHOD:
        try:
            data = SZL_REQUEST_DATA.decode(pdu.data)
        except DecodeError as exc:
            return problems + [f"read SZL data: {exc}"]
        problems += SZL_REQUEST_DATA.violations(data)
        if data["szl_data_length"] != 4:
            problems.append(f"szl_data_length={data['szl_data_length']}: a read SZL request carries ID and index (4 octets)")
    elif group == GROUP_CPU and values["subfunction"] not in CPU_SUBFUNCTIONS:
        problems.append(f"subfunction={values['subfunction']} is not a defined CPU function")
    return problems


# -- reply checks ------------------------------------------------------------------------------


def _classify_cotp(asked: Request | None, packet: bytes, count: int) -> ReplyVerdict:
    kind = cotp_type(packet)
    name = COTP_TYPES.get(kind, f"TPDU 0x{kind:02x}")
    if count > 1:
        return ReplyVerdict(ReplyKind.MALFORMED, f"{count} TPKT packets in one reply starting with COTP {name}")
    if kind == COTP_DR:
        reason = packet[TPKT_HEADER + 6] if len(packet) > TPKT_HEADER + 6 else None
        text = f"COTP DR reason 0x{reason:02x} {DR_REASONS.get(reason, 'undefined')}" if reason is not None else "COTP DR"
        return ReplyVerdict(ReplyKind.EXCEPTION, text)
    if kind == COTP_ER:
        cause = packet[8] if len(packet) > 8 else None
        return ReplyVerdict(ReplyKind.EXCEPTION, f"COTP ER reject cause {cause if cause is not None else '?'}")
    if kind == COTP_DC:
        if asked is not None and asked.kind == COTP_DR:
            return ReplyVerdict(ReplyKind.NORMAL, "COTP DC")
        return ReplyVerdict(ReplyKind.MALFORMED, "unexpected COTP DC")
    if kind != COTP_CC:
        return ReplyVerdict(ReplyKind.MALFORMED, f"COTP {name} is not an answer")
    if asked is None or asked.kind != COTP_CR:
        return ReplyVerdict(ReplyKind.MALFORMED, "unexpected COTP CC")
    li = packet[4]
    if li < 6 or TPKT_HEADER + 1 + li != len(packet):
        return ReplyVerdict(ReplyKind.MALFORMED, f"COTP CC with cotp_length={li} in a packet of {len(packet)} octets")
    dst_ref = (packet[6] << 8) | packet[7]
    if dst_ref != asked.src_ref:
        return ReplyVerdict(ReplyKind.MALFORMED, f"COTP CC dst_ref={dst_ref} does not echo src_ref={asked.src_ref} of the CR")
    if packet[10] >> 4:
        return ReplyVerdict(ReplyKind.MALFORMED, f"COTP CC class {packet[10] >> 4}: ISO-on-TCP is class 0")
    params, problem = cotp_parameters(packet[TPKT_HEADER + 7 :])
    if problem:
        return ReplyVerdict(ReplyKind.MALFORMED, f"COTP CC: {problem}")
    size = params.get(PARAM_TPDU_SIZE)
    if size is not None and len(size) == 1 and asked.tpdu_code in TPDU_SIZES and size[0] > asked.tpdu_code:
        return ReplyVerdict(ReplyKind.MALFORMED, f"COTP CC TPDU size code {size[0]} above the {asked.tpdu_code} asked for")
    shown = f", TPDU size {1 << size[0]}" if size is not None and len(size) == 1 and size[0] < 16 else ""
    return ReplyVerdict(ReplyKind.NORMAL, f"COTP CC{shown}")


def _classify_job(asked: Request | None, pdu: S7Pdu) -> ReplyVerdict:
    function = pdu.function
    name = FUNCTIONS.get(function or 0, f"function 0x{function:02x}")
    if function == SETUP_COMMUNICATION:
        if len(pdu.params) != 8:
            return ReplyVerdict(ReplyKind.MALFORMED, f"Setup Communication reply parameters of {len(pdu.params)} octets, not 8")
        values = SETUP_PARAMS.decode(pdu.params)
        negotiated = values["pdu_length"]
        if values["max_amq_calling"] < 1 or values["max_amq_called"] < 1:
            return ReplyVerdict(ReplyKind.MALFORMED, "Setup Communication reply with max AmQ 0")
        if asked is not None and asked.pdu_length is not None and negotiated > asked.pdu_length and asked.pdu_length >= PDU_MINIMUM:
            return ReplyVerdict(ReplyKind.MALFORMED, f"negotiated PDU size {negotiated} above the {asked.pdu_length} asked for")
        return ReplyVerdict(ReplyKind.NORMAL, f"Setup Communication: PDU size {negotiated}, "
                                              f"max AmQ {values['max_amq_calling']}/{values['max_amq_called']}")
    if function == READ_VAR:
        return _classify_read(asked, pdu)
    if function == WRITE_VAR:
        if len(pdu.params) != 2:
            return ReplyVerdict(ReplyKind.MALFORMED, f"Write Var reply parameters of {len(pdu.params)} octets, not 2")
        count = pdu.params[1]
        if len(pdu.data) != count:
            return ReplyVerdict(ReplyKind.MALFORMED, f"Write Var reply: item_count={count} but {len(pdu.data)} return codes")
        if asked is not None and asked.s7 is not None and not _answers_count(count, asked):
            return ReplyVerdict(ReplyKind.MALFORMED, f"Write Var reply of {count} items answers {len(asked.items)}")
        failed = [f"item {n}: {return_code_text(c)}" for n, c in enumerate(pdu.data, start=1) if c != SUCCESS]
        if failed:
            return ReplyVerdict(ReplyKind.EXCEPTION, "Write Var " + "; ".join(failed))
        return ReplyVerdict(ReplyKind.NORMAL, f"Write Var: {count} items written")
    return ReplyVerdict(ReplyKind.NORMAL, f"{name} acknowledged")


def _classify_read(asked: Request | None, pdu: S7Pdu) -> ReplyVerdict:
    if len(pdu.params) != 2:
        return ReplyVerdict(ReplyKind.MALFORMED, f"Read Var reply parameters of {len(pdu.params)} octets, not 2")
    count = pdu.params[1]
    items, problem = split_data_items(pdu.data, count, reply=True)
    if problem:
        return ReplyVerdict(ReplyKind.MALFORMED, f"Read Var reply: {problem}")
    want = asked.items if asked is not None else ()
    if asked is not None and asked.s7 is not None and not _answers_count(count, asked):
        return ReplyVerdict(ReplyKind.MALFORMED, f"Read Var reply of {count} items answers {len(want)}")
    failed: list[str] = []
    for n, (code, size, length, data) in enumerate(items, start=1):
        if code != SUCCESS:
            failed.append(f"item {n}: {return_code_text(code)}")
            continue
        if size not in DATA_TRANSPORT_SIZES or size == 0:
            return ReplyVerdict(ReplyKind.MALFORMED, f"item {n}: data_transport_size={size} in a successful item")
        asked_item = want[n - 1] if n <= len(want) else None
        if asked_item is not None:
            octets = item_octets(asked_item)
            if octets is not None and len(data) != octets:
                return ReplyVerdict(ReplyKind.MALFORMED, f"item {n}: {len(data)} octets for {item_text(asked_item)} "
                                                         f"({octets} asked for)")
    if failed:
        return ReplyVerdict(ReplyKind.EXCEPTION, "Read Var " + "; ".join(failed))
    return ReplyVerdict(ReplyKind.NORMAL, f"Read Var: {count} items, {sum(len(i[3]) for i in items)} octets")


def _answers_count(count: int, asked: Request) -> bool:
    """A Read/Write Var answer covers the items present, or (for a request whose item count
    disagrees with its items) the count the request claimed."""
    claimed = asked.s7.params[1] if asked.s7 is not None and len(asked.s7.params) > 1 else None
    return count == len(asked.items) or count == claimed


def _szl_records(data: bytes) -> tuple[int, int, int, list[bytes]] | str:
    """(SZL ID, index, record size, records) of a read-SZL answer's data part, or why not."""
    if len(data) < 4:
        return f"SZL data part of {len(data)} octets"
    code, length = data[0], (data[2] << 8) | data[3]
    body = data[4:]
    if code != SUCCESS:
        return return_code_text(code)
    if length != len(body):
        return f"szl_data_length={length} but {len(body)} octets follow"
    if len(body) < SZL_REPLY_HEAD:
        return f"SZL answer of {len(body)} octets, shorter than ID, index, LENTHDR and N_DR"
    szl_id, index = (body[0] << 8) | body[1], (body[2] << 8) | body[3]
    record, count = (body[4] << 8) | body[5], (body[6] << 8) | body[7]
    rest = body[SZL_REPLY_HEAD:]
    if record * count != len(rest):
        return f"lenthdr={record} and n_dr={count} but {len(rest)} octets of records follow"
    return szl_id, index, record, [rest[i * record : (i + 1) * record] for i in range(count)]


def _classify_userdata(asked: Request | None, pdu: S7Pdu) -> ReplyVerdict:
    params = pdu.params
    if len(params) != 12:
        return ReplyVerdict(ReplyKind.MALFORMED, f"userdata reply parameters of {len(params)} octets, not 12")
    if int.from_bytes(params[:3], "big") != UD_PARAM_HEAD or params[3] != 8:
        return ReplyVerdict(ReplyKind.MALFORMED, f"userdata reply parameter head {params[:4].hex()}")
    error = (params[10] << 8) | params[11]
    if error:
        return ReplyVerdict(ReplyKind.EXCEPTION, "userdata " + error_text(error))
    if len(pdu.data) >= 1 and pdu.data[0] != SUCCESS:
        return ReplyVerdict(ReplyKind.EXCEPTION, f"userdata {return_code_text(pdu.data[0])}")
    if params[5] >> 4 != UD_TYPE_RESPONSE:
        return ReplyVerdict(ReplyKind.MALFORMED, f"userdata reply type {params[5] >> 4}, not 8 (response)")
    want = asked.s7 if asked is not None else None
    if want is not None and len(want.params) >= 7 and (params[5] & 0x0F, params[6]) != (want.params[5] & 0x0F, want.params[6]):
        return ReplyVerdict(ReplyKind.MALFORMED, f"userdata reply of group {params[5] & 0x0F} subfunction {params[6]} answers "
                                                 f"group {want.params[5] & 0x0F} subfunction {want.params[6]}")
    if (params[5] & 0x0F, params[6]) != (GROUP_CPU, READ_SZL):
        return ReplyVerdict(ReplyKind.NORMAL, f"userdata group {params[5] & 0x0F} subfunction {params[6]} answered")
    more = " (more data units follow)" if params[9] else ""
    szl = _szl_records(pdu.data)
    if isinstance(szl, str):
        if more and "n_dr" in szl:
            return ReplyVerdict(ReplyKind.NORMAL, f"read SZL first data unit{more}")
        return ReplyVerdict(ReplyKind.MALFORMED, f"read SZL reply: {szl}")
    szl_id, index, size, records = szl
    if asked is not None and asked.szl is not None and (szl_id, index) != asked.szl:
        return ReplyVerdict(ReplyKind.MALFORMED, f"SZL 0x{szl_id:04x} index 0x{index:04x} answers a read of "
                                                 f"0x{asked.szl[0]:04x} index 0x{asked.szl[1]:04x}")
    return ReplyVerdict(ReplyKind.NORMAL, f"SZL 0x{szl_id:04x} index 0x{index:04x}: {len(records)} records of {size} octets{more}")


# -- helpers -----------------------------------------------------------------------------------


def _retpkt(packet: bytes) -> bytes:
    """A packet with its TPKT length made to fit (for faults that change octets inside it)."""
    return packet[:2] + len(packet).to_bytes(2, "big") + packet[4:] if len(packet) >= TPKT_HEADER else packet


def _retpkt_cr(packet: bytes) -> bytes:
    """A CR with parameters appended: TPKT and COTP lengths made to count them."""
    out = bytearray(_retpkt(packet))
    out[4] = (len(out) - TPKT_HEADER - 1) & 0xFF
    return bytes(out)


def _repair_packet(packet: bytearray) -> bytes:
    if len(packet) < TPKT_HEADER:
        return bytes(packet)
    packet[0], packet[1] = TPKT_VERSION, 0
    packet[2:4] = min(len(packet), MAX_PACKET).to_bytes(2, "big")
    if len(packet) < MIN_PACKET:
        return bytes(packet)
    kind = cotp_type(packet)
    if kind != COTP_DT:
        packet[4] = min(len(packet) - TPKT_HEADER - 1, 0xFF)
        return bytes(packet)
    packet[4] = 2
    at = TPKT_HEADER + 3
    payload = packet[at:]
    if len(payload) < JOB_HEADER or payload[0] != S7_PROTOCOL_ID:
        return bytes(packet)
    header = REPLY_HEADER if payload[1] in (ACK, ACK_DATA) and len(payload) >= REPLY_HEADER else JOB_HEADER
    body = len(payload) - header
    param_length = min((payload[6] << 8) | payload[7], body)
    payload[6:8] = param_length.to_bytes(2, "big")
    payload[8:10] = (body - param_length).to_bytes(2, "big")
    data = payload[header + param_length :]
    params = payload[header : header + param_length]
    if params and params[0] == WRITE_VAR and len(data) >= 4:
        size = data[1]
        octets = len(data) - 4
        data[2:4] = ((octets * 8 if size in LENGTH_IN_BITS and size != 0x03 else octets) & 0xFFFF).to_bytes(2, "big")
        payload[header + param_length :] = data
    elif payload[1] == USERDATA and len(data) >= 4:
        data[2:4] = (len(data) - 4).to_bytes(2, "big")
        payload[header + param_length :] = data
    packet[at:] = payload
    return bytes(packet)


def _payload_readings(packets: Sequence[bytes], rest: bytes) -> Iterable[bytes]:
    """Every S7 payload a lenient peer might read out of the packets (and of the unframed rest)."""
    for packet in [*packets, rest] if rest else packets:
        if len(packet) < TPKT_HEADER + 3 or cotp_type(packet) in (COTP_CR, COTP_CC, COTP_DR, COTP_DC, COTP_ER):
            continue  # connection management TPDUs carry no S7 PDU
        yield packet[TPKT_HEADER + 3 :]
        if packet[4] != 2:
            yield dt_payload(packet)


def _may_write(payload: bytes) -> bool:
    if len(payload) <= JOB_HEADER:
        return False
    if payload[1] == USERDATA:
        params = payload[JOB_HEADER:]
        if len(params) < 7:
            return False
        return (params[5] & 0x0F, params[6]) not in UD_READS
    return payload[JOB_HEADER] not in READ_FUNCTIONS


def _text(raw: bytes) -> str:
    return raw.split(b"\x00", 1)[0].decode("latin-1").strip()


def _describe_unit(unit: Unit) -> str:
    if unit.kind == COTP_CR:
        params: dict[int, bytes] = {}
        packet = unit.packet
        if len(packet) >= TPKT_HEADER + 7:
            params, _ = cotp_parameters(packet[TPKT_HEADER + 7 : TPKT_HEADER + 1 + packet[4]])
        calling, called = params.get(PARAM_CALLING_TSAP, b"").hex(), params.get(PARAM_CALLED_TSAP, b"").hex()
        return f"COTP CR TSAP {calling or '-'} to {called or '-'}"
    if unit.kind != COTP_DT:
        return f"COTP {COTP_TYPES.get(unit.kind, f'TPDU 0x{unit.kind:02x}')}"
    pdu = parse_s7(unit.payload, request=True)
    cut = "" if unit.complete else " (TSDU not ended)"
    if isinstance(pdu, str):
        return f"COTP DT: {pdu}{cut}"
    if pdu.rosctr == USERDATA:
        if len(pdu.params) >= 7 and len(pdu.data) >= 8 and (pdu.params[5] & 0x0F, pdu.params[6]) == (GROUP_CPU, READ_SZL):
            szl_id = (pdu.data[4] << 8) | pdu.data[5]
            return f"read SZL 0x{szl_id:04x} ({SZL_IDS.get(szl_id, 'unknown list')}) index 0x{(pdu.data[6] << 8) | pdu.data[7]:04x}{cut}"
        return f"userdata request of {len(pdu.params)}+{len(pdu.data)} octets{cut}"
    name = _function_name(pdu)
    if pdu.function in (READ_VAR, WRITE_VAR) and len(pdu.params) > 1:
        shown = []
        for raw in split_items(pdu.params)[0][:4]:
            values, _ = decode_item(raw)
            shown.append(item_text(values) if values else f"{len(raw)}-octet item")
        return f"{name} {pdu.params[1]} items: {', '.join(shown)}{cut}"
    if pdu.function == SETUP_COMMUNICATION and len(pdu.params) >= 8:
        return f"Setup Communication PDU {(pdu.params[6] << 8) | pdu.params[7]}{cut}"
    return f"{ROSCTR.get(pdu.rosctr, f'rosctr {pdu.rosctr}')} {name}{cut}"
