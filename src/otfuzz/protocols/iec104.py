"""IEC 60870-5-104 (telecontrol over TCP: APCI framing + IEC 60870-5-101 ASDUs), sans-IO.

Covered: the APCI (start 0x68, length 4..253, the three control-field formats: I with N(S)/N(R),
S with N(R), U with STARTDT/STOPDT/TESTFR act and con), the k/w acknowledgement rules, and ASDUs
with 1-octet type id, VSQ, 1-octet cause of transmission (+P/N and T bits), 1-octet originator
address, 2-octet common address (CA) and 3-octet information object address (IOA) - the
parameters every 104 profile uses. Control-direction ASDUs (commands, set points, interrogation,
counter interrogation, read, clock sync, test, reset process) are declared with the message
model, element limits included (QOI 20..36, DCS 1..2, CP56Time2a ranges...); monitor-direction
element sizes are known so replies of any standard type can be walked.

Sequence numbers are relative in generated frames. Templates carry N(S) = N(R) = 0, and
`IEC104Session.prepare` adds the connection's counters: the N(S) sent is V(S) + the N(S) field of
the frame, the N(R) is V(R) + its N(R) field. A fuzzed field elsewhere in the ASDU therefore never
breaks the sequence, while a fault that needs a wrong N(S) ("one ahead") or an S-frame
acknowledging frames never sent is expressed as a non-zero offset, and `check_request` reports
such offsets as violations.

Which received APDU is the reply to the last request (`IEC104Session` picks it in `feed`):
- a U-format act is answered by its con; TESTFR act from the server is answered automatically
  (TESTFR con via `take_output`) and is never a reply;
- an I-format request is answered by the first ASDU of the same type id that carries a
  confirmation cause (7 ACT_CON, 9 DEACT_CON, 44..47 unknown type/cause/CA/IOA) or the P/N bit,
  or, for a read command (C_RD_NA_1), by the object with cause 5 (requested) and the same IOA;
- spontaneous, periodic, background, interrogated and ACT_TERM ASDUs are never replies (for an
  interrogation the ACT_CON is enough; the data and ACT_TERM that follow are acknowledged and
  dropped), nor is anything that arrives while no request is pending;
- a frame carrying several I-frames is answered by the confirmation of the last one; those owed
  to the earlier ones are dropped, also when they arrive after the next request was sent;
- lib60870 answers a refused command with a negative ACT_CON followed by an ASDU with cause
  44..47 for the same object: that second ASDU is part of the same answer and is dropped.
Incoming I-frames advance V(R); an S-frame acknowledges them every `w` I-frames. Nothing here
opens a socket or reads a clock; CP56Time2a values in templates are fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from otfuzz.errors import DecodeError
from otfuzz.protocols.base import OptionSpec, Probe, Protocol, ReplyKind, ReplyVerdict, Session, Template, distinct_faults
from otfuzz.protocols.model import REST, Field, Length, MessageType, UInt

START = 0x68
MIN_LENGTH = 4  # the control field alone
MAX_LENGTH = 253  # APDU of at most 255 octets
SEQ_MODULO = 1 << 15
APCI_SIZE = 6
ASDU_HEAD = 6  # type id, VSQ, COT, originator, CA (2)
IOA_SIZE = 3

STARTDT_ACT, STARTDT_CON = 0x07, 0x0B
STOPDT_ACT, STOPDT_CON = 0x13, 0x23
TESTFR_ACT, TESTFR_CON = 0x43, 0x83
U_FUNCTIONS: Mapping[int, str] = MappingProxyType(
    {
        STARTDT_ACT: "STARTDT act",
        STARTDT_CON: "STARTDT con",
        STOPDT_ACT: "STOPDT act",
        STOPDT_CON: "STOPDT con",
        TESTFR_ACT: "TESTFR act",
        TESTFR_CON: "TESTFR con",
    }
)
U_CONFIRMS: Mapping[int, int] = MappingProxyType({STARTDT_ACT: STARTDT_CON, STOPDT_ACT: STOPDT_CON, TESTFR_ACT: TESTFR_CON})

TYPE_IDS: Mapping[int, str] = MappingProxyType(
    {
        1: "M_SP_NA_1", 3: "M_DP_NA_1", 5: "M_ST_NA_1", 7: "M_BO_NA_1", 9: "M_ME_NA_1", 11: "M_ME_NB_1",
        13: "M_ME_NC_1", 15: "M_IT_NA_1", 20: "M_PS_NA_1", 21: "M_ME_ND_1", 30: "M_SP_TB_1", 31: "M_DP_TB_1",
        32: "M_ST_TB_1", 33: "M_BO_TB_1", 34: "M_ME_TD_1", 35: "M_ME_TE_1", 36: "M_ME_TF_1", 37: "M_IT_TB_1",
        38: "M_EP_TD_1", 39: "M_EP_TE_1", 40: "M_EP_TF_1",
        45: "C_SC_NA_1", 46: "C_DC_NA_1", 47: "C_RC_NA_1", 48: "C_SE_NA_1", 49: "C_SE_NB_1", 50: "C_SE_NC_1",
        51: "C_BO_NA_1", 58: "C_SC_TA_1", 59: "C_DC_TA_1", 60: "C_RC_TA_1", 61: "C_SE_TA_1", 62: "C_SE_TB_1",
        63: "C_SE_TC_1", 64: "C_BO_TA_1", 70: "M_EI_NA_1",
        100: "C_IC_NA_1", 101: "C_CI_NA_1", 102: "C_RD_NA_1", 103: "C_CS_NA_1", 104: "C_TS_NA_1",
        105: "C_RP_NA_1", 106: "C_CD_NA_1", 107: "C_TS_TA_1",
        110: "P_ME_NA_1", 111: "P_ME_NB_1", 112: "P_ME_NC_1", 113: "P_AC_NA_1",
        120: "F_FR_NA_1", 121: "F_SR_NA_1", 122: "F_SC_NA_1", 123: "F_LS_NA_1", 124: "F_AF_NA_1",
        125: "F_SG_NA_1", 126: "F_DR_TA_1", 127: "F_SC_NB_1",
    }
)  # fmt: skip

# Octets of one information element after its IOA (file transfer types vary and are left out).
ELEMENT_SIZES: Mapping[int, int] = MappingProxyType(
    {
        1: 1, 3: 1, 5: 2, 7: 5, 9: 3, 11: 3, 13: 5, 15: 5, 20: 5, 21: 2, 30: 8, 31: 8, 32: 9, 33: 12,
        34: 10, 35: 10, 36: 12, 37: 12, 38: 10, 39: 11, 40: 11, 45: 1, 46: 1, 47: 1, 48: 3, 49: 3, 50: 5,
        51: 4, 58: 8, 59: 8, 60: 8, 61: 10, 62: 10, 63: 12, 64: 11, 70: 1, 100: 1, 101: 1, 102: 0, 103: 7,
        104: 2, 105: 1, 106: 2, 107: 9, 110: 3, 111: 3, 112: 5, 113: 1,
    }
)  # fmt: skip

CAUSES: Mapping[int, str] = MappingProxyType(
    {
        1: "periodic", 2: "background scan", 3: "spontaneous", 4: "initialised", 5: "request",
        6: "activation", 7: "activation confirmation", 8: "deactivation", 9: "deactivation confirmation",
        10: "activation termination", 11: "return information (remote command)",
        12: "return information (local command)", 13: "file transfer",
        **{20 + g: ("interrogated by station" if g == 0 else f"interrogated by group {g}") for g in range(17)},
        **{37 + g: ("requested by general counter request" if g == 0 else f"requested by group {g} counter request")
           for g in range(5)},
        44: "unknown type identification", 45: "unknown cause of transmission", 46: "unknown common address of ASDU",
        47: "unknown information object address",
    }
)  # fmt: skip
ACT, ACT_CON, DEACT, DEACT_CON, ACT_TERM, REQUEST = 6, 7, 8, 9, 10, 5
UNKNOWN_CAUSES = frozenset({44, 45, 46, 47})
CONFIRMATIONS = frozenset({ACT_CON, DEACT_CON}) | UNKNOWN_CAUSES
PN_BIT, TEST_BIT = 0x40, 0x80

# Control direction: which causes a request of each type may carry (IEC 60870-5-101 clause 7.2.3
# tables, as used by 104), and which types are station-wide (IOA 0, broadcast CA allowed).
REQUEST_CAUSES: Mapping[int, frozenset[int]] = MappingProxyType(
    {
        **{t: frozenset({ACT, DEACT}) for t in (45, 46, 47, 48, 49, 50, 51, 58, 59, 60, 61, 62, 63, 64)},
        100: frozenset({ACT, DEACT}), 101: frozenset({ACT}), 102: frozenset({REQUEST}), 103: frozenset({ACT}),
        105: frozenset({ACT}), 107: frozenset({ACT}), 110: frozenset({ACT}), 111: frozenset({ACT}),
        112: frozenset({ACT}), 113: frozenset({ACT, DEACT}),
    }
)  # fmt: skip
STATION_TYPES = frozenset({100, 101, 103, 105, 107})
BROADCAST_TYPES = frozenset({100, 101, 103, 105})  # the only ones that may use CA 0xFFFF
READ_TYPES = frozenset({100, 101, 102, 107})  # cannot change the station's state
BROADCAST_CA = 0xFFFF


# -- declarations ---------------------------------------------------------------------------


def _apci() -> list[Field]:
    return [
        UInt("start", 8, default=START, enum={START: "start"}),
        Length("length", 8, covers=REST, minimum=MIN_LENGTH, maximum=MAX_LENGTH),
    ]


def _asdu_head(type_id: int, cause: int) -> list[Field]:
    return [
        UInt("type_id", 8, default=type_id, enum=TYPE_IDS),
        UInt("vsq", 8, default=1),
        UInt("cot", 8, default=cause),
        UInt("originator", 8),
        UInt("ca", 16, "little", default=1),
        UInt("ioa", 24, "little"),
    ]


def _cp56(prefix: str = "time") -> list[Field]:
    """CP56Time2a as its seven sub-fields, so the boundary strategy hits 59999 ms, minute 60..."""
    return [
        UInt(f"{prefix}_ms", 16, "little", maximum=59999),
        UInt(f"{prefix}_minute", 8),  # bits 0-5 minute, 6 reserved, 7 IV
        UInt(f"{prefix}_hour", 8),  # bits 0-4 hour, 5-6 reserved, 7 SU
        UInt(f"{prefix}_day", 8, default=0x21),  # bits 0-4 day of month, 5-7 day of week
        UInt(f"{prefix}_month", 8, default=1, minimum=1, maximum=12),
        UInt(f"{prefix}_year", 8, default=24, maximum=99),
    ]


def _cp56_rule(prefix: str = "time") -> Callable[[Mapping[str, Any]], str | None]:
    def rule(values: Mapping[str, Any]) -> str | None:
        minute, hour, day = values[f"{prefix}_minute"], values[f"{prefix}_hour"], values[f"{prefix}_day"]
        if minute & 0x3F > 59 or minute & 0x40:
            return f"CP56Time2a minute octet 0x{minute:02x}: minute above 59 or reserved bit set"
        if hour & 0x1F > 23 or hour & 0x60:
            return f"CP56Time2a hour octet 0x{hour:02x}: hour above 23 or reserved bits set"
        if not 1 <= day & 0x1F <= 31:
            return f"CP56Time2a day octet 0x{day:02x}: day of month outside 1..31"
        return None

    return rule


def _request_rule(type_id: int) -> Callable[[Mapping[str, Any]], str | None]:
    """ASDU-header rules of the control direction, shared by every request type."""
    allowed = REQUEST_CAUSES.get(type_id, frozenset({ACT}))
    shown = ", ".join(CAUSES[c] for c in sorted(allowed))

    def rule(values: Mapping[str, Any]) -> str | None:
        # The P/N bit is "0 where not relevant"; the standard does not require refusing it, so it
        # is a structural fault to try but not a violation to report.
        cot, vsq = values["cot"], values["vsq"]
        if cot & 0x3F not in allowed:
            return f"cause {cot & 0x3F} ({CAUSES.get(cot & 0x3F, 'undefined')}) not allowed in {TYPE_IDS[type_id]} (allowed: {shown})"
        if vsq != 1:
            return f"vsq=0x{vsq:02x}: a command carries exactly one object with SQ=0"
        if values["ca"] == 0:
            return "ca=0 is not used (IEC 60870-5-101 7.2.4)"
        if values["ca"] == BROADCAST_CA and type_id not in BROADCAST_TYPES:
            return f"broadcast ca=0xFFFF is not allowed in {TYPE_IDS[type_id]}"
        if type_id in STATION_TYPES and values["ioa"] != 0:
            return f"ioa={values['ioa']}: a station command uses IOA 0"
        return None

    return rule


def _qualifier_rule(name: str, allowed: Callable[[int], bool], what: str) -> Callable[[Mapping[str, Any]], str | None]:
    def rule(values: Mapping[str, Any]) -> str | None:
        return None if allowed(values[name]) else f"{name}=0x{values[name]:02x}: {what}"

    return rule


def _request(type_id: int, elements: Sequence[Field], rules: Sequence[Callable[[Mapping[str, Any]], str | None]] = (),
             cause: int = ACT, doc: str = "") -> MessageType:
    return MessageType(
        TYPE_IDS[type_id],
        [*_apci(), UInt("send_seq", 16, "little"), UInt("recv_seq", 16, "little"), *_asdu_head(type_id, cause), *elements],
        constraints=(_request_rule(type_id), *rules),
        doc=doc,
    )


_QOS = UInt("qos", 8)  # bits 0-6 QL, 7 S/E
_SCO_RULE = _qualifier_rule("sco", lambda v: not v & 0x02, "reserved bit 1 of SCO set")
_DCO_RULE = _qualifier_rule("dco", lambda v: v & 0x03 in (1, 2), "DCS 0 and 3 are not permitted")
_RCO_RULE = _qualifier_rule("rco", lambda v: v & 0x03 in (1, 2), "RCS 0 and 3 are not permitted")

REQUEST_TYPES: Mapping[int, MessageType] = MappingProxyType(
    {
        45: _request(45, [UInt("sco", 8, default=0x01)], [_SCO_RULE], doc="single command: SCS, QU, S/E"),
        46: _request(46, [UInt("dco", 8, default=0x02)], [_DCO_RULE], doc="double command: DCS 1 off, 2 on"),
        47: _request(47, [UInt("rco", 8, default=0x02)], [_RCO_RULE], doc="regulating step: 1 lower, 2 higher"),
        48: _request(48, [UInt("nva", 16, "little", default=0x4000), _QOS], doc="set point, normalised value"),
        49: _request(49, [UInt("sva", 16, "little", default=42), _QOS], doc="set point, scaled value"),
        50: _request(50, [UInt("value", 32, "little", default=0x3FC00000), _QOS], doc="set point, IEEE 754 float (1.5)"),
        58: _request(58, [UInt("sco", 8, default=0x01), *_cp56()], [_SCO_RULE, _cp56_rule()], doc="single command with CP56Time2a"),
        100: _request(100, [UInt("qoi", 8, default=20, minimum=20, maximum=36)], doc="interrogation: 20 station, 21..36 groups"),
        101: _request(101, [UInt("qcc", 8, default=0x05)],
                      [_qualifier_rule("qcc", lambda v: 1 <= v & 0x3F <= 5, "RQT outside 1..5")], doc="counter interrogation"),
        102: _request(102, [], cause=REQUEST, doc="read command: the object itself comes back with cause 5"),
        103: _request(103, _cp56(), [_cp56_rule()], doc="clock synchronisation"),
        105: _request(105, [UInt("qrp", 8, default=1, minimum=1, maximum=2)], doc="reset process: 1 general, 2 event buffer"),
        107: _request(107, [UInt("tsc", 16, "little"), *_cp56()], [_cp56_rule()], doc="test command with CP56Time2a"),
    }
)

U_FRAME = MessageType(
    "u_frame",
    [*_apci(), UInt("u_control", 8, default=TESTFR_ACT, enum=U_FUNCTIONS), UInt("u_rest", 24, "little", maximum=0)],
    doc="U format: one function bit pair, the other three octets zero",
)
S_FRAME = MessageType(
    "s_frame",
    [*_apci(), UInt("s_control", 16, "little", default=1, minimum=1, maximum=1), UInt("recv_seq", 16, "little")],
    doc="S format: acknowledges received I-frames up to N(R)",
)


def u_frame(function: int) -> bytes:
    """A U-format APDU (STARTDT/STOPDT/TESTFR act or con)."""
    return U_FRAME.encode(u_control=function)


def s_frame(receive_count: int) -> bytes:
    """An S-format APDU acknowledging every I-frame before `receive_count`."""
    return S_FRAME.encode(recv_seq=(receive_count % SEQ_MODULO) << 1)


# -- parsing --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Apdu:
    """One framed APDU: `kind` is "I", "S" or "U"; `asdu` is empty unless kind is "I"."""

    raw: bytes
    kind: str
    send_seq: int = 0
    recv_seq: int = 0
    u_function: int = 0

    @property
    def asdu(self) -> bytes:
        return self.raw[APCI_SIZE:]


def _apdu(raw: bytes) -> Apdu:
    c1 = raw[2]
    if not c1 & 1:
        return Apdu(raw, "I", int.from_bytes(raw[2:4], "little") >> 1, int.from_bytes(raw[4:6], "little") >> 1)
    if c1 & 3 == 1:
        return Apdu(raw, "S", recv_seq=int.from_bytes(raw[4:6], "little") >> 1)
    return Apdu(raw, "U", u_function=c1)


def split_apdus(data: bytes) -> tuple[list[Apdu], bytes]:
    """Frame `data` by the APCI length: the APDUs and the bytes that do not frame (garbage,
    a length below 4, or an incomplete last APDU)."""
    out: list[Apdu] = []
    pos = 0
    while len(data) - pos >= 2 and data[pos] == START and data[pos + 1] >= MIN_LENGTH:
        end = pos + 2 + data[pos + 1]
        if end > len(data):
            break
        out.append(_apdu(bytes(data[pos:end])))
        pos = end
    return out, bytes(data[pos:])


@dataclass(frozen=True)
class Asdu:
    """The data unit identifier and objects of an ASDU; `problem` says why it does not parse."""

    type_id: int
    vsq: int
    cot: int
    originator: int
    ca: int
    objects: tuple[tuple[int, bytes], ...]
    problem: str | None = None

    @property
    def cause(self) -> int:
        return self.cot & 0x3F

    @property
    def negative(self) -> bool:
        return bool(self.cot & PN_BIT)

    @property
    def ioa(self) -> int | None:
        return self.objects[0][0] if self.objects else None

    @property
    def identity(self) -> tuple[int, int, int | None]:
        return self.type_id, self.ca, self.ioa

    def describe(self) -> str:
        name = TYPE_IDS.get(self.type_id, f"type {self.type_id}")
        cause = CAUSES.get(self.cause, f"cause {self.cause}")
        flags = (" negative" if self.negative else "") + (" test" if self.cot & TEST_BIT else "")
        where = f" IOA {self.ioa}" if self.ioa is not None else ""
        return f"{name} {cause}{flags} CA {self.ca}{where}"


def parse_asdu(data: bytes) -> Asdu:
    """Walk an ASDU of any standard type; unknown types keep only their first IOA."""
    if len(data) < ASDU_HEAD:
        return Asdu(data[0] if data else 0, 0, 0, 0, 0, (), f"ASDU of {len(data)} octets is shorter than its 6-octet header")
    type_id, vsq, cot, originator = data[0], data[1], data[2], data[3]
    ca = int.from_bytes(data[4:6], "little")
    number, sequence = vsq & 0x7F, bool(vsq & 0x80)
    body = data[ASDU_HEAD:]
    size = ELEMENT_SIZES.get(type_id)

    def done(objects: list[tuple[int, bytes]], problem: str | None = None) -> Asdu:
        return Asdu(type_id, vsq, cot, originator, ca, tuple(objects), problem)

    if size is None:
        first = [(int.from_bytes(body[:IOA_SIZE], "little"), body[IOA_SIZE:])] if len(body) >= IOA_SIZE else []
        return done(first, None if first else "ASDU has no information object address")
    if number == 0:
        return done([], "VSQ says zero information objects")
    want = IOA_SIZE + number * size if sequence else number * (IOA_SIZE + size)
    if len(body) != want:
        return done([], f"{TYPE_IDS[type_id]} with {number} object(s) needs {want} octets after the CA, has {len(body)}")
    objects: list[tuple[int, bytes]] = []
    if sequence:
        first = int.from_bytes(body[:IOA_SIZE], "little")
        for i in range(number):
            objects.append((first + i, body[IOA_SIZE + i * size : IOA_SIZE + (i + 1) * size]))
    else:
        for i in range(number):
            at = i * (IOA_SIZE + size)
            objects.append((int.from_bytes(body[at : at + IOA_SIZE], "little"), body[at + IOA_SIZE : at + IOA_SIZE + size]))
    return done(objects)


def _last_request(frame: bytes) -> Apdu | None:
    """The APDU of a request frame that its reply answers: the last I-frame or U act."""
    apdus, _ = split_apdus(frame)
    for apdu in reversed(apdus):
        if apdu.kind == "I" or (apdu.kind == "U" and apdu.u_function in U_CONFIRMS):
            return apdu
    return None


# -- session --------------------------------------------------------------------------------


class IEC104Session(Session):
    """One 104 connection: STARTDT, sequence numbers, acknowledgements, keep-alive answers.

    Received APDUs are handled in `feed` (not `next_reply`) so that acknowledgements and TESTFR
    con are in `take_output` at once, before the transport looks for a reply.
    """

    MAX_OWED = 16

    def __init__(self, k: int = 12, w: int = 8) -> None:
        super().__init__()
        self.k, self.w = k, w
        self.send_count = 0  # V(S)
        self.receive_count = 0  # V(R)
        self.acknowledged = 0  # the V(R) last sent to the peer as N(R)
        self.peer_acknowledged = 0  # the last N(R) received
        self.started = False
        self.stopped = False  # started once, then STOPDT confirmed: restart before the next I-frame
        self._restarting = False
        self._pending: tuple[str, Any] | None = None
        self._trailer: tuple[int, int, int | None] | None = None
        # Confirmations still owed for I-frames sent before the last one of a frame (a frame
        # may carry several): matched first, so they are never taken for a later reply.
        self._owed: list[tuple[int, int, int | None]] = []
        self._replies: list[bytes] = []

    @property
    def unacknowledged_sent(self) -> int:
        """I-frames sent and not yet acknowledged by the peer (never more than k in this engine,
        which sends one request and waits for the reply that acknowledges it)."""
        return (self.send_count - self.peer_acknowledged) % SEQ_MODULO

    def opening(self) -> list[bytes]:
        return [u_frame(STARTDT_ACT)]

    def prepare(self, frame: bytes) -> bytes:
        apdus, rest = split_apdus(frame)
        if not apdus:
            self._pending = ("I", None) if frame else None
            return frame
        out = bytearray()
        if self.stopped and apdus[0].kind == "I":
            out += u_frame(STARTDT_ACT)
            self._restarting = True
        base = self.send_count
        pending: tuple[str, Any] | None = None
        identities: list[tuple[int, int, int | None] | None] = []  # of every I-frame, in order
        for apdu in apdus:
            raw = bytearray(apdu.raw)
            if apdu.kind in ("I", "S"):
                nr = (self.receive_count + apdu.recv_seq) % SEQ_MODULO
                raw[4:6] = ((nr << 1) | (raw[4] & 1)).to_bytes(2, "little")
                self.acknowledged = self.receive_count
            if apdu.kind == "I":
                ns = (base + apdu.send_seq) % SEQ_MODULO
                raw[2:4] = (ns << 1).to_bytes(2, "little")
                self.send_count = (ns + 1) % SEQ_MODULO
                identity = parse_asdu(apdu.asdu).identity if len(apdu.asdu) >= ASDU_HEAD + IOA_SIZE else None
                identities.append(identity)
                pending = ("I", identity)
            elif apdu.kind == "U" and apdu.u_function in U_CONFIRMS:
                pending = ("U", U_CONFIRMS[apdu.u_function])
            out += raw
        self._pending = pending if pending is not None else (("I", None) if rest else None)
        if pending is not None and pending[0] == "I":
            identities.pop()  # the last I-frame's confirmation is the reply, not owed
        self._owed = (self._owed + [i for i in identities if i is not None])[-self.MAX_OWED :]
        return bytes(out + rest)

    def feed(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while buf:
            if buf[0] != START or (len(buf) >= 2 and buf[1] < MIN_LENGTH):
                # No length to frame by: hand everything over so the classifier reports it.
                self._replies.append(bytes(buf))
                buf.clear()
                break
            if len(buf) < 2 or len(buf) < 2 + buf[1]:
                break
            end = 2 + buf[1]
            raw = bytes(buf[:end])
            del buf[:end]
            self._receive(_apdu(raw))

    def next_reply(self) -> bytes | None:
        return self._replies.pop(0) if self._replies else None

    def _receive(self, apdu: Apdu) -> None:
        if apdu.kind == "S":
            self.peer_acknowledged = apdu.recv_seq
        elif apdu.kind == "U":
            self._receive_u(apdu)
        else:
            self.peer_acknowledged = apdu.recv_seq
            self.receive_count = (apdu.send_seq + 1) % SEQ_MODULO
            if (self.receive_count - self.acknowledged) % SEQ_MODULO >= self.w:
                self._output += s_frame(self.receive_count)
                self.acknowledged = self.receive_count
            self._receive_asdu(apdu)

    def _receive_u(self, apdu: Apdu) -> None:
        function = apdu.u_function
        if function == TESTFR_ACT:
            self._output += u_frame(TESTFR_CON)
            return
        if function == STARTDT_CON:
            self.started, self.stopped = True, False
            if self._restarting:
                self._restarting = False
                return
        elif function == STOPDT_CON:
            self.started, self.stopped = False, True
        pending = self._pending
        if pending is not None and pending[0] == "U":
            # the con asked for, or an unexpected U-frame the classifier will report
            self._pending = None
            self._replies.append(apdu.raw)

    def _receive_asdu(self, apdu: Apdu) -> None:
        asdu = parse_asdu(apdu.asdu)
        if self._trailer is not None and asdu.cause in UNKNOWN_CAUSES and asdu.identity == self._trailer:
            self._trailer = None  # second half of lib60870's two-part refusal
            return
        if (asdu.cause in CONFIRMATIONS or asdu.negative) and asdu.identity in self._owed:
            self._owed.remove(asdu.identity)  # answers an earlier I-frame of the same frame
            return
        pending = self._pending
        if pending is None or pending[0] != "I":
            return
        want = pending[1]
        if len(apdu.asdu) < ASDU_HEAD:
            self._take(apdu)
            return
        if want is not None and want[0] == 102:
            if asdu.cause == REQUEST and asdu.ca == want[1] and asdu.ioa == want[2]:
                self._take(apdu)
                return
        if not (asdu.cause in CONFIRMATIONS or asdu.negative):
            return
        if want is not None and asdu.type_id != want[0]:
            return
        self._take(apdu)
        if asdu.cause == ACT_CON and asdu.negative:
            self._trailer = asdu.identity

    def _take(self, apdu: Apdu) -> None:
        self._pending = None
        self._replies.append(apdu.raw)


# -- the protocol ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """A request template: which type, which IOA option it addresses, its element values."""

    name: str
    type_id: int
    values: Mapping[str, Any]
    station: bool = False  # IOA 0
    writes: bool = False
    disruptive: bool = False


_TEMPLATES: tuple[_Kind, ...] = (
    _Kind("general_interrogation", 100, {"qoi": 20}, station=True),
    _Kind("counter_interrogation", 101, {"qcc": 0x05}, station=True),
    _Kind("read_command", 102, {}),
    _Kind("test_command_with_time", 107, {"tsc": 0x55AA}, station=True),
    _Kind("clock_synchronisation", 103, {}, station=True, writes=True),
    _Kind("single_command", 45, {"sco": 0x01}, writes=True),
    _Kind("single_command_select", 45, {"sco": 0x81}, writes=True),
    _Kind("single_command_with_time", 58, {"sco": 0x01}, writes=True),
    _Kind("double_command", 46, {"dco": 0x02}, writes=True),
    _Kind("regulating_step_command", 47, {"rco": 0x02}, writes=True),
    _Kind("set_point_normalised", 48, {"nva": 0x4000}, writes=True),
    _Kind("set_point_scaled", 49, {"sva": 42}, writes=True),
    _Kind("set_point_float", 50, {"value": 0x3FC00000}, writes=True),
    _Kind("reset_process", 105, {"qrp": 1}, station=True, writes=True, disruptive=True),
)


class IEC104(Protocol):
    """IEC 60870-5-104 client side: control-direction ASDUs against a controlled station."""

    name = "iec104"
    schemes = ("iec104",)
    default_port = 2404
    options_spec = {
        "ca": OptionSpec("1", "common address of ASDU of the station under test (1..65534)", int, 1, 0xFFFE),
        "ioa": OptionSpec("1", "information object address commands and reads address (0..16777215)", int, 0, 0xFFFFFF),
        "k": OptionSpec("12", "max unacknowledged I-frames sent (1..32767)", int, 1, SEQ_MODULO - 1),
        "w": OptionSpec("8", "acknowledge received I-frames at the latest after w of them (1..32767)", int, 1, SEQ_MODULO - 1),
    }
    probe_hint = "check ?ca= (the station's common address of ASDU) and that the station accepts STARTDT from this client"
    liveness_note = "general interrogation (C_IC_NA_1) after STARTDT on its own connection confirmed positively within the deadline"

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        super().__init__(options, path)
        self._templates = tuple(
            Template(
                kind.name,
                REQUEST_TYPES[kind.type_id],
                {"ca": self.options["ca"], "ioa": 0 if kind.station else self.options["ioa"], **kind.values},
                writes=kind.writes,
                disruptive=kind.disruptive,
                code=kind.type_id,
            )
            for kind in _TEMPLATES
        )
        self._probe = Probe(self._templates[0].encode(), f"general interrogation of CA {self.options['ca']}")

    # -- what to send -----------------------------------------------------------------------

    def templates(self) -> Sequence[Template]:
        return self._templates

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        """Qualifiers with a meaning: QOI station and group interrogation (20..36), QCC counter
        requests, SCO/DCO/RCO select/execute with pulse qualifiers, causes of transmission,
        type identifiers, the broadcast common address."""
        return {
            "qoi": [20, *range(21, 37), 0, 37, 255],
            "qcc": [1, 2, 3, 4, 5, 0x41, 0x45, 0x81, 0xC5],
            "sco": [0x00, 0x01, 0x80, 0x81, 0x04, 0x08, 0x0C],
            "dco": [0x01, 0x02, 0x81, 0x82, 0x05, 0x06],
            "rco": [0x01, 0x02, 0x81, 0x82],
            "qrp": [1, 2, 0, 3],
            "qos": [0x00, 0x80],
            "cot": [6, 8, 3, 7, 10, 44, 45, 46, 47],
            "type_id": sorted(TYPE_IDS),
            "ca": [0xFFFF, 0, self.options["ca"]],
        }

    def stress_flood(self) -> tuple[bytes, str] | None:
        """U-frame TESTFR act: the link test every station must confirm."""
        return u_frame(TESTFR_ACT), "U-frame TESTFR act"

    def message_types(self) -> Sequence[MessageType]:
        return (*REQUEST_TYPES.values(), U_FRAME, S_FRAME)

    def probe(self) -> Probe:
        return self._probe

    def probe_ok(self, reply: bytes) -> bool:
        return self.classify(self._probe.frame, reply).kind is ReplyKind.NORMAL

    def session(self) -> Session:
        return IEC104Session(self.options["k"], self.options["w"])

    def needs_opening(self, frame: bytes) -> bool:
        """A frame that starts with its own STARTDT or TESTFR act manages the link state itself
        (an I-frame before STARTDT is expressed as TESTFR act + I-frame)."""
        apdus, _ = split_apdus(frame)
        return not (apdus and apdus[0].kind == "U" and apdus[0].u_function in (STARTDT_ACT, TESTFR_ACT))

    def repair(self, frame: bytes) -> bytes:
        """One APDU with the start octet and the length made to agree with the bytes present."""
        if len(frame) < 2 or len(frame) - 2 > 0xFF:
            return frame
        return bytes([START, len(frame) - 2]) + frame[2:]

    def structural_faults(self, template: Template) -> tuple[tuple[str, bytes], ...]:
        """Framing and state-machine faults around one valid ASDU."""
        frame = template.encode()
        length = frame[1]
        asdu = frame[APCI_SIZE:]
        type_id = frame[APCI_SIZE]

        def with_asdu(data: bytes) -> bytes:
            return template.encode(length=min(4 + len(data), 0xFF))[:APCI_SIZE] + data

        faults: list[tuple[str, bytes]] = [
            ("I-frame while data transfer is stopped (STOPDT act first)", u_frame(STOPDT_ACT) + frame),
            ("I-frame before STARTDT on a fresh connection (TESTFR act, then the I-frame)", u_frame(TESTFR_ACT) + frame),
            ("N(S) one ahead of the expected send sequence", template.encode(send_seq=2)),
            ("N(S) one behind the expected send sequence", template.encode(send_seq=(SEQ_MODULO - 1) << 1)),
            ("N(R) acknowledges one I-frame never sent", template.encode(recv_seq=2)),
            ("S-frame acknowledging 100 I-frames never sent, then the request", S_FRAME.encode(recv_seq=100 << 1) + frame),
            ("APDU length 254, above the 253 maximum", with_asdu(asdu + b"\x00" * (254 - 4 - len(asdu)))),
            ("APDU length 255, above the 253 maximum", with_asdu(asdu + b"\x00" * (255 - 4 - len(asdu)))),
            ("length one short of the content", template.encode(length=length - 1)),
            ("length one longer than the content", template.encode(length=length + 1)),
            ("length 3, below the control field", template.encode(length=3)),
            ("length 0", template.encode(length=0)),
            ("start octet 0x69", template.encode(start=0x69)),
            ("start octet 0x00", template.encode(start=0x00)),
            ("ASDU cut after the common address, length adjusted", with_asdu(asdu[:ASDU_HEAD])),
            ("ASDU cut inside the IOA, length adjusted", with_asdu(asdu[: ASDU_HEAD + 2])),
            ("information element one octet short, length adjusted", with_asdu(asdu[:-1])),
            ("one extra octet after the information object, length adjusted", with_asdu(asdu + b"\x00")),
            ("VSQ says 2 objects, one present", template.encode(vsq=2)),
            ("VSQ says 0 objects", template.encode(vsq=0)),
            ("VSQ with SQ=1 on a single-object request", template.encode(vsq=0x81)),
            ("type id 0 (not defined)", template.encode(type_id=0)),
            ("type id 99 (not defined)", template.encode(type_id=99)),
            ("type id 255 (not defined)", template.encode(type_id=255)),
            ("cause 0 (not defined)", template.encode(cot=0)),
            ("cause 48 (above the defined range)", template.encode(cot=48)),
            ("cause 63 (largest 6-bit cause)", template.encode(cot=63)),
            ("cause 3 (spontaneous) in a request", template.encode(cot=3)),
            ("P/N bit set in a request", template.encode(cot=frame[APCI_SIZE + 2] | PN_BIT)),
            ("common address 0 (not used)", template.encode(ca=0)),
        ]
        if type_id not in BROADCAST_TYPES:
            faults.append(("broadcast common address 0xFFFF on a non-station command", template.encode(ca=BROADCAST_CA)))
        if type_id in STATION_TYPES:
            faults.append(("station command with IOA 1, not 0", template.encode(ioa=1)))
        if template is self._templates[0]:
            # link-level faults need no ASDU: emitted once, with the first template
            faults += [
                ("U-frame with STARTDT and TESTFR act bits together", u_frame(STARTDT_ACT | TESTFR_ACT)),
                ("U-frame with non-zero reserved octets", U_FRAME.encode(u_control=TESTFR_ACT, u_rest=0xFFFFFF)),
                ("U-frame with length 5", U_FRAME.encode(u_control=TESTFR_ACT, length=5) + b"\x00"),
                ("STARTDT act twice", u_frame(STARTDT_ACT) + u_frame(STARTDT_ACT)),
            ]
        return distinct_faults(frame, faults)

    # -- what came back ---------------------------------------------------------------------

    def check_request(self, frame: bytes) -> list[str]:
        apdus, rest = split_apdus(frame)
        problems: list[str] = []
        # Octets after whole APDUs belong to no answered APDU: a conforming station answers what
        # came before them and then drops the connection, so they are reported only when nothing
        # frames at all (or the frame is cut inside an APDU).
        if rest and (not apdus or rest[0] == START):
            if rest[0] != START:
                problems.append(f"{len(rest)} octets that do not start with 0x68")
            elif len(rest) >= 2 and rest[1] < MIN_LENGTH:
                problems.append(f"APDU length {rest[1]} is below the 4-octet control field")
            else:
                problems.append(f"APDU incomplete: {len(rest)} octets, length says {rest[1] + 2 if len(rest) > 1 else '?'}")
        stopped = False
        for n, apdu in enumerate(apdus, start=1):
            where = f"APDU {n}: " if len(apdus) > 1 else ""
            problems += [where + p for p in self._check_apdu(apdu)]
            if apdu.kind == "U" and apdu.u_function in (STARTDT_ACT, STOPDT_ACT):
                stopped = apdu.u_function == STOPDT_ACT
            elif apdu.kind == "I" and stopped:
                problems.append(where + "I-frame after STOPDT act: data transfer is stopped")
        return problems

    def _check_apdu(self, apdu: Apdu) -> list[str]:
        problems: list[str] = []
        length = len(apdu.raw) - 2
        if length > MAX_LENGTH:
            problems.append(f"APDU length {length} above the maximum {MAX_LENGTH}")
        if apdu.kind == "U":
            if apdu.u_function not in U_FUNCTIONS:
                problems.append(f"U-frame control 0x{apdu.u_function:02x} is not one function")
            elif apdu.u_function not in U_CONFIRMS and apdu.u_function != TESTFR_CON:
                problems.append(f"{U_FUNCTIONS[apdu.u_function]} is sent by the controlled station, not the client")
            if length != MIN_LENGTH:
                problems.append(f"U-frame of length {length}: the APCI alone is 4 octets")
            return problems
        if apdu.kind == "S" and length != MIN_LENGTH:
            problems.append(f"S-frame of length {length}: the APCI alone is 4 octets")
        # Spare bits and octets that must be 0 (U/S control octets, bit 0 of the third octet of
        # an I-frame) are faults to send; nothing requires a station to refuse them.
        # Sequence numbers are offsets from the session's counters (module docstring).
        if 0 < apdu.recv_seq <= SEQ_MODULO // 2:
            # (an offset below zero may still acknowledge only frames received: not judged here)
            problems.append(f"N(R) is {apdu.recv_seq} past the I-frames received: acknowledges frames never sent")
        if apdu.kind == "S":
            return problems
        if apdu.send_seq:
            problems.append(f"N(S) is {apdu.send_seq} away from the expected send sequence number")
        asdu = parse_asdu(apdu.asdu)
        if asdu.problem:
            return problems + [asdu.problem]
        message = REQUEST_TYPES.get(asdu.type_id)
        if asdu.type_id not in TYPE_IDS:
            return problems + [f"type id {asdu.type_id} is not defined"]
        if asdu.type_id not in REQUEST_CAUSES:
            return problems + [f"{TYPE_IDS[asdu.type_id]} is not a control-direction type"]
        if message is None:
            # control types without a declaration here: header rules only
            problem = _request_rule(asdu.type_id)({"cot": asdu.cot, "vsq": asdu.vsq, "ca": asdu.ca, "ioa": asdu.ioa or 0})
            return problems + ([problem] if problem else [])
        try:
            values = message.decode(apdu.raw)
        except DecodeError as exc:
            return problems + [str(exc)]
        values["send_seq"] = values["recv_seq"] = 0  # judged above, as offsets
        return problems + message.violations(values)

    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        apdus, rest = split_apdus(reply)
        if rest or len(apdus) != 1:
            if not apdus:
                return ReplyVerdict(ReplyKind.MALFORMED, f"{len(reply)} octets that do not frame as an APDU")
            return ReplyVerdict(ReplyKind.MALFORMED, f"{len(apdus)} APDUs and {len(rest)} stray octets in one reply")
        apdu = apdus[0]
        if len(apdu.raw) - 2 > MAX_LENGTH:
            return ReplyVerdict(ReplyKind.MALFORMED, f"APDU length {len(apdu.raw) - 2} above {MAX_LENGTH}")
        asked = _last_request(request)
        if apdu.kind == "S":
            return ReplyVerdict(ReplyKind.MALFORMED, "S-frame taken for a reply")
        if apdu.kind == "U":
            name = U_FUNCTIONS.get(apdu.u_function, f"U-frame 0x{apdu.u_function:02x}")
            if asked is not None and asked.kind == "U" and U_CONFIRMS.get(asked.u_function) == apdu.u_function:
                if apdu.raw[3:] != b"\0\0\0":
                    return ReplyVerdict(ReplyKind.MALFORMED, f"{name} with non-zero reserved octets")
                return ReplyVerdict(ReplyKind.NORMAL, name)
            return ReplyVerdict(ReplyKind.MALFORMED, f"unexpected {name}")
        if len(apdu.asdu) < ASDU_HEAD:
            return ReplyVerdict(ReplyKind.MALFORMED, f"ASDU of {len(apdu.asdu)} octets is shorter than its 6-octet header")
        asdu = parse_asdu(apdu.asdu)
        text = asdu.describe()
        request_asdu = asked.asdu if asked is not None and asked.kind == "I" else None
        # A mirror repeats the request's ASDU with only the cause changed; when the request was
        # malformed, so is the mirror, and the cause alone says what the station did with it.
        mirror = request_asdu is not None and len(request_asdu) >= 3 and (
            apdu.asdu[:2] == request_asdu[:2] and apdu.asdu[3:] == request_asdu[3:]
        )
        if asdu.problem:
            text += f" ({'mirrors the request: ' if mirror else ''}{asdu.problem})"
        if asdu.cause in UNKNOWN_CAUSES or asdu.negative:
            return ReplyVerdict(ReplyKind.EXCEPTION, text)
        if asdu.problem and not mirror:
            return ReplyVerdict(ReplyKind.MALFORMED, text)
        want = parse_asdu(request_asdu) if request_asdu is not None and len(request_asdu) >= ASDU_HEAD else None
        if asdu.cause == REQUEST and want is not None and want.type_id == 102:
            if (asdu.ca, asdu.ioa) != (want.ca, want.ioa):
                return ReplyVerdict(ReplyKind.MALFORMED, f"{text} answers a read of CA {want.ca} IOA {want.ioa}")
            return ReplyVerdict(ReplyKind.NORMAL, text)
        if asdu.cause not in (ACT_CON, DEACT_CON):
            return ReplyVerdict(ReplyKind.MALFORMED, f"{text} is not a confirmation")
        if want is None or (mirror and asdu.problem):
            return ReplyVerdict(ReplyKind.NORMAL, text)
        if asdu.type_id != want.type_id:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{text} confirms a request of {TYPE_IDS.get(want.type_id, want.type_id)}")
        expected = DEACT_CON if want.cause == DEACT else ACT_CON
        if asdu.cause != expected:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{text} answers {CAUSES.get(want.cause, f'cause {want.cause}')}")
        # a broadcast (CA 0xFFFF) is confirmed by each station under its own common address
        if asdu.ioa != want.ioa or (asdu.ca != want.ca and want.ca != BROADCAST_CA):
            return ReplyVerdict(ReplyKind.MALFORMED, f"{text} mirrors CA/IOA wrongly (request: CA {want.ca} IOA {want.ioa})")
        if asdu.objects and want.objects and asdu.objects[0][1] != want.objects[0][1]:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{text} mirrors element {asdu.objects[0][1].hex()}, request had {want.objects[0][1].hex()}")
        return ReplyVerdict(ReplyKind.NORMAL, text)

    # -- what a capture shows ---------------------------------------------------------------

    def split_messages(self, data: bytes) -> tuple[list[bytes], bytes]:
        """APDUs by the APCI length octet."""
        apdus, rest = split_apdus(data)
        return [a.raw for a in apdus], rest

    def normalise_request(self, frame: bytes) -> bytes:
        """N(S) and N(R) set to 0: the session numbers every I- and S-frame from its own counters."""
        apdus, rest = split_apdus(frame)
        if len(apdus) != 1 or rest or apdus[0].kind == "U":
            return frame
        out = bytearray(frame)
        if apdus[0].kind == "I":
            out[2:4] = b"\0\0"
        out[4:6] = b"\0\0"
        return bytes(out)

    def session_control(self, frame: bytes) -> bool:
        """U-frames (STARTDT, STOPDT, TESTFR) and S-frame acknowledgements: the session's own work."""
        apdus, rest = split_apdus(frame)
        return bool(apdus) and not rest and all(a.kind in ("U", "S") for a in apdus)

    def is_write(self, frame: bytes) -> bool:
        """Conservative: every I-frame whose type is not a known read counts as a write."""
        apdus, rest = split_apdus(frame)
        for apdu in apdus:
            if apdu.kind == "I" and (len(apdu.asdu) < 1 or apdu.asdu[0] not in READ_TYPES):
                return True
        # Octets that do not frame (a bad length) may still be read by a lenient station as an
        # I-frame: count them as a write unless they cannot hold a non-read type id.
        return len(rest) > APCI_SIZE and not rest[2] & 1 and rest[APCI_SIZE] not in READ_TYPES

    def expects_reply(self, frame: bytes) -> bool:
        """S-frames and TESTFR con are never answered."""
        apdus, rest = split_apdus(frame)
        return bool(rest) or _last_request(frame) is not None

    def describe(self, frame: bytes) -> str:
        apdus, rest = split_apdus(frame)
        parts: list[str] = []
        for apdu in apdus:
            if apdu.kind == "U":
                parts.append(U_FUNCTIONS.get(apdu.u_function, f"U-frame 0x{apdu.u_function:02x}"))
            elif apdu.kind == "S":
                parts.append(f"S-frame N(R)+{apdu.recv_seq}")
            else:
                asdu = parse_asdu(apdu.asdu)
                parts.append(asdu.describe() + (f" ({asdu.problem})" if asdu.problem else ""))
        if rest:
            parts.append(f"{len(rest)} unframed octets")
        return "; ".join(parts) or "empty frame"
