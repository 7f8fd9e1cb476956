"""OPC UA binary over TCP (opc.tcp, OPC 10000-6 clause 6 and 7), SecurityPolicy None, sans-IO.

Covered: the UA Connection Protocol (HEL/ACK/ERR/RHE with their buffer, message size and chunk
count limits), the secure conversation with SecurityPolicy None (OPN issue and renew, MSG, CLO;
asymmetric and symmetric security headers, the sequence header, chunking with F/C/A chunk
types), and these services, binary encoded: GetEndpoints, FindServers, CreateSession,
ActivateSession (anonymous), CloseSession, Read, Write, Browse, BrowseNext,
TranslateBrowsePathsToNodeIds, Call, CreateSubscription, CreateMonitoredItems, Publish,
DeleteSubscriptions. The data encoding (NodeIds, Variants, ExtensionObjects...) and the strict
decoder are in `opcua_binary`.

A template is one or more whole OPC UA messages, declared with the message model. Connection
state lives in `OPCUASession`, and templates carry it relative, as the IEC 104 module does:
- secure channel id, token id, sequence number and request id fields hold offsets from the
  connection's values (0 in templates): `prepare` adds the session's own, so a fuzzed body
  never breaks the channel while a fault "token id one ahead" is an offset that stays wrong;
- the request handle is the session's next handle plus the field (wrapped offsets fall back
  to the next handle), so handles strictly increase and stay unique per connection;
- the authentication token field holds the two-byte null NodeId (00 00) in templates: `prepare`
  puts the session's token there; any other value (a wrong token, the null token in another
  encoding) goes out as it is;
- subscription ids are offsets from the last subscription the connection created; the
  anonymous policy id and a BrowseNext continuation point left empty are the ones the server
  gave (CreateSession, Browse).
Templates that set up their own state (a session about to be activated or closed, a channel
about to be closed) start with HEL and run on a fresh connection (`needs_opening` False): the
session sends each message after the answer the next one depends on (HEL, OPN, CreateSession,
CreateSubscription, Browse), and the case's reply is the answer to its last message that gets
one. State-machine faults are such frames with a step left out (Read before ActivateSession).
Nothing here opens a socket or reads a clock; timestamps and nonces in templates are fixed.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from otfuzz.errors import DecodeError, OtfuzzError
from otfuzz.protocols import opcua_binary as ub
from otfuzz.protocols.base import OptionSpec, Probe, Protocol, ReplyKind, ReplyVerdict, Session, Template, distinct_faults
from otfuzz.protocols.model import Bytes, Field, Length, MessageType, UInt
from otfuzz.protocols.opcua_binary import NodeId

# -- constants of the connection protocol and the secure conversation ------------------------------

HEADER_SIZE = 8  # message type (3), chunk type (1), message size (4)
MIN_BUFFER = 8192  # receive and send buffers are at least 8192 bytes (OPC 10000-6 7.1.2.3)
MAX_URL = 4096  # the endpoint URL in HEL is shorter than 4096 bytes
SEND_BUFFER = 65535  # the largest chunk otfuzz announces it sends (HEL SendBufferSize)
RECEIVE_BUFFER = 65535
MAX_MESSAGE = 16 << 20  # HEL MaxMessageSize: the largest response otfuzz accepts
MAX_CHUNKS = 4096  # HEL MaxChunkCount
REPLY_LIMIT = 32 << 20  # a peer's reply larger than this is handed over as malformed
POLICY_NONE = b"http://opcfoundation.org/UA/SecurityPolicy#None"
SEQUENCE_WRAP = (1 << 32) - 1024  # sequence numbers wrap only above UInt32.MaxValue - 1024
TIMESTAMP = 133_485_408_000_000_000  # 2024-01-01T00:00:00Z as a DateTime: templates are fixed
CLIENT_NONCE = b"otfuzz-client-nonce-0123456789ab"  # 32 bytes
TOKEN_FAULT = 0x10000  # a token id offset that no renewal reaches
OUTSTANDING = 256  # pipelined requests whose answers are still taken as replies


def _tag(text: str) -> int:
    return int.from_bytes(text.encode(), "little")


HEL, ACK, ERR, RHE = _tag("HEL"), _tag("ACK"), _tag("ERR"), _tag("RHE")
OPN, MSG, CLO = _tag("OPN"), _tag("MSG"), _tag("CLO")
MESSAGE_TYPES: Mapping[int, str] = MappingProxyType({HEL: "HEL", ACK: "ACK", ERR: "ERR", RHE: "RHE", OPN: "OPN",
                                                     MSG: "MSG", CLO: "CLO"})
SECURE = frozenset({OPN, MSG, CLO})
FINAL, INTERMEDIATE, ABORT = ord("F"), ord("C"), ord("A")
CHUNK_TYPES: Mapping[int, str] = MappingProxyType({FINAL: "F", INTERMEDIATE: "C", ABORT: "A"})
NODE_ENCODINGS: Mapping[int, str] = MappingProxyType({0: "two-byte", 1: "four-byte", 2: "numeric", 3: "string",
                                                      4: "guid", 5: "bytestring"})
ISSUE, RENEW = 0, 1
SECURITY_NONE = 1
# Requests whose answer carries state a later message of the same frame needs.
STATEFUL = frozenset({461, 787, 527})  # CreateSession, CreateSubscription, Browse
PLACEHOLDER_TOKEN = b"\x00\x00"
PLACEHOLDER_POLICY = b"anonymous"
# Requests that cannot change the server's data: everything else counts as a write.
READ_SERVICES = frozenset({446, 452, 422, 428, 461, 467, 473, 631, 527, 533, 554, 787, 751, 826, 847})


def _double(value: float) -> int:
    """A Double as the UInt64 bits the model carries (it has no float field)."""
    return int.from_bytes(struct.pack("<d", value), "little")


# -- declarations (little-endian fields of the message model) ---------------------------------------


def u8(name: str, default: int = 0, **kw: Any) -> UInt:
    return UInt(name, 8, "little", default, **kw)


def u16(name: str, default: int = 0, **kw: Any) -> UInt:
    return UInt(name, 16, "little", default, **kw)


def u32(name: str, default: int = 0, **kw: Any) -> UInt:
    return UInt(name, 32, "little", default, **kw)


def u64(name: str, default: int = 0, **kw: Any) -> UInt:
    return UInt(name, 64, "little", default, **kw)


def string(name: str, value: bytes = b"", max_size: int | None = None) -> list[Field]:
    """An OPC UA String or ByteString: Int32 length, then the bytes (never null in templates)."""
    return [Length(f"{name}_length", 32, "little", covers=[name]), Bytes(name, size_from=f"{name}_length",
                                                                          default=value, max_size=max_size)]


def node(name: str, nid: NodeId, encoding: int | None = None) -> list[Field]:
    """A NodeId in the given encoding (default: the most compact one)."""
    enc = encoding if encoding is not None else ub.encode_node_id(nid)[0]
    head = u8(f"{name}_encoding", enc, enum=NODE_ENCODINGS)
    ident = nid.identifier
    if enc == 0:
        return [head, u8(f"{name}_id", int(ident))]  # type: ignore[arg-type]
    if enc == 1:
        return [head, u8(f"{name}_ns", nid.namespace), u16(f"{name}_id", int(ident))]  # type: ignore[arg-type]
    if enc == 2:
        return [head, u16(f"{name}_ns", nid.namespace), u32(f"{name}_id", int(ident))]  # type: ignore[arg-type]
    raw = ident if isinstance(ident, bytes) else str(ident).encode()
    if enc == 4:
        return [head, u16(f"{name}_ns", nid.namespace), Bytes(f"{name}_id", size=16, default=raw.ljust(16, b"\0")[:16])]
    return [head, u16(f"{name}_ns", nid.namespace), *string(f"{name}_id", raw)]


def null_extension(name: str) -> list[Field]:
    return [u8(f"{name}_type_encoding"), u8(f"{name}_type_id"), u8(f"{name}_encoding")]


def qualified_name(name: str, ns: int, text: bytes) -> list[Field]:
    return [u16(f"{name}_ns", ns), *string(f"{name}_name", text)]


def count(name: str, n: int) -> UInt:
    """An array length: the constraint of the message says how many elements follow."""
    return u32(f"{name}_count", n)


def _chunk_head(p: str, kind: int) -> list[Field]:
    return [UInt(f"{p}message_type", 24, "little", kind, enum=MESSAGE_TYPES), u8(f"{p}chunk_type", FINAL, enum=CHUNK_TYPES)]


def _sized(p: str, kind: int, rest: list[Field]) -> list[Field]:
    """One chunk: header with the message size (the whole chunk, header included) and `rest`."""
    return [*_chunk_head(p, kind), Length(f"{p}message_size", 32, "little", covers=[f.name for f in rest], adjust=HEADER_SIZE), *rest]


def request_header(p: str) -> list[Field]:
    return [
        u8(f"{p}authentication_token_encoding", 0, enum=NODE_ENCODINGS), u8(f"{p}authentication_token_id", 0),
        u64(f"{p}timestamp", TIMESTAMP), u32(f"{p}request_handle"), u32(f"{p}return_diagnostics", maximum=0x3FF),
        *string(f"{p}audit_entry_id"), u32(f"{p}timeout_hint", 10000), *null_extension(f"{p}additional_header"),
    ]


def _type_id(p: str, encoding_id: int) -> list[Field]:
    return [u8(f"{p}type_id_encoding", 1, enum=NODE_ENCODINGS), u8(f"{p}type_id_ns"), u16(f"{p}type_id", encoding_id)]


def secure_message(p: str, encoding_id: int, body: list[Field], kind: int = MSG) -> list[Field]:
    """A single-chunk MSG (or CLO): symmetric security header, sequence header, type id, body."""
    return _sized(p, kind, [u32(f"{p}secure_channel_id"), u32(f"{p}token_id"), u32(f"{p}sequence_number"),
                            u32(f"{p}request_id"), *_type_id(p, encoding_id), *request_header(p), *body])


def hello(p: str, endpoint_url: bytes) -> list[Field]:
    return _sized(p, HEL, [
        u32(f"{p}protocol_version"), u32(f"{p}receive_buffer_size", RECEIVE_BUFFER, minimum=MIN_BUFFER),
        u32(f"{p}send_buffer_size", SEND_BUFFER, minimum=MIN_BUFFER), u32(f"{p}max_message_size", MAX_MESSAGE),
        u32(f"{p}max_chunk_count", MAX_CHUNKS), *string(f"{p}endpoint_url", endpoint_url, MAX_URL - 1),
    ])


def open_secure_channel(p: str, request_type: int) -> list[Field]:
    return _sized(p, OPN, [
        u32(f"{p}secure_channel_id"), *string(f"{p}security_policy_uri", POLICY_NONE),
        *string(f"{p}sender_certificate"), *string(f"{p}receiver_certificate_thumbprint"),
        u32(f"{p}sequence_number"), u32(f"{p}request_id"), *_type_id(p, 446), *request_header(p),
        u32(f"{p}client_protocol_version"), u32(f"{p}request_type", request_type, maximum=RENEW),
        u32(f"{p}security_mode", SECURITY_NONE, minimum=1, maximum=3), *string(f"{p}client_nonce"),
        u32(f"{p}requested_lifetime", 3_600_000),
    ])


def create_session(p: str, endpoint_url: bytes) -> list[Field]:
    return secure_message(p, 461, [
        *string(f"{p}application_uri", b"urn:otfuzz:client"), *string(f"{p}product_uri", b"urn:otfuzz"),
        u8(f"{p}application_name_mask", 2), *string(f"{p}application_name_text", b"otfuzz"),
        u32(f"{p}application_type", 1, maximum=3), *string(f"{p}gateway_server_uri"),
        *string(f"{p}discovery_profile_uri"), count(f"{p}discovery_urls", 0), *string(f"{p}server_uri"),
        *string(f"{p}endpoint_url", endpoint_url), *string(f"{p}session_name", b"otfuzz"),
        *string(f"{p}client_nonce", CLIENT_NONCE), *string(f"{p}client_certificate"),
        u64(f"{p}requested_session_timeout", _double(10_000.0)), u32(f"{p}max_response_message_size"),
    ])


def activate_session(p: str) -> list[Field]:
    token = string(f"{p}policy_id", PLACEHOLDER_POLICY)
    return secure_message(p, 467, [
        *string(f"{p}client_signature_algorithm"), *string(f"{p}client_signature"),
        count(f"{p}client_software_certificates", 0), count(f"{p}locale_ids", 0),
        u8(f"{p}user_identity_token_type_encoding", 1, enum=NODE_ENCODINGS), u8(f"{p}user_identity_token_type_ns"),
        u16(f"{p}user_identity_token_type_id", 321), u8(f"{p}user_identity_token_encoding", 1, maximum=2),
        Length(f"{p}user_identity_token_length", 32, "little", covers=[f.name for f in token]), *token,
        *string(f"{p}user_token_signature_algorithm"), *string(f"{p}user_token_signature"),
    ])


def create_subscription(p: str) -> list[Field]:
    return secure_message(p, 787, [
        u64(f"{p}requested_publishing_interval", _double(20.0)), u32(f"{p}requested_lifetime_count", 300),
        u32(f"{p}requested_max_keep_alive_count", 10), u32(f"{p}max_notifications_per_publish"),
        u8(f"{p}publishing_enabled", 1, maximum=1), u8(f"{p}priority"),
    ])


def read_value_id(p: str, nid: NodeId, attribute: int = ub.VALUE_ATTRIBUTE) -> list[Field]:
    return [*node(f"{p}node_id", nid), u32(f"{p}attribute_id", attribute, minimum=1, maximum=27),
            *string(f"{p}index_range"), *qualified_name(f"{p}data_encoding", 0, b"")]


def browse_request(p: str, nid: NodeId, max_references: int = 0) -> list[Field]:
    return secure_message(p, 527, [
        *node(f"{p}view_id", NodeId(0, 0)), u64(f"{p}view_timestamp"), u32(f"{p}view_version"),
        u32(f"{p}requested_max_references_per_node", max_references), count(f"{p}nodes_to_browse", 1),
        *node(f"{p}node_id", nid), u32(f"{p}browse_direction", 0, maximum=2), *node(f"{p}reference_type_id", NodeId(0, 33)),
        u8(f"{p}include_subtypes", 1, maximum=1), u32(f"{p}node_class_mask", maximum=0xFF),
        u32(f"{p}result_mask", 0x3F, maximum=0x3F),
    ])


def _count_rule(*pairs: tuple[str, int]) -> Callable[[Mapping[str, Any]], str | None]:
    def rule(values: Mapping[str, Any]) -> str | None:
        for name, n in pairs:
            got = values.get(f"{name}_count")
            if got is not None and got != n:
                shown = got - (1 << 32) if got >= 1 << 31 else got
                return f"{name}_count={shown} but {n} element(s) follow"
        return None

    return rule


# -- parsing chunks and messages ---------------------------------------------------------------------


@dataclass(frozen=True)
class Chunk:
    """One chunk as framed by its message size; `body_at` is where the (plain) body starts in `raw`."""

    raw: bytes
    kind: int
    chunk_type: int
    size: int
    channel_id: int = 0
    token_id: int = 0
    sequence_number: int = 0
    request_id: int = 0
    body_at: int = HEADER_SIZE
    policy_uri: bytes | None = None
    problem: str | None = None

    @property
    def name(self) -> str:
        return MESSAGE_TYPES.get(self.kind, self.raw[:3].decode("latin-1") if len(self.raw) >= 3 else "?")

    @property
    def body(self) -> bytes:
        return self.raw[self.body_at:]


def _chunk(raw: bytes) -> Chunk:
    kind = int.from_bytes(raw[:3], "little")
    chunk_type = raw[3]
    size = int.from_bytes(raw[4:8], "little")
    if kind not in SECURE:
        return Chunk(raw, kind, chunk_type, size)
    try:
        if kind == OPN:
            reader = ub.Reader(raw, 12)
            channel = int.from_bytes(raw[8:12], "little") if len(raw) >= 12 else 0
            policy = reader.string("security_policy_uri")
            reader.string("sender_certificate")
            reader.string("receiver_certificate_thumbprint")
            at = reader.pos
            if at + 8 > len(raw):
                raise DecodeError(f"sequence header needs 8 bytes but {len(raw) - at} remain")
            return Chunk(raw, kind, chunk_type, size, channel, 0, int.from_bytes(raw[at:at + 4], "little"),
                         int.from_bytes(raw[at + 4:at + 8], "little"), at + 8, policy)
        if len(raw) < 24:
            raise DecodeError(f"{MESSAGE_TYPES[kind]} chunk of {len(raw)} bytes is shorter than its 24-byte headers")
        c, t, s, r = struct.unpack_from("<IIII", raw, 8)
        return Chunk(raw, kind, chunk_type, size, c, t, s, r, 24)
    except DecodeError as exc:
        return Chunk(raw, kind, chunk_type, size, body_at=len(raw), problem=str(exc))


def split_chunks(data: bytes) -> tuple[list[Chunk], bytes]:
    """Frame `data` by message sizes: the chunks, and the bytes that do not frame (a size below
    the header, an incomplete last chunk)."""
    out: list[Chunk] = []
    pos = 0
    while len(data) - pos >= HEADER_SIZE:
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if size < HEADER_SIZE or pos + size > len(data):
            break
        out.append(_chunk(bytes(data[pos:pos + size])))
        pos += size
    return out, bytes(data[pos:])


@dataclass
class Message:
    """A whole message: one chunk, or the chunks of one MSG/CLO up to its final or abort chunk."""

    chunks: list[Chunk]
    complete: bool = True

    @property
    def kind(self) -> int:
        return self.chunks[0].kind

    @property
    def name(self) -> str:
        return self.chunks[0].name

    @property
    def aborted(self) -> bool:
        return self.chunks[-1].chunk_type == ABORT

    @property
    def request_id(self) -> int:
        return self.chunks[0].request_id

    @property
    def raw(self) -> bytes:
        return b"".join(c.raw for c in self.chunks)

    @property
    def body(self) -> bytes:
        return b"".join(c.body for c in self.chunks)

    def service(self) -> tuple[NodeId | None, str | None]:
        """The body's type id and the service structure it names (None: unknown or undecodable)."""
        if self.kind not in SECURE:
            return None, None
        try:
            type_id = ub.Reader(self.body).node_id("type_id")
        except DecodeError:
            return None, None
        name = ub.SERVICES.get(type_id.identifier) if type_id.namespace == 0 and type_id.kind == "numeric" else None  # type: ignore[call-overload]
        return type_id, name

    @property
    def service_id(self) -> int | None:
        type_id, name = self.service()
        return int(type_id.identifier) if name is not None and type_id is not None else None  # type: ignore[arg-type]

    @property
    def expects_reply(self) -> bool:
        """CLO and aborted or unfinished messages are never answered; everything else is (by
        an answer or, for a message a client may not send, an ERR)."""
        return self.complete and not self.aborted and self.kind != CLO

    def decode(self) -> tuple[str | None, dict[str, Any] | None, list[str]]:
        """(service name, body values, problems) of a secure message's body."""
        type_id, name = self.service()
        if type_id is None:
            try:
                ub.Reader(self.body).node_id("type_id")
            except DecodeError as exc:
                return None, None, [str(exc)]
            return None, None, ["type_id cut short"]
        if name is None:
            return None, None, [f"type_id={type_id} is not a known service encoding"]
        body = self.body
        at = ub.Reader(body)
        at.node_id("type_id")
        try:
            values, problems, end = ub.decode_body(name, body, at.pos)
        except DecodeError as exc:
            return name, None, [str(exc)]
        if end != len(body):
            problems.append(f"{name} body has {len(body) - end} bytes after its last field")
        return name, values, problems


def group_messages(chunks: Sequence[Chunk]) -> list[Message]:
    out: list[Message] = []
    open_message: Message | None = None
    for chunk in chunks:
        if chunk.kind in (MSG, CLO):
            if open_message is not None and open_message.kind == chunk.kind:
                open_message.chunks.append(chunk)
            else:
                open_message = Message([chunk], False)
                out.append(open_message)
            if chunk.chunk_type != INTERMEDIATE:
                open_message.complete = True
                open_message = None
            continue
        open_message = None
        out.append(Message([chunk]))
    return out


def parse_messages(data: bytes) -> tuple[list[Message], bytes]:
    chunks, rest = split_chunks(data)
    return group_messages(chunks), rest


def _signed(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


# -- session ---------------------------------------------------------------------------------------


class OPCUASession(Session):
    """One opc.tcp connection: HEL/ACK, the secure channel, the session, sequence numbers.

    Replies are framed in `feed`: each whole incoming message updates the state (limits from
    ACK, channel and token from OPN, authentication token and anonymous policy from
    CreateSession, subscription id, continuation point) and is the reply when it answers the
    request pending (matched by request id), or ends the case (ERR). Frames prepared one after
    another without waiting (a stress flood) are all answered: each one's answer is a reply,
    matched by its request id. Answers owed to earlier messages of the same frame are dropped.
    """

    def __init__(self, opening: Sequence[bytes] = ()) -> None:
        super().__init__()
        self._opening = list(opening)
        self.channel_id = 0
        self.token_id = 0
        self.sequence_number = 1  # the next one to send
        self.request_id = 1
        self.request_handle = 1
        self.authentication_token: bytes | None = None
        self.anonymous_policy: bytes | None = None
        self.subscription_id = 0
        self.continuation_point: bytes | None = None
        self.activated = False
        self.limits: dict[str, int] = {}  # from ACK
        self._queue: list[bytes] = []  # messages held back until the pending answer arrives
        self._pending: tuple[str, int] | None = None  # ("ACK" | "OPN" | "MSG" | "ERR", request id)
        self._intermediate = False  # the pending answer only releases the queue
        self._replies: list[bytes] = []
        self._incoming: list[Chunk] = []
        self._sent_request_id = 0
        self._outstanding: deque[int] = deque(maxlen=OUTSTANDING)

    def opening(self) -> list[bytes]:
        return list(self._opening)

    # -- outgoing ----------------------------------------------------------------------------

    def prepare(self, frame: bytes) -> bytes:
        messages, rest = parse_messages(frame)
        if self._pending is not None and self._pending[0] == "MSG" and not self._intermediate:
            # Sent before and not answered yet: a pipelined request (a stress flood writes many
            # before reading), whose answer is still a reply when it comes.
            self._outstanding.append(self._pending[1])
        self._queue = []
        self._pending = None
        self._intermediate = False
        if not messages:
            self._pending = ("ERR", 0) if frame else None  # bytes that do not frame: only an ERR answers them
            return frame
        out = bytearray()
        for n, message in enumerate(messages):
            later = n + 1 < len(messages)
            out += self._patch(message)
            if message.expects_reply:
                self._pending = self._expect(message)
            if later and _holds_back(message):
                self._intermediate = True
                self._queue = [m.raw for m in messages[n + 1:]]
                if rest:
                    self._queue.append(rest)
                return bytes(out)
        if rest and self._pending is None:
            self._pending = ("ERR", 0)
        return bytes(out + rest)

    def _expect(self, message: Message) -> tuple[str, int]:
        if message.kind == HEL:
            return ("ACK", 0)
        if message.kind in (OPN, MSG):
            return (message.name, self._sent_request_id)
        return ("ERR", 0)  # a message no client sends: a server answers it with ERR, if at all

    def _patch(self, message: Message) -> bytes:
        """The message with the connection's state written in (offsets added, placeholders filled)."""
        if message.kind not in SECURE:
            return message.raw
        request_id = self._sent_request_id = self.request_id
        out = bytearray()
        for index, chunk in enumerate(message.chunks):
            raw = bytearray(chunk.raw)
            if chunk.problem is not None:
                out += raw
                continue
            if index == 0:
                raw = self._patch_body(raw, chunk, message)
            body_at = chunk.body_at  # the headers sit before the body: patching it moves nothing here
            channel = (self.channel_id + chunk.channel_id) & 0xFFFFFFFF
            raw[8:12] = channel.to_bytes(4, "little")
            sequence = (self.sequence_number + chunk.sequence_number) & 0xFFFFFFFF
            raw[body_at - 8:body_at - 4] = sequence.to_bytes(4, "little")
            self.sequence_number = (sequence + 1) & 0xFFFFFFFF or 1
            sent_request = (request_id + chunk.request_id) & 0xFFFFFFFF
            raw[body_at - 4:body_at] = sent_request.to_bytes(4, "little")
            if chunk.kind != OPN:
                raw[12:16] = ((self.token_id + chunk.token_id) & 0xFFFFFFFF).to_bytes(4, "little")
            raw[4:8] = len(raw).to_bytes(4, "little")
            out += raw
            if index == len(message.chunks) - 1:
                self._sent_request_id = sent_request
        self.request_id = (request_id + 1) & 0xFFFFFFFF or 1
        return bytes(out)

    def _patch_body(self, raw: bytearray, chunk: Chunk, message: Message) -> bytearray:
        """Authentication token, request handle, policy id, subscription id, continuation point."""
        at = chunk.body_at
        try:
            reader = ub.Reader(bytes(raw), at)
            type_id = reader.node_id("type_id")
            service = int(type_id.identifier) if type_id.namespace == 0 and type_id.kind == "numeric" else None  # type: ignore[arg-type]
            token_at = reader.pos
            reader.node_id("authentication_token")
            token_end = reader.pos
        except DecodeError:
            return raw
        if (raw[token_at:token_end] == PLACEHOLDER_TOKEN and self.authentication_token is not None
                and service not in ub.SESSIONLESS):
            raw[token_at:token_end] = self.authentication_token
            token_end = token_at + len(self.authentication_token)
        handle_at = token_end + 8
        if handle_at + 4 > len(raw):
            return raw
        offset = int.from_bytes(raw[handle_at:handle_at + 4], "little")
        handle = self.request_handle + offset
        if handle > 0xFFFFFFFF:
            handle = self.request_handle
        raw[handle_at:handle_at + 4] = handle.to_bytes(4, "little")
        self.request_handle = handle + 1 if handle < 0xFFFFFFFF else handle
        try:
            reader = ub.Reader(bytes(raw), handle_at + 4)
            reader.fixed("UInt32", "return_diagnostics")
            reader.string("audit_entry_id")
            reader.fixed("UInt32", "timeout_hint")
            reader.extension_object("additional_header")
            at = reader.pos
            if service == 467:
                return self._patch_policy(raw, reader)
            if service in (751, 847):
                # CreateMonitoredItems: subscription id first; DeleteSubscriptions: after the count
                sub_at = at if service == 751 else at + 4
                if service == 847 and int.from_bytes(raw[at:at + 4], "little") < 1:
                    return raw
                if sub_at + 4 <= len(raw):
                    value = (self.subscription_id + int.from_bytes(raw[sub_at:sub_at + 4], "little")) & 0xFFFFFFFF
                    raw[sub_at:sub_at + 4] = value.to_bytes(4, "little")
            if service == 533 and self.continuation_point is not None and raw[at + 1:at + 9] == b"\x01\0\0\0\0\0\0\0":
                raw[at + 5:at + 9] = len(self.continuation_point).to_bytes(4, "little")
                raw[at + 9:at + 9] = self.continuation_point
        except DecodeError:
            pass
        return raw

    def _patch_policy(self, raw: bytearray, reader: ub.Reader) -> bytearray:
        reader.string("client_signature_algorithm")
        reader.string("client_signature")
        for what, strings in (("client_software_certificates", 2), ("locale_ids", 1)):
            for _ in range(max(reader.length(what), 0) * strings):
                reader.string(what)
        type_id = reader.node_id("user_identity_token type_id")
        if type_id.identifier != 321 or self.anonymous_policy is None or self.anonymous_policy == PLACEHOLDER_POLICY:
            return raw
        if reader.fixed("Byte", "encoding") != 1:
            return raw
        length_at = reader.pos
        body_length = reader.length("user_identity_token body")
        policy_at = reader.pos
        if reader.string("policy_id") != PLACEHOLDER_POLICY or body_length != 4 + len(PLACEHOLDER_POLICY):
            return raw
        new = len(self.anonymous_policy).to_bytes(4, "little") + self.anonymous_policy
        raw[policy_at:reader.pos] = new
        raw[length_at:length_at + 4] = len(new).to_bytes(4, "little")
        return raw

    # -- incoming ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        while len(buf) >= HEADER_SIZE:
            kind = int.from_bytes(buf[:3], "little")
            size = int.from_bytes(buf[4:8], "little")
            if kind not in MESSAGE_TYPES or size < HEADER_SIZE or size > REPLY_LIMIT:
                # No size to frame by: hand everything over so the classifier reports it.
                self._deliver(bytes(buf))
                buf.clear()
                return
            if len(buf) < size:
                return
            chunk = _chunk(bytes(buf[:size]))
            del buf[:size]
            self._receive(chunk)

    def next_reply(self) -> bytes | None:
        return self._replies.pop(0) if self._replies else None

    def _receive(self, chunk: Chunk) -> None:
        if chunk.kind in (MSG, CLO) and chunk.problem is None:
            if self._incoming and self._incoming[0].request_id != chunk.request_id:
                self._incoming = []  # an unfinished answer to something else: dropped
            self._incoming.append(chunk)
            if chunk.chunk_type == INTERMEDIATE and sum(len(c.raw) for c in self._incoming) <= REPLY_LIMIT:
                return
            message = Message(self._incoming)
            self._incoming = []
        else:
            message = Message([chunk])
        self._learn(message)
        pending = self._pending
        if pending is None:
            if message.kind == MSG and message.request_id in self._outstanding:
                self._outstanding.remove(message.request_id)
                self._replies.append(message.raw)
            return
        want, request_id = pending
        if message.kind == ERR:
            matches = True
        elif want == "ACK":
            matches = message.kind == ACK
        elif want == "OPN":  # some servers refuse an OPN with a MSG carrying a ServiceFault
            matches = message.kind == OPN or (message.kind == MSG and message.request_id == request_id)
        elif want == "MSG":
            matches = message.kind == MSG and message.request_id == request_id
        else:
            matches = False
        if not matches and message.kind == MSG and message.request_id in self._outstanding:
            self._outstanding.remove(message.request_id)
            self._replies.append(message.raw)
            return
        if not matches:
            if message.kind in (HEL, RHE, ACK) or chunk.problem is not None:
                self._deliver(message.raw)  # not an answer any request gets: the classifier says so
            return
        if self._intermediate and message.kind != ERR and self._answer_ok(message):
            self._release()
            if self._pending is not None:
                return  # the rest of the frame is on its way; its answer is the reply
        self._deliver(message.raw)

    def _answer_ok(self, message: Message) -> bool:
        """An intermediate answer that lets the frame go on (anything else ends the case)."""
        if message.kind == ACK:
            return True
        name, values, problems = message.decode()
        if values is None or name == "ServiceFault":
            return False
        return not ub.is_bad(values["response_header"]["service_result"])

    def _release(self) -> None:
        queued = b"".join(self._queue)
        self._queue = []
        self._intermediate = False
        self._output += self.prepare(queued)

    def _deliver(self, raw: bytes) -> None:
        self._pending = None
        self._queue = []
        self._intermediate = False
        self._replies.append(raw)

    def _learn(self, message: Message) -> None:
        if message.kind == ACK:
            raw = message.chunks[0].raw
            if len(raw) >= 28:
                names = ("protocol_version", "receive_buffer_size", "send_buffer_size", "max_message_size", "max_chunk_count")
                self.limits = dict(zip(names, struct.unpack_from("<5I", raw, 8)))
            return
        if message.kind not in (OPN, MSG) or not message.complete or message.aborted:
            return
        name, values, _ = message.decode()
        if values is None:
            return
        if name == "OpenSecureChannelResponse":
            token = values["security_token"]
            self.channel_id, self.token_id = token["channel_id"], token["token_id"]
        elif name == "CreateSessionResponse" and not ub.is_bad(values["response_header"]["service_result"]):
            self.authentication_token = ub.encode_node_id(values["authentication_token"])
            self.activated = False
            for endpoint in values.get("server_endpoints") or []:
                if endpoint.get("security_policy_uri") != POLICY_NONE:
                    continue
                for policy in endpoint.get("user_identity_tokens") or []:
                    if policy.get("token_type") == 0 and policy.get("policy_id"):
                        self.anonymous_policy = policy["policy_id"]
                        break
        elif name == "ActivateSessionResponse":
            self.activated = not ub.is_bad(values["response_header"]["service_result"])
        elif name == "CloseSessionResponse":
            self.activated = False
        elif name == "CreateSubscriptionResponse" and not ub.is_bad(values["response_header"]["service_result"]):
            self.subscription_id = values["subscription_id"]
        elif name in ("BrowseResponse", "BrowseNextResponse"):
            results = values.get("results") or []
            self.continuation_point = (results[0].get("continuation_point") or None) if results else None


# -- the protocol ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Kind:
    """A request template: its name, the service it ends with, how it is built."""

    name: str
    code: int | None
    build: Callable[[OPCUA], tuple[list[Field], list[Callable[[Mapping[str, Any]], str | None]]]]
    writes: bool = False
    disruptive: bool = False


class OPCUA(Protocol):
    """OPC UA binary client side (opc.tcp) with SecurityPolicy None and an anonymous session."""

    name = "opcua"
    schemes = ("opcua",)
    default_port = 4840
    accepts_path = True
    options_spec = {
        "security": OptionSpec("none", "security policy of the secure channel (only none: SecurityPolicy None)"),
        "node": OptionSpec("i=2259", "variable Read, Write and CreateMonitoredItems address (NodeId text, e.g. ns=2;i=1001)"),
        "object": OptionSpec("i=2253", "object whose method Call invokes (NodeId text)"),
        "method": OptionSpec("i=11492", "method Call invokes with one UInt32 argument (NodeId text)"),
        "browse": OptionSpec("i=85", "node Browse and BrowseNext start from (NodeId text)"),
    }
    probe_hint = "check the endpoint path and that the server offers SecurityPolicy None with anonymous access"
    liveness_note = ("Read of Server_ServerStatus_State after HEL, OPN, CreateSession and ActivateSession on its own "
                     "connection, answered with a good status within the deadline")

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        super().__init__(options, path)
        if self.options["security"].lower() != "none":
            raise OtfuzzError(f"opcua: option security={self.options['security']} is not supported "
                              "(supported: none, SecurityPolicy None)")
        self.nodes: dict[str, NodeId] = {}
        for key in ("node", "object", "method", "browse"):
            try:
                self.nodes[key] = ub.parse_node_id_text(self.options[key])
            except ValueError as exc:
                raise OtfuzzError(f"opcua: option {key}={self.options[key]} is not a NodeId: {exc}") from None
        self.address("localhost", self.default_port)

    def address(self, host: str, port: int) -> None:
        """The endpoint URL every HEL, GetEndpoints and CreateSession names: opc.tcp://host:port/path."""
        shown = f"[{host}]" if ":" in host else host
        self.endpoint_url = f"opc.tcp://{shown}:{port}{self.path}".encode()
        self._templates = tuple(
            Template(kind.name, MessageType(kind.name, fields, constraints=tuple(rules)), {},
                     writes=kind.writes, disruptive=kind.disruptive, code=kind.code)
            for kind in _TEMPLATES for fields, rules in [kind.build(self)]
        )
        self._by_name = {t.name: t for t in self._templates}
        self._opening = [self._by_name["hello"].encode(), self.message_bytes("open_secure_channel", -1),
                         self.message_bytes("create_session", -1), self.message_bytes("activate_session", -1)]
        probe = secure_message("", 631, [u64("max_age"), u32("timestamps_to_return", 3), count("nodes_to_read", 1),
                                         *read_value_id("", NodeId(0, 2259))])
        self._probe = Probe(MessageType("probe", probe).encode(), "Read of Server_ServerStatus_State (i=2259)")

    # -- building blocks for the template table ------------------------------------------------

    def preamble(self, upto: str) -> list[Field]:
        """The messages a fresh connection sends before a state-setting message: HEL, OPN, ..."""
        steps = ["hel", "opn", "cs", "as"][: ["hel", "opn", "cs", "as", "end"].index(upto)]
        out: list[Field] = []
        for step in steps:
            if step == "hel":
                out += hello("hel_", self.endpoint_url)
            elif step == "opn":
                out += open_secure_channel("opn_", ISSUE)
            elif step == "cs":
                out += create_session("cs_", self.endpoint_url)
            else:
                out += activate_session("as_")
        return out

    def preamble_bytes(self, upto: str) -> bytes:
        return MessageType("preamble", self.preamble(upto)).encode()

    def message_bytes(self, template: str, index: int) -> bytes:
        """One whole message of a template's frame (index -1: its last)."""
        messages, _ = parse_messages(self._by_name[template].encode())
        return messages[index].raw

    # -- what to send --------------------------------------------------------------------------

    def templates(self) -> Sequence[Template]:
        return self._templates

    def template(self, name: str) -> Template:
        return self._by_name[name]

    def message_types(self) -> Sequence[MessageType]:
        return tuple(t.message for t in self._templates)

    def probe(self) -> Probe:
        return self._probe

    def probe_ok(self, reply: bytes) -> bool:
        return self.classify(self._probe.frame, reply).kind is ReplyKind.NORMAL

    def session(self) -> Session:
        return OPCUASession(self._opening)

    def stress_flood(self) -> tuple[bytes, str] | None:
        """Read of Server_ServerStatus_State: the cheapest request every session serves."""
        return self._probe.frame, "Read of Server_ServerStatus_State"

    def identify(self) -> list[bytes]:
        return [self._identity_request()]

    def _identity_request(self) -> bytes:
        ids = (2263, 2261, 2264, 2265)
        fields: list[Field] = [count("nodes_to_read", len(ids))]
        for n, ident in enumerate(ids):
            fields += read_value_id(f"n{n}_", NodeId(0, ident))
        return MessageType("identity", secure_message("", 631, [u64("max_age"), u32("timestamps_to_return", 3), *fields])).encode()

    def parse_identity(self, reply: bytes) -> dict[str, str]:
        messages, _ = parse_messages(reply)
        if not messages:
            return {}
        name, values, _ = messages[0].decode()
        if name != "ReadResponse" or values is None:
            return {}
        out: dict[str, str] = {}
        for key, result in zip(("vendor", "product", "revision", "build"), values.get("results") or []):
            value = result.get("value")
            if value and value[0] == 12 and value[1]:
                out[key] = value[1].decode("utf-8", "replace")[:80]
        return out

    def observed_state(self, reply: bytes) -> bytes:
        """A response's body after its ResponseHeader: the results, without the timestamp,
        request handle and sequence header that differ on every answer."""
        messages, _ = parse_messages(reply)
        if len(messages) != 1 or messages[0].kind != MSG:
            return reply
        body = messages[0].body
        try:
            reader = ub.Reader(body)
            reader.node_id("type_id")
            reader.value("ResponseHeader", "response_header")
        except DecodeError:
            return reply
        return body[reader.pos:]

    def needs_opening(self, frame: bytes) -> bool:
        """A frame that starts with HEL (or another connection-level message, or OPN Issue)
        sets up its own connection state: it goes out on a fresh connection."""
        chunks, _ = split_chunks(frame[: 1 << 16])
        if not chunks:
            return True
        first = chunks[0]
        if first.kind in (HEL, ACK, ERR, RHE) or first.kind not in MESSAGE_TYPES:
            return False
        if first.kind == OPN and first.problem is None:
            message = Message([first])
            name, values, _ = message.decode()
            return not (values is not None and values.get("request_type") == ISSUE)
        return True

    def expects_reply(self, frame: bytes) -> bool:
        messages, rest = parse_messages(frame)
        return bool(rest) or any(m.expects_reply for m in messages)

    def keeps_connection(self, request: bytes, reply: bytes) -> bool:
        """A CLO ends the secure channel, and a server closes the connection after an ERR (Part 6,
        7.1.2.4 and 7.1.5): a case after either goes out on a new connection, and the close is no anomaly."""
        if reply[:3] == b"ERR":
            return False
        if b"CLO" not in request:  # on every case's path: no chunk parse for the frames that hold none
            return True
        chunks, _ = split_chunks(request[: 1 << 16])
        return not any(chunk.kind == CLO for chunk in chunks)

    def frame_length(self, frame: bytes) -> int | None:
        chunks, rest = split_chunks(frame)
        return sum(len(c.raw) for c in chunks) if chunks else None

    def repair(self, frame: bytes) -> bytes:
        """Message sizes made to agree with the bytes: each chunk ends where the next known
        chunk header starts (or at the end of the frame)."""
        starts = [0]
        for at in range(HEADER_SIZE, len(frame) - HEADER_SIZE + 1):
            kind = int.from_bytes(frame[at:at + 3], "little")
            if kind in MESSAGE_TYPES and frame[at + 3] in CHUNK_TYPES and at - starts[-1] >= HEADER_SIZE:
                size = int.from_bytes(frame[at + 4:at + 8], "little")
                if HEADER_SIZE <= size <= len(frame) - at:
                    starts.append(at)
        if len(frame) < HEADER_SIZE:
            return frame
        out = bytearray()
        for n, start in enumerate(starts):
            end = starts[n + 1] if n + 1 < len(starts) else len(frame)
            chunk = bytearray(frame[start:end])
            chunk[4:8] = len(chunk).to_bytes(4, "little")
            out += chunk
        return bytes(out)

    def is_write(self, frame: bytes) -> bool:
        """Conservative: any MSG whose service is not a known read (or does not decode) is a write."""
        messages, rest = parse_messages(frame)
        for message in messages:
            if message.kind == MSG:
                service = message.service_id
                if service is None or service not in READ_SERVICES:
                    return True
        # Bytes that do not frame may still reach a lenient parser as a message.
        return bool(rest) and b"MSG" in rest

    def request_type(self, frame: bytes) -> str | None:
        """The template whose last service (or connection message) the frame ends with."""
        messages, _ = parse_messages(frame)
        if not messages:
            return None
        last = messages[-1]
        service = last.service_id
        for template in self._templates:
            if template.code is not None and template.code == service:
                if service == 446:
                    _, values, _ = last.decode()
                    wanted = "renew_secure_channel" if values and values.get("request_type") == RENEW else "open_secure_channel"
                    return wanted
                return template.name
        if last.kind == HEL:
            return "hello"
        if last.kind == CLO:
            return "close_secure_channel"
        return None

    def describe(self, frame: bytes) -> str:
        messages, rest = parse_messages(frame)
        parts: list[str] = []
        for message in messages:
            text = message.name
            if len(message.chunks) > 1:
                text += " " + "".join(CHUNK_TYPES.get(c.chunk_type, "?") for c in message.chunks[:12])
            if message.kind in SECURE:
                type_id, name = message.service()
                text += f" {name or type_id or 'undecodable body'}"
            parts.append(text)
        if rest:
            parts.append(f"{len(rest)} unframed bytes")
        return "; ".join(parts) or "empty frame"

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        codes = sorted(ub.STATUS_CODES)
        nodes = sorted(ub.WELL_KNOWN_NODES)
        return {
            "message_type": list(MESSAGE_TYPES),
            "chunk_type": list(CHUNK_TYPES),
            "type_id": sorted(ub.SERVICES),
            "attribute_id": sorted(ub.ATTRIBUTES),
            "node_id_id": nodes,
            "reference_type_id_id": [31, 33, 35, 40, 45, 46, 47],
            "status_code": codes,
            "timestamps_to_return": sorted(ub.ENUMS["TimestampsToReturn"]),
            "browse_direction": sorted(ub.ENUMS["BrowseDirection"]),
            "monitoring_mode": sorted(ub.ENUMS["MonitoringMode"]),
            "security_mode": sorted(ub.ENUMS["MessageSecurityMode"]),
            "request_type": [ISSUE, RENEW],
            "user_identity_token_type_id": sorted(ub.IDENTITY_TOKENS),
            "security_policy_uri": [POLICY_NONE, b"http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256"],
        }

    # -- faults --------------------------------------------------------------------------------

    def structural_faults(self, template: Template) -> tuple[tuple[str, bytes], ...]:
        return distinct_faults(template.encode(), _faults(self, template))

    # -- what came back ------------------------------------------------------------------------

    def check_request(self, frame: bytes) -> list[str]:
        return _check_frame(self, frame)

    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        return _classify(request, reply)


# -- the template table -------------------------------------------------------------------------------


def _in_session(code: int, body: Callable[[OPCUA], list[Field]]) -> Callable[[OPCUA], tuple[list[Field], list[Any]]]:
    return lambda p: (secure_message("", code, body(p)), [])


def _fresh(upto: str, last: Callable[[OPCUA], list[Field]]) -> Callable[[OPCUA], tuple[list[Field], list[Any]]]:
    return lambda p: ([*p.preamble(upto), *last(p)], [])


def _after(first: Callable[[OPCUA], list[Field]], code: int, body: Callable[[OPCUA], list[Field]]) -> Callable[[OPCUA], tuple[list[Field], list[Any]]]:
    """A helper message (creating what the main one needs), then the main message."""
    return lambda p: ([*first(p), *secure_message("", code, body(p))], [])


def _read_body(p: OPCUA) -> list[Field]:
    return [u64("max_age"), u32("timestamps_to_return", 2, maximum=3), count("nodes_to_read", 1), *read_value_id("", p.nodes["node"])]


def _write_body(p: OPCUA) -> list[Field]:
    return [count("nodes_to_write", 1), *node("node_id", p.nodes["node"]),
            u32("attribute_id", ub.VALUE_ATTRIBUTE, minimum=1, maximum=27), *string("index_range"),
            u8("value_mask", 0x01, maximum=0x3F), u8("value_type", 11, minimum=1, maximum=25), u64("value", _double(42.0))]


def _browse_next_body(p: OPCUA) -> list[Field]:
    return [u8("release_continuation_points", 0, maximum=1), count("continuation_points", 1), *string("continuation_point")]


def _translate_body(p: OPCUA) -> list[Field]:
    out: list[Field] = [count("browse_paths", 1), *node("starting_node", NodeId(0, 84)), count("elements", 2)]
    for n, target in enumerate((b"Objects", b"Server")):
        out += [*node(f"e{n}_reference_type_id", NodeId(0, 33)), u8(f"e{n}_is_inverse", 0, maximum=1),
                u8(f"e{n}_include_subtypes", 1, maximum=1), *qualified_name(f"e{n}_target_name", 0, target)]
    return out


def _call_body(p: OPCUA) -> list[Field]:
    return [count("methods_to_call", 1), *node("object_id", p.nodes["object"]), *node("method_id", p.nodes["method"]),
            count("input_arguments", 1), u8("argument_type", 7, minimum=1, maximum=25), u32("argument")]


def _monitored_body(p: OPCUA) -> list[Field]:
    return [u32("subscription_id"), u32("timestamps_to_return", 2, maximum=3), count("items_to_create", 1),
            *read_value_id("", p.nodes["node"]), u32("monitoring_mode", 2, maximum=2), u32("client_handle", 1),
            u64("sampling_interval", _double(100.0)), *null_extension("filter"), u32("queue_size", 1),
            u8("discard_oldest", 1, maximum=1)]


def _endpoint_body(p: OPCUA) -> list[Field]:
    return [*string("endpoint_url", p.endpoint_url), count("locale_ids", 0), count("profile_uris", 0)]


def _find_body(p: OPCUA) -> list[Field]:
    return [*string("endpoint_url", p.endpoint_url), count("locale_ids", 0), count("server_uris", 0)]


def _with_counts(build: Callable[[OPCUA], tuple[list[Field], list[Any]]], *pairs: tuple[str, int]) -> Callable[[OPCUA], tuple[list[Field], list[Any]]]:
    def wrapped(p: OPCUA) -> tuple[list[Field], list[Any]]:
        fields, rules = build(p)
        return fields, [*rules, _count_rule(*pairs)]

    return wrapped


_TEMPLATES: tuple[_Kind, ...] = (
    _Kind("read", 631, _with_counts(_in_session(631, _read_body), ("nodes_to_read", 1))),
    _Kind("browse", 527, _with_counts(lambda p: (browse_request("", p.nodes["browse"]), []), ("nodes_to_browse", 1))),
    _Kind("browse_next", 533, _with_counts(_after(lambda p: browse_request("br_", p.nodes["browse"], 1), 533, _browse_next_body),
                                           ("continuation_points", 1))),
    _Kind("translate_browse_paths_to_node_ids", 554, _with_counts(_in_session(554, _translate_body), ("browse_paths", 1), ("elements", 2))),
    _Kind("get_endpoints", 428, _with_counts(_in_session(428, _endpoint_body), ("locale_ids", 0), ("profile_uris", 0))),
    _Kind("find_servers", 422, _with_counts(_in_session(422, _find_body), ("locale_ids", 0), ("server_uris", 0))),
    _Kind("create_subscription", 787, lambda p: (create_subscription(""), [])),
    _Kind("create_monitored_items", 751, _with_counts(_after(lambda p: create_subscription("sub_"), 751, _monitored_body),
                                                      ("items_to_create", 1))),
    _Kind("publish", 826, _with_counts(_after(lambda p: create_subscription("sub_"), 826, lambda p: [count("subscription_acknowledgements", 0)]),
                                       ("subscription_acknowledgements", 0))),
    _Kind("delete_subscriptions", 847, _with_counts(_after(lambda p: create_subscription("sub_"), 847,
                                                           lambda p: [count("subscription_ids", 1), u32("subscription_id")]),
                                                    ("subscription_ids", 1))),
    _Kind("renew_secure_channel", 446, lambda p: (open_secure_channel("", RENEW), [])),
    _Kind("hello", None, lambda p: (hello("", p.endpoint_url), [])),
    _Kind("open_secure_channel", 446, _fresh("opn", lambda p: open_secure_channel("", ISSUE))),
    _Kind("create_session", 461, _with_counts(_fresh("cs", lambda p: create_session("", p.endpoint_url)), ("discovery_urls", 0))),
    _Kind("activate_session", 467, _with_counts(_fresh("as", lambda p: activate_session("")),
                                                ("client_software_certificates", 0), ("locale_ids", 0))),
    _Kind("close_session", 473, _fresh("end", lambda p: secure_message("", 473, [u8("delete_subscriptions", 1, maximum=1)]))),
    _Kind("close_secure_channel", 452, _fresh("cs", lambda p: secure_message("", 452, [], CLO))),
    _Kind("write", 673, _with_counts(_in_session(673, _write_body), ("nodes_to_write", 1)), writes=True),
    _Kind("call", 712, _with_counts(_in_session(712, _call_body), ("methods_to_call", 1), ("input_arguments", 1)), writes=True),
)

# -- request checks -----------------------------------------------------------------------------------

# Connection states a frame walks through: a fresh frame starts at NONE, any other at ACTIVE.
NONE, HELLO, CHANNEL, CREATED, ACTIVE, CLOSED = range(6)
_OPERATIONS: Mapping[str, str] = MappingProxyType({
    "ReadRequest": "nodes_to_read", "WriteRequest": "nodes_to_write", "BrowseRequest": "nodes_to_browse",
    "BrowseNextRequest": "continuation_points", "TranslateBrowsePathsToNodeIdsRequest": "browse_paths",
    "CallRequest": "methods_to_call", "CreateMonitoredItemsRequest": "items_to_create",
    "DeleteSubscriptionsRequest": "subscription_ids",
})


def _check_frame(protocol: OPCUA, frame: bytes) -> list[str]:
    """Problems of the messages up to the one whose answer is the reply (the last one that
    gets an answer): what follows it (a CLO, an aborted or unfinished message, bytes that do
    not frame) is never answered, so it cannot make that answer wrong."""
    messages, rest = parse_messages(frame)
    answered = max((n for n, m in enumerate(messages) if m.expects_reply), default=None)
    problems: list[str] = []
    if rest and answered is None and (not messages or int.from_bytes(rest[:3], "little") in MESSAGE_TYPES):
        if len(rest) < HEADER_SIZE:
            problems.append(f"message header cut short: {len(rest)} bytes of 8")
        else:
            size = int.from_bytes(rest[4:8], "little")
            if size < HEADER_SIZE:
                problems.append(f"message_size={size} below the 8-byte header")
            else:
                problems.append(f"message_size={size} but {len(rest)} bytes follow")
    state = NONE if not protocol.needs_opening(frame) else ACTIVE
    last = len(messages) - 1 if answered is None else answered
    for n, message in enumerate(messages[: last + 1], start=1):
        where = f"message {n} ({message.name}): " if len(messages) > 1 else ""
        found, state = _check_message(message, state)
        # An earlier message's own faults count when the session waited for its (good) answer
        # before sending on; otherwise it went out with the rest, and its answer is not judged.
        if n - 1 == last or answered is None or _holds_back(message):
            problems += [where + p for p in found]
        else:
            problems += [where + p for p in found if _is_state_problem(p)]
    return problems


def _holds_back(message: Message) -> bool:
    """True for messages the session sends alone, waiting for their answer before the rest."""
    return message.kind in (HEL, OPN) or (message.kind == MSG and message.service_id in STATEFUL)


def _is_state_problem(problem: str) -> bool:
    return any(words in problem for words in ("before CreateSession", "before ActivateSession", "after CloseSession",
                                              "before OPN", "before HEL"))


def _check_message(message: Message, state: int) -> tuple[list[str], int]:
    """Problems of one message in connection state `state`, and the state after it."""
    problems: list[str] = []
    name = message.name
    for n, chunk in enumerate(message.chunks, start=1):
        at = f"chunk {n}: " if len(message.chunks) > 1 else ""
        if chunk.kind not in MESSAGE_TYPES:
            problems.append(f"{at}message_type={chunk.raw[:3].hex()} is not a defined message type")
            return problems, state
        if chunk.chunk_type not in CHUNK_TYPES:
            problems.append(f"{at}chunk_type=0x{chunk.chunk_type:02x} is not F, C or A")
        elif chunk.kind not in (MSG, CLO) and chunk.chunk_type != FINAL:
            problems.append(f"{at}chunk_type={chr(chunk.chunk_type)}: {name} is always one final chunk")
        if chunk.size > SEND_BUFFER:
            problems.append(f"{at}message_size={chunk.size} above the negotiated buffer size {SEND_BUFFER}")
        if chunk.problem is not None:
            problems.append(at + chunk.problem)
    if any(c.problem for c in message.chunks):
        return problems, state
    kind = message.kind
    if kind in (ACK, ERR, RHE):
        problems.append(f"message_type={name} is sent by servers, never by a client")
        return problems, state
    if kind == HEL:
        if state != NONE:
            problems.append("message_type=HEL after the connection is open (HEL is the first message only)")
        problems += _check_hello(message.chunks[0].raw)
        return problems, HELLO if state == NONE else state
    if state == NONE:
        problems.append(f"message_type={name} before HEL")
    if kind == OPN:
        found, state = _check_open(message, state)
        return problems + found, state
    if state in (NONE, HELLO):
        problems.append(f"message_type={name} before OPN: no secure channel is open")
    first = message.chunks[0]
    if first.channel_id:
        problems.append(f"secure_channel_id={_signed(first.channel_id)} away from the channel's id")
    if first.token_id:
        problems.append(f"token_id={_signed(first.token_id)} away from the current token id")
    for n, chunk in enumerate(message.chunks, start=1):
        if chunk.sequence_number:
            problems.append(f"sequence_number={_signed(chunk.sequence_number)} away from the next one (chunk {n})")
        if chunk.request_id != first.request_id:
            problems.append(f"request_id of chunk {n} differs from chunk 1 by {_signed(chunk.request_id - first.request_id)}")
    if not message.complete:
        problems.append(f"message of {len(message.chunks)} chunk(s) has no final chunk")
        return problems, state
    if message.aborted:
        problems.append("chunk_type=A aborts the message: it must not be answered")
        return problems, state
    service, values, found = message.decode()
    problems += [p for p in found if "nesting depth=" not in p]  # deeper nesting may be supported
    if service is None or not service.endswith("Request"):
        if service is not None:
            problems.append(f"type_id={service} is not a request")
        return problems, state
    code = next(k for k, v in ub.SERVICES.items() if v == service)
    if kind == CLO and code != 452:
        problems.append(f"type_id={code} in a CLO is not CloseSecureChannelRequest")
    if kind == MSG and code in (446, 452):
        problems.append(f"type_id={code}: {service} belongs in {'an OPN' if code == 446 else 'a CLO'} message")
    if code not in ub.SESSIONLESS:
        if state < CREATED:
            problems.append(f"{service} before CreateSession: no session")
        elif state == CREATED and code not in (467, 473):
            problems.append(f"{service} before ActivateSession")
        elif state == CLOSED:
            problems.append(f"{service} after CloseSession")
    elif code == 461 and state < CHANNEL:
        problems.append("CreateSessionRequest before OPN: no secure channel")
    if values is not None:
        problems += _check_service(service, code, values)
    if code == 461 and state in (CHANNEL, ACTIVE, CREATED, CLOSED):
        state = CREATED
    elif code == 467 and state == CREATED:
        state = ACTIVE
    elif code == 473 and state in (CREATED, ACTIVE):
        state = CLOSED
    elif kind == CLO:
        state = HELLO
    return problems, state


def _check_hello(raw: bytes) -> list[str]:
    reader = ub.Reader(raw, HEADER_SIZE)
    try:
        fields = [reader.fixed("UInt32", n) for n in ("protocol_version", "receive_buffer_size", "send_buffer_size",
                                                      "max_message_size", "max_chunk_count")]
        url = reader.string("endpoint_url")
    except DecodeError as exc:
        return [str(exc)]
    problems = []
    for name, value in (("receive_buffer_size", fields[1]), ("send_buffer_size", fields[2])):
        if value < MIN_BUFFER:
            problems.append(f"{name}={value} below minimum {MIN_BUFFER}")
    if url is not None and len(url) >= MAX_URL:
        problems.append(f"endpoint_url length={len(url)} above maximum {MAX_URL - 1}")
    if reader.remaining:
        problems.append(f"HEL has {reader.remaining} bytes after endpoint_url")
    return problems


def _check_open(message: Message, state: int) -> tuple[list[str], int]:
    chunk = message.chunks[0]
    problems: list[str] = []
    if chunk.policy_uri != POLICY_NONE:
        shown = len(chunk.policy_uri) if chunk.policy_uri is not None else -1
        problems.append(f"security_policy_uri length={shown} is not SecurityPolicy None (unsigned OPN)")
    if chunk.sequence_number:
        problems.append(f"sequence_number={_signed(chunk.sequence_number)} away from the next one")
    service, values, found = message.decode()
    problems += found
    if service != "OpenSecureChannelRequest":
        if service is not None:
            problems.append(f"type_id={service} in an OPN is not OpenSecureChannelRequest")
        return problems, state
    if values is None:
        return problems, state
    request_type, mode = values["request_type"], values["security_mode"]
    if mode != SECURITY_NONE:
        problems.append(f"security_mode={mode} but the security policy is None (mode 1 only)")
    if request_type == RENEW:
        if state in (NONE, HELLO):
            problems.append("request_type=1 Renew before a secure channel is open")
        if chunk.channel_id:
            problems.append(f"secure_channel_id={_signed(chunk.channel_id)} away from the channel's id")
    elif request_type == ISSUE and chunk.channel_id and state in (NONE, HELLO):
        problems.append(f"secure_channel_id={chunk.channel_id} in an OPN Issue for a new channel (must be 0)")
    if request_type == ISSUE and state in (NONE, HELLO):
        state = CHANNEL
    return problems, state


def _check_service(service: str, code: int, values: Mapping[str, Any]) -> list[str]:
    problems: list[str] = []
    header = values["request_header"]
    token: NodeId = header["authentication_token"]
    if code not in ub.SESSIONLESS and not (token.encoding == 0 and token.identifier == 0):
        problems.append(f"authentication_token encoding={token.encoding} is not the session's token")
    operations = _OPERATIONS.get(service)
    if operations is not None:
        items = values.get(operations)
        if not items:
            problems.append(f"{operations} length={-1 if items is None else 0}: nothing to do")
    if service == "ReadRequest":
        max_age = values["max_age"]
        if max_age < 0 or max_age != max_age:
            problems.append(f"max_age={max_age} below 0")
    for item in _items(values):
        attribute = item.get("attribute_id")
        if attribute is not None and attribute not in ub.ATTRIBUTES:
            problems.append(f"attribute_id={attribute} is not a defined attribute")
        if "value" in item and isinstance(item["value"], dict) and "value" not in item["value"]:
            problems.append("value mask=0 writes no value")
    if service in ("CreateMonitoredItemsRequest", "DeleteSubscriptionsRequest"):
        ids = [values["subscription_id"]] if service == "CreateMonitoredItemsRequest" else values.get("subscription_ids") or []
        for sid in ids:
            if sid:
                problems.append(f"subscription_id={_signed(sid)} away from the subscription this connection created")
        for item in values.get("items_to_create") or []:
            flt = item["requested_parameters"]["filter"]
            if flt["encoding"] and flt["type_id"].identifier not in ub.MONITORING_FILTERS:
                problems.append(f"filter type_id={flt['type_id']} is not a monitoring filter")
    if service == "ActivateSessionRequest":
        token_object = values["user_identity_token"]
        type_id = token_object["type_id"]
        if token_object["encoding"] or not type_id.is_null:
            if type_id.identifier not in ub.IDENTITY_TOKENS or type_id.namespace:
                problems.append(f"user_identity_token type_id={type_id} is not an identity token")
            elif token_object.get("body") is not None and token_object["body"].get("policy_id") != PLACEHOLDER_POLICY:
                policy = token_object["body"].get("policy_id")
                problems.append(f"policy_id length={-1 if policy is None else len(policy)} is not the anonymous policy the server offers")
            elif type_id.identifier != 321:
                problems.append(f"user_identity_token type_id={type_id} is not anonymous")
            if token_object["encoding"] == 2:
                problems.append("user_identity_token encoding=2 (XML) in a binary request")
    if service == "TranslateBrowsePathsToNodeIdsRequest":
        for path in values.get("browse_paths") or []:
            elements = path["relative_path"]["elements"]
            if not elements:
                problems.append("relative_path elements length=0: nothing to do")
            for element in elements or []:
                if not element["target_name"][1]:
                    problems.append("target_name length=0 is not a browse name")
    return problems


def _items(values: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    out: list[Mapping[str, Any]] = []
    for key in ("nodes_to_read", "nodes_to_write"):
        out += values.get(key) or []
    for item in values.get("items_to_create") or []:
        out.append(item["item_to_monitor"])
    return out


# -- reply classification -----------------------------------------------------------------------------


def _last_asked(request: bytes) -> tuple[Message | None, dict[str, Any] | None]:
    messages, _ = parse_messages(request)
    for message in reversed(messages):
        if message.expects_reply:
            values = message.decode()[1] if message.kind in SECURE else None
            return message, values
    return None, None


def _classify(request: bytes, reply: bytes) -> ReplyVerdict:
    messages, rest = parse_messages(reply)
    if not messages:
        return ReplyVerdict(ReplyKind.MALFORMED, f"{len(reply)} bytes that do not frame as an OPC UA message")
    if rest or len(messages) != 1:
        return ReplyVerdict(ReplyKind.MALFORMED, f"{len(messages)} message(s) and {len(rest)} stray bytes in one reply")
    message = messages[0]
    asked, asked_values = _last_asked(request)
    kind = message.kind
    if kind == ERR:
        reader = ub.Reader(message.chunks[0].raw, HEADER_SIZE)
        try:
            code = reader.fixed("StatusCode", "error")
            reason = reader.string("reason") or b""
        except DecodeError as exc:
            return ReplyVerdict(ReplyKind.MALFORMED, f"ERR: {exc}")
        if message.chunks[0].chunk_type != FINAL or reader.remaining:
            return ReplyVerdict(ReplyKind.MALFORMED, f"ERR {ub.status_name(code)} with a bad chunk type or trailing bytes")
        shown = reason.decode("utf-8", "replace")[:80]
        return ReplyVerdict(ReplyKind.EXCEPTION, f"ERR {ub.status_name(code)}" + (f": {shown}" if shown else ""))
    if kind == ACK:
        return _classify_ack(message, asked)
    if kind not in (OPN, MSG):
        return ReplyVerdict(ReplyKind.MALFORMED, f"message_type={message.name} sent by the server")
    for chunk in message.chunks:
        if chunk.problem is not None:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{message.name}: {chunk.problem}")
        if chunk.chunk_type not in CHUNK_TYPES:
            return ReplyVerdict(ReplyKind.MALFORMED, f"{message.name} chunk_type=0x{chunk.chunk_type:02x}")
    if not message.complete:
        return ReplyVerdict(ReplyKind.MALFORMED, f"answer of {len(message.chunks)} chunk(s) without a final chunk")
    if message.aborted:
        reader = ub.Reader(message.chunks[-1].body)
        try:
            code = reader.fixed("StatusCode", "error")
        except DecodeError:
            return ReplyVerdict(ReplyKind.MALFORMED, "abort chunk without an error")
        return ReplyVerdict(ReplyKind.EXCEPTION, f"answer aborted: {ub.status_name(code)}")
    name, values, problems = message.decode()
    if values is None:
        return ReplyVerdict(ReplyKind.MALFORMED, f"{name or message.name}: {problems[0]}")
    result = values["response_header"]["service_result"]
    if name == "ServiceFault" or ub.is_bad(result):
        return ReplyVerdict(ReplyKind.EXCEPTION, f"{name} {ub.status_name(result)}")
    asked_service = asked.service_id if asked is not None and asked.kind in SECURE else None
    if asked is not None and asked.kind == OPN:
        asked_service = 446  # the message type says what it is, whatever its body's type id
    expected = ub.SERVICES.get(ub.RESPONSE_OF.get(asked_service, -1)) if asked_service is not None else None
    if asked is not None and name != expected:
        wanted = expected or f"a ServiceFault (the request's type id {asked.service()[0]} is no service)"
        return ReplyVerdict(ReplyKind.MALFORMED, f"{name} does not answer the request: expected {wanted}")
    if kind == OPN and name != "OpenSecureChannelResponse":
        return ReplyVerdict(ReplyKind.MALFORMED, f"{name} in an OPN message")
    if problems:
        return ReplyVerdict(ReplyKind.MALFORMED, f"{name}: {problems[0]}")
    results = values.get("results")
    if asked_values is not None and name is not None:
        asked_items = asked_values.get(_OPERATIONS.get((expected or "").replace("Response", "Request"), ""))
        if isinstance(asked_items, list) and isinstance(results, list) and len(results) != len(asked_items):
            return ReplyVerdict(ReplyKind.MALFORMED, f"{name} has {len(results)} results for {len(asked_items)} operations")
    for n, code in enumerate(ub.operation_statuses(name or "", values), start=1):
        if ub.is_bad(code):
            return ReplyVerdict(ReplyKind.EXCEPTION, f"{name} operation {n}: {ub.status_name(code)}")
    detail = name or message.name
    if ub.is_bad(result) is False and result:
        detail += f" {ub.status_name(result)}"
    return ReplyVerdict(ReplyKind.NORMAL, detail)


def _classify_ack(message: Message, asked: Message | None) -> ReplyVerdict:
    raw = message.chunks[0].raw
    if asked is None or asked.kind != HEL:
        return ReplyVerdict(ReplyKind.MALFORMED, f"ACK answers {asked.name if asked is not None else 'no HEL'}")
    if len(raw) != 28 or message.chunks[0].chunk_type != FINAL:
        return ReplyVerdict(ReplyKind.MALFORMED, f"ACK of {len(raw)} bytes (28 expected, chunk type F)")
    version, receive, send, max_message, max_chunks = struct.unpack_from("<5I", raw, 8)
    hel = asked.chunks[0].raw
    hel_receive, hel_send = struct.unpack_from("<II", hel, 12) if len(hel) >= 20 else (RECEIVE_BUFFER, SEND_BUFFER)
    if receive < MIN_BUFFER or send < MIN_BUFFER:
        return ReplyVerdict(ReplyKind.MALFORMED, f"ACK buffer sizes {receive}/{send} below {MIN_BUFFER}")
    if receive > hel_send or send > hel_receive:
        return ReplyVerdict(ReplyKind.MALFORMED, f"ACK buffer sizes {receive}/{send} above the HEL's {hel_send}/{hel_receive}")
    return ReplyVerdict(ReplyKind.NORMAL, f"ACK version {version} buffers {receive}/{send} max message {max_message} chunks {max_chunks}")


# -- structural faults --------------------------------------------------------------------------------

VALID = " (valid)"
"""Marks faults that are valid requests in an unusual form: a conforming server answers them normally."""
OTHER_NODE = " (another node)"
"""Marks well-formed requests that name a node, view or continuation point the server may not have:
only the server knows, so `check_request` does not report them (its answer names the status)."""
LIMIT = " (above a typical server limit)"
"""Marks requests that are valid unless the server's own limits are lower (MaxChunkCount...)."""
ARRAY_FIELDS = frozenset(name for fields in ub.STRUCTURES.values() for name, kind in fields if kind.endswith("[]"))
HELPER_PREFIXES = ("hel_", "opn_", "cs_", "as_", "sub_", "br_")


def _resized(chunk: bytes | bytearray) -> bytes:
    out = bytearray(chunk)
    out[4:8] = len(out).to_bytes(4, "little")
    return bytes(out)


def _chunked(raw: bytes, parts: int, last: int = FINAL, request_offsets: Sequence[int] = (),
             sequence_offsets: Sequence[int] = ()) -> bytes:
    """A single-chunk MSG split into `parts` chunks: C chunks, then `last` (F or A)."""
    head, body = raw[:24], raw[24:]
    step = max(1, -(-len(body) // parts))
    pieces = [body[i:i + step] for i in range(0, len(body), step)] or [b""]
    out = bytearray()
    for n, piece in enumerate(pieces):
        chunk = bytearray(head) + piece
        chunk[3] = last if n == len(pieces) - 1 else INTERMEDIATE
        if n < len(sequence_offsets):
            chunk[16:20] = (sequence_offsets[n] & 0xFFFFFFFF).to_bytes(4, "little")
        if n < len(request_offsets):
            chunk[20:24] = (request_offsets[n] & 0xFFFFFFFF).to_bytes(4, "little")
        if last == ABORT and n == len(pieces) - 1:
            chunk = chunk[:24] + (0x800B0000).to_bytes(4, "little") + (0).to_bytes(4, "little")  # error, empty reason
        out += _resized(chunk)
    return bytes(out)


def _nested_variant(depth: int) -> bytes:
    """A Variant holding an array of one Variant, `depth` times, around an Int32."""
    return b"\x98\x01\x00\x00\x00" * depth + b"\x06\x2a\x00\x00\x00"


def _node_encodings(nid: NodeId) -> list[tuple[str, bytes, bool]]:
    """(what, encoding, same node?) for every other way to write `nid`."""
    out: list[tuple[str, bytes, bool]] = []
    ident = nid.identifier
    if nid.kind == "numeric":
        assert isinstance(ident, int)
        ns = nid.namespace
        if ns == 0 and ident <= 0xFF:
            out.append(("two-byte", bytes([0, ident]), True))
        if ns <= 0xFF and ident <= 0xFFFF:
            out.append(("four-byte", bytes([1, ns]) + ident.to_bytes(2, "little"), True))
        out.append(("numeric", b"\x02" + ns.to_bytes(2, "little") + ident.to_bytes(4, "little"), True))
        text = str(ident).encode()
    else:
        text = bytes(ident)  # type: ignore[arg-type]
    ns2 = nid.namespace.to_bytes(2, "little")
    out += [
        ("string", b"\x03" + ns2 + len(text).to_bytes(4, "little") + text, nid.kind == "string"),
        ("guid", b"\x04" + ns2 + text.ljust(16, b"\0")[:16], False),
        ("bytestring", b"\x05" + ns2 + len(text).to_bytes(4, "little") + text, nid.kind == "opaque"),
        ("invalid encoding 0x06", b"\x06" + ns2 + b"\x01\x00\x00\x00", False),
        ("ExpandedNodeId flag 0x80 in a NodeId", bytes([0x80 | 2]) + ns2 + b"\x01\x00\x00\x00", False),
    ]
    return [item for item in out if item[1] != ub.encode_node_id(nid) or not item[2]]


def _faults(protocol: OPCUA, template: Template) -> list[tuple[str, bytes]]:
    frame = template.encode()
    messages, _ = parse_messages(frame)
    main = messages[-1].raw
    prefix = frame[: len(frame) - len(main)]
    spans = {s.field.name: s for s in template.message.spans()}
    kind = messages[-1].kind
    code = template.code

    def with_main(raw: bytes) -> bytes:
        return prefix + raw

    def splice(first: str, last: str, new: bytes) -> bytes:
        """The frame with fields first..last of the main message replaced by `new`, size fixed."""
        start, end = spans[first].offset, spans[last].offset + spans[last].size
        return with_main(_resized(frame[len(prefix):start] + new + frame[end:]))

    def last_field(name: str) -> str:
        names = [n for n in spans if n == name or n.startswith(name + "_")]
        return names[-1]

    out: list[tuple[str, bytes]] = []
    size = len(main)
    out += [
        ("message size one short of the chunk", template.encode(message_size=size - 1)),
        ("message size one longer than the chunk", template.encode(message_size=size + 1)),
        ("message size 7, below the 8-byte header", template.encode(message_size=7)),
        ("message size 0x7FFFFFFF", template.encode(message_size=0x7FFFFFFF)),
        ("chunk type 'X'", template.encode(chunk_type=ord("X"))),
        ("message type 'MSX'", template.encode(message_type=_tag("MSX"))),
        ("message cut by one byte, size adjusted", with_main(_resized(main[:-1]))),
        ("one extra byte after the message, size adjusted", with_main(_resized(main + b"\x00"))),
    ]
    if kind == HEL:
        out += _hello_faults(protocol, template)
        return out
    session_service = code is not None and code not in ub.SESSIONLESS and kind == MSG
    if kind in SECURE:
        out += [
            ("secure channel id one above the channel's", template.encode(secure_channel_id=1)),
            ("secure channel id one below the channel's", template.encode(secure_channel_id=0xFFFFFFFF)),
            ("sequence number repeated (the last one again)", template.encode(sequence_number=0xFFFFFFFF)),
            ("sequence number one ahead (one skipped)", template.encode(sequence_number=1)),
        ]
    if kind in (MSG, CLO):
        out.append(("token id not the channel's current token", template.encode(token_id=TOKEN_FAULT)))
    if session_service and protocol.needs_opening(frame):
        out += [
            ("request before ActivateSession (HEL, OPN, CreateSession, then the request)", protocol.preamble_bytes("as") + main),
            ("request before CreateSession (HEL, OPN, then the request)", protocol.preamble_bytes("cs") + main),
            ("request after CloseSession", protocol.preamble_bytes("end") + protocol.message_bytes("close_session", -1) + main),
        ]
    if kind == MSG and protocol.needs_opening(frame):
        out.append(("MSG before OPN (HEL, then the request)", protocol.preamble_bytes("opn") + main))
    if kind == MSG:
        out += [
            ("message in two chunks, C then F" + VALID, with_main(_chunked(main, 2))),
            ("message in five chunks" + VALID, with_main(_chunked(main, 5))),
            ("message in two chunks, C then A (aborted)", with_main(_chunked(main, 2, ABORT))),
            ("C chunk alone, no final chunk", template.encode(chunk_type=INTERMEDIATE)),
            ("second chunk with another request id", with_main(_chunked(main, 2, request_offsets=(0, 1)))),
            ("second chunk skips a sequence number", with_main(_chunked(main, 2, sequence_offsets=(0, 1)))),
            ("abort chunk alone", template.encode(chunk_type=ABORT)),
        ]
    if kind in SECURE:
        out += [
            ("type id of no service (i=9999)", template.encode(type_id=9999)),
            ("type id of the service's response", template.encode(type_id=(code or 0) + 3)),
            ("type id in numeric encoding" + VALID,
             splice("type_id_encoding", "type_id", b"\x02\x00\x00" + (code or 0).to_bytes(4, "little"))),
            ("type id as a string NodeId", splice("type_id_encoding", "type_id", b"\x03\x00\x00\x03\x00\x00\x00" + str(code).encode())),
            ("audit entry id length -2", template.encode(audit_entry_id_length=0xFFFFFFFE)),
            ("audit entry id length 0x7FFFFFFF", template.encode(audit_entry_id_length=0x7FFFFFFF)),
            ("additional header with an extension object of unknown type" + VALID,
             splice("additional_header_type_encoding", "additional_header_encoding",
                    b"\x01\x00\x0f\x27\x01\x04\x00\x00\x00\xde\xad\xbe\xef")),
        ]
    if session_service:
        token = ("authentication_token_encoding", "authentication_token_id")
        out += [
            ("authentication token of no session (i=3735928559)", splice(*token, b"\x02\x00\x00\xef\xbe\xad\xde")),
            ("null authentication token in four-byte encoding", splice(*token, b"\x01\x00\x00\x00")),
            ("authentication token as an empty opaque NodeId", splice(*token, b"\x05\x00\x00\x00\x00\x00\x00")),
        ]
    out += _service_faults(protocol, template, splice, spans)
    strings = [n for n in spans if n.endswith("_length") and not n.startswith(HELPER_PREFIXES)
               and n not in ("audit_entry_id_length", "user_identity_token_length")]
    for name in strings[:4]:
        present = spans[name[: -len("_length")]].size
        out += [
            (f"{name[:-7]} length -2", template.encode(**{name: 0xFFFFFFFE})),
            (f"{name[:-7]} length 0x7FFFFFFF", template.encode(**{name: 0x7FFFFFFF})),
            (f"{name[:-7]} length one longer than its bytes", template.encode(**{name: present + 1})),
        ]
    for name in [n for n in spans if n.endswith("_count") and n[:-6] in ARRAY_FIELDS]:
        have = int.from_bytes(frame[spans[name].offset:spans[name].offset + 4], "little")
        out += [
            (f"{name} -2", template.encode(**{name: 0xFFFFFFFE})),
            (f"{name} 0x7FFFFFFF", template.encode(**{name: 0x7FFFFFFF})),
            (f"{name} says {have + 1}, {have} follow", template.encode(**{name: have + 1})),
        ]
        if have:
            out.append((f"{name} 0, the elements still present", template.encode(**{name: 0})))
    for name in [n[: -len("_encoding")] for n in spans if n.endswith("_encoding") and isinstance(spans[n].field, UInt)
                 and spans[n].field.enum is NODE_ENCODINGS and not n.startswith(HELPER_PREFIXES)
                 and n not in ("type_id_encoding", "authentication_token_encoding")]:
        nid = _node_of(frame, spans[f"{name}_encoding"].offset)
        if nid is None:
            continue
        for what, encoded, same in _node_encodings(nid):
            out.append((f"{name} as {what}{VALID if same else (OTHER_NODE if 'invalid' not in what and 'flag' not in what and not name.endswith('_type') else '')}", splice(f"{name}_encoding", last_field(name), encoded)))
    if template is protocol.templates()[0]:
        out += _limit_faults(protocol, template, main, with_main)
    return out


def _node_of(frame: bytes, offset: int) -> NodeId | None:
    try:
        return ub.Reader(frame, offset).node_id("node")
    except DecodeError:
        return None


def _service_faults(protocol: OPCUA, template: Template, splice: Callable[[str, str, bytes], bytes],
                    spans: Mapping[str, Any]) -> list[tuple[str, bytes]]:
    name = template.name
    out: list[tuple[str, bytes]] = []
    if name in ("open_secure_channel", "renew_secure_channel"):
        out += [
            ("security mode Sign under SecurityPolicy None", template.encode(security_mode=2)),
            ("security mode SignAndEncrypt under SecurityPolicy None", template.encode(security_mode=3)),
            ("security mode Invalid (0)", template.encode(security_mode=0)),
            ("request type 2 (neither Issue nor Renew)", template.encode(request_type=2)),
            ("security policy Basic256Sha256 in an unsigned OPN",
             template.encode(security_policy_uri=b"http://opcfoundation.org/UA/SecurityPolicy#Basic256Sha256")),
            ("security policy uri empty", template.encode(security_policy_uri=b"")),
            ("OPN in two chunks, C then F", _opn_in_two(template)),
        ]
        if name == "renew_secure_channel":
            out.append(("OPN Issue as the first message of a connection (no HEL)", template.encode(request_type=ISSUE)))
        else:
            out.append(("OPN Renew on a fresh channel", template.encode(request_type=RENEW)))
    if name == "write":
        out += [
            ("value of built-in type 26 (undefined)", template.encode(value_type=26)),
            ("value of type 0 (a null Variant)", template.encode(value_type=0)),
            ("DataValue with reserved mask bits", template.encode(value_mask=0xC1)),
            ("DataValue without a value (mask 0)", splice("value_mask", "value", b"\x00")),
            ("Double array of length 0x7FFFFFFF, one element present",
             splice("value_type", "value", b"\x8b\xff\xff\xff\x7f" + b"\x00" * 8)),
            ("Double array of 2 with dimensions saying 3",
             splice("value_type", "value", b"\xcb\x02\x00\x00\x00" + b"\x00" * 16 + b"\x01\x00\x00\x00\x03\x00\x00\x00")),
            ("Variant nested 150 deep" + LIMIT, splice("value_type", "value", _nested_variant(150))),
            ("Variant nested 3000 deep" + LIMIT, splice("value_type", "value", _nested_variant(3000))),
            ("scalar Variant holding a Variant", splice("value_type", "value", b"\x18\x06\x2a\x00\x00\x00")),
            ("value Variant: array of Null elements, length 0x7FFFFFFF", splice("value_type", "value", b"\x80\xff\xff\xff\x7f")),
        ]
    if name == "call":
        out += [
            ("argument of built-in type 26 (undefined)", template.encode(argument_type=26)),
            ("argument Variant nested 150 deep" + LIMIT, splice("argument_type", "argument", _nested_variant(150))),
            ("argument Variant nested 3000 deep" + LIMIT, splice("argument_type", "argument", _nested_variant(3000))),
            ("argument String of length -2", splice("argument_type", "argument", b"\x0c\xfe\xff\xff\xff")),
            ("argument Variant: array of Null elements, length 0x7FFFFFFF", splice("argument_type", "argument", b"\x80\xff\xff\xff\x7f")),
            ("argument ExtensionObject of unknown type with a short body",
             splice("argument_type", "argument", b"\x16\x01\x00\x0f\x27\x01\x10\x00\x00\x00\x00")),
        ]
    if name == "activate_session":
        length = template.encode()[spans["user_identity_token_length"].offset:][:4]
        out += [
            ("user identity token of unknown type (i=9999)", template.encode(user_identity_token_type_id=9999)),
            ("user identity token body length one longer than present",
             template.encode(user_identity_token_length=int.from_bytes(length, "little") + 1)),
            ("user identity token body length -2", template.encode(user_identity_token_length=0xFFFFFFFE)),
            ("user identity token XML-encoded", template.encode(user_identity_token_encoding=2)),
            ("user identity token with a policy id the server does not offer", template.encode(policy_id=b"nobody")),
            ("UserName token type with an anonymous body", template.encode(user_identity_token_type_id=324)),
        ]
    if name in ("create_monitored_items", "delete_subscriptions"):
        out += [
            ("subscription id of the subscription created before this connection's", template.encode(subscription_id=0xFFFFFFFF)),
            ("subscription id one above this connection's", template.encode(subscription_id=1)),
        ]
    if name == "create_monitored_items":
        out += [
            ("monitoring filter of unknown type", splice("filter_type_encoding", "filter_encoding", b"\x01\x00\x0f\x27\x01\x00\x00\x00\x00")),
            ("monitoring mode 3 (undefined)", template.encode(monitoring_mode=3)),
            ("attribute id 0 (undefined)", template.encode(attribute_id=0)),
        ]
    if name == "read":
        out += [
            ("attribute id 0 (undefined)", template.encode(attribute_id=0)),
            ("attribute id 28 (undefined)", template.encode(attribute_id=28)),
            ("timestamps to return 4 (undefined)", template.encode(timestamps_to_return=4)),
            ("max age -1.0", template.encode(max_age=_double(-1.0))),
            ("max age NaN", template.encode(max_age=0x7FF8000000000000)),
            ("index range '9999:0' on a scalar" + OTHER_NODE, template.encode(index_range=b"9999:0")),
            ("data encoding of no encoding" + OTHER_NODE, template.encode(data_encoding_name=b"Default XYZ")),
        ]
    if name == "browse":
        out += [
            ("browse direction 3 (Invalid)", template.encode(browse_direction=3)),
            ("reference type id of no reference type (i=9999)" + OTHER_NODE, splice("reference_type_id_encoding", "reference_type_id_id", b"\x01\x00\x0f\x27")),
            ("view id of no view (i=9999)" + OTHER_NODE, splice("view_id_encoding", "view_id_id", b"\x01\x00\x0f\x27")),
        ]
    if name == "browse_next":
        out += [
            ("continuation point the server never issued" + OTHER_NODE, template.encode(continuation_point=b"\xde\xad\xbe\xef")),
            ("continuation point of 4096 bytes" + OTHER_NODE, template.encode(continuation_point=b"\x41" * 4096)),
        ]
    if name == "translate_browse_paths_to_node_ids":
        out += [
            ("relative path element with an empty target name", template.encode(e1_target_name_name=b"")),
            ("relative path of 0 elements", template.encode(elements_count=0)),
        ]
    return out


def _opn_in_two(template: Template) -> bytes:
    frame = template.encode()
    messages, _ = parse_messages(frame)
    main = messages[-1]
    raw = main.raw
    at = main.chunks[0].body_at
    prefix = frame[: len(frame) - len(raw)]
    half = at + (len(raw) - at) // 2
    first = bytearray(raw[:half])
    first[3] = INTERMEDIATE
    second = raw[:at] + raw[half:]
    return prefix + _resized(first) + _resized(second)


def _hello_faults(protocol: OPCUA, template: Template) -> list[tuple[str, bytes]]:
    frame = template.encode()
    get_endpoints = protocol.message_bytes("get_endpoints", -1)
    ack = _resized(b"ACKF\0\0\0\0" + struct.pack("<5I", 0, RECEIVE_BUFFER, SEND_BUFFER, 0, 0))
    err = _resized(b"ERRF\0\0\0\0" + struct.pack("<I", 0x80020000) + struct.pack("<i", -1))
    rhe = _resized(b"RHEF\0\0\0\0" + struct.pack("<i", 4) + b"urn:" + struct.pack("<i", len(protocol.endpoint_url)) + protocol.endpoint_url)
    return [
        ("receive buffer size 8191, below the 8192 minimum", template.encode(receive_buffer_size=MIN_BUFFER - 1)),
        ("send buffer size 8191, below the 8192 minimum", template.encode(send_buffer_size=MIN_BUFFER - 1)),
        ("receive and send buffer sizes 0", template.encode(receive_buffer_size=0, send_buffer_size=0)),
        ("endpoint url of 4096 bytes", template.encode(endpoint_url=protocol.endpoint_url + b"/" * (MAX_URL - len(protocol.endpoint_url)))),
        ("endpoint url length -2", template.encode(endpoint_url_length=0xFFFFFFFE)),
        ("endpoint url length 0x7FFFFFFF", template.encode(endpoint_url_length=0x7FFFFFFF)),
        ("protocol version 0xFFFFFFFF" + VALID, template.encode(protocol_version=0xFFFFFFFF)),
        ("max chunk count 1 and max message size 8192" + VALID, template.encode(max_chunk_count=1, max_message_size=MIN_BUFFER)),
        ("HEL twice", frame + frame),
        ("HEL as a C chunk", template.encode(chunk_type=INTERMEDIATE)),
        ("ACK sent by the client", ack),
        ("ERR sent by the client", err),
        ("RHE (reverse hello) sent by the client", rhe),
        ("OPN before HEL", protocol.message_bytes("open_secure_channel", -1)),
        ("MSG before OPN (HEL, then GetEndpoints)", frame + get_endpoints),
        ("unknown message type 'XYZ' as the first message", _resized(b"XYZF\0\0\0\0" + b"\0" * 8)),
    ]


def _limit_faults(protocol: OPCUA, template: Template, main: bytes, with_main: Callable[[bytes], bytes]) -> list[tuple[str, bytes]]:
    """Sizes above the negotiated limits and abusive chunking: emitted once, with the first template."""
    big = template.encode(audit_entry_id=b"A" * (SEND_BUFFER + 1 - len(main)))
    return [
        ("chunk of 65536 bytes, above the negotiated buffer size 65535", big),
        ("200 C chunks and no final chunk", with_main(_open_chunks(main, 200))),
        ("2000 chunks of a few bytes, then the final chunk" + LIMIT, with_main(_chunked(main, 2000))),
    ]


def _open_chunks(main: bytes, count_: int) -> bytes:
    """`count_` C chunks carrying the start of the message, and no final chunk."""
    head, body = main[:24], main[24:]
    out = bytearray()
    for n in range(count_):
        chunk = bytearray(head) + body[n % len(body):n % len(body) + 1]
        chunk[3] = INTERMEDIATE
        out += _resized(chunk)
    return bytes(out)
