"""The contract between a sans-IO protocol module and the protocol-agnostic engine.

A protocol module knows how to build valid requests (templates), frame and classify replies,
check a request against the specification, and keep per-connection session state (handshakes,
sequence numbers, automatic acknowledgements). It knows nothing about sockets, time or fuzzing:
the engine mutates the bytes it is given, the transport moves them, and this layer says what the
bytes mean.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar

from otfuzz.errors import DecodeError, OtfuzzError
from otfuzz.protocols.model import Checksum, Length, MessageType


class ReplyKind(str, Enum):
    """What the target did with one request, judged from the protocol alone."""

    NORMAL = "normal"  # a well-formed, positive answer
    EXCEPTION = "exception"  # a well-formed rejection (Modbus exception, IEC 104 negative confirm...)
    MALFORMED = "malformed"  # an answer that does not parse or does not match the request
    SPEC_VIOLATION = "spec-violation"  # answered normally although the specification says reject
    NO_REPLY = "no-reply"  # nothing came back within the timeout
    CLOSED = "closed"  # the target closed the connection (FIN) instead of answering
    RESET = "reset"  # the connection was reset (RST) or refused


@dataclass(frozen=True)
class ReplyVerdict:
    kind: ReplyKind
    detail: str = ""


@dataclass(frozen=True)
class Template:
    """A valid request: the seed every fuzzing strategy starts from.

    `values` fill `message`; `writes` marks requests that change the target's state and
    `disruptive` those that restart or reconfigure it: read-only mode excludes both.
    """

    name: str
    message: MessageType
    values: Mapping[str, Any] = field(default_factory=dict)
    writes: bool = False
    disruptive: bool = False
    # The protocol's own number for this operation (Modbus function code, OPC UA service type
    # id, CIP service...), which conduit policies may name instead of the template's name.
    code: int | None = None

    def encode(self, **overrides: Any) -> bytes:
        if overrides:
            return self.message.encode(dict(self.values), **overrides)
        # The valid encoding is built once: request labelling compares every frame with each
        # template's (30 encodings a frame cost 0.9 ms for DNP3), and every case starts from one.
        valid = self.__dict__.get("_valid")
        if valid is None:
            valid = self.message.encode(dict(self.values))
            object.__setattr__(self, "_valid", valid)
        return valid


@dataclass(frozen=True)
class OptionSpec:
    """A URL query option a protocol accepts (`dnp3://host:20000?outstation=1`), with its range."""

    default: str
    doc: str
    kind: type = str
    minimum: int | None = None
    maximum: int | None = None


def distinct_faults(valid: bytes, faults: Iterable[tuple[str, bytes]]) -> tuple[tuple[str, bytes], ...]:
    """Faults in order, each frame once, and never the valid frame itself (a fault that changed
    nothing would be counted as a structural case while testing nothing)."""
    seen = {valid}
    out: list[tuple[str, bytes]] = []
    for description, fault in faults:
        if fault not in seen:
            seen.add(fault)
            out.append((description, fault))
    return tuple(out)


class Session(ABC):
    """Per-connection protocol state, sans-IO.

    The engine calls `opening()` after connecting and sends each frame, waiting for a reply;
    `prepare()` on every outgoing frame (to patch sequence numbers and the like); `feed()` with
    every received chunk; `next_reply()` to take one complete application reply; and sends
    whatever `take_output()` returns (automatic acknowledgements, keep-alive answers).
    """

    # Set when the peer announced the end of the connection (an MQTT 5 DISCONNECT from the
    # broker): the connection carries no further case, even before the close itself arrives.
    ended: bool = False

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._output = bytearray()

    def opening(self) -> list[bytes]:
        return []

    def prepare(self, frame: bytes) -> bytes:
        return frame

    def feed(self, data: bytes) -> None:
        self._buffer += data

    @abstractmethod
    def next_reply(self) -> bytes | None:
        """Pop one complete reply frame from the buffer, or None when none is complete yet."""

    def take_output(self) -> bytes:
        out = bytes(self._output)
        self._output.clear()
        return out

    def leftover(self) -> bytes:
        """Bytes received that never formed a complete frame (shown in malformed-reply records)."""
        return bytes(self._buffer)

    # A sync request (`Protocol.sync_request`) goes right behind a frame the target may drop,
    # before that frame's answer; only the session can tell the two answers apart, by the
    # sequence numbers it gave them.

    def prepare_sync(self, frame: bytes) -> bytes | None:
        """Prepare the sync request to follow the frame just prepared, both answers awaited in
        order. None: not now (the answers could not be told apart); the default."""
        return None

    def is_sync_reply(self, reply: bytes) -> bool:
        """True when `reply` answers the sync request, not the frame before it."""
        return False


@dataclass(frozen=True)
class Probe:
    """A valid request with a known good answer, used to decide whether the target is alive."""

    frame: bytes
    description: str

    def __post_init__(self) -> None:
        if not self.frame:
            raise ValueError("a probe needs a request")


class Protocol(ABC):
    """One industrial protocol. Subclasses are registered in `otfuzz.protocols.registry`."""

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    default_port: ClassVar[int]
    transport: ClassVar[str] = "tcp"
    options_spec: ClassVar[Mapping[str, OptionSpec]] = {}
    # A target that serves one association at a time (DNP3): the health probe must run on the
    # fuzzing connection, never beside it, or it would displace the association it judges.
    single_association: ClassVar[bool] = False
    liveness_note: ClassVar[str] = "a valid request on its own connection answered correctly within the deadline"
    # What to check when the baseline probe gets no valid answer (named in the error message).
    probe_hint: ClassVar[str] = "check the target URL's options"
    # True for protocols whose URL carries a path (an OPC UA endpoint): others refuse one.
    accepts_path: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, str] | None = None, path: str = "") -> None:
        if path not in ("", "/") and not self.accepts_path:
            raise OtfuzzError(f"{self.name}: unexpected path '{path}' in the target URL ({self.name} URLs have none)")
        self.path = path
        self.options: dict[str, Any] = {}
        given = dict(options or {})
        for key in given:
            if key not in self.options_spec:
                known = ", ".join(sorted(self.options_spec)) or "none"
                raise OtfuzzError(f"{self.name}: unknown option '{key}' (known options: {known})")
        for key, spec in self.options_spec.items():
            raw = given.get(key, spec.default)
            try:
                value = self.options[key] = spec.kind(raw)
            except ValueError:
                raise OtfuzzError(f"{self.name}: option {key}={raw!r} is not a valid {spec.kind.__name__}") from None
            low = spec.minimum if spec.minimum is not None else value
            high = spec.maximum if spec.maximum is not None else value
            if not low <= value <= high:
                bounds = f"{low}..{high}" if spec.maximum is not None else f"at least {low}"
                raise OtfuzzError(f"{self.name}: option {key}={value} is outside {bounds}")

    def address(self, host: str, port: int) -> None:
        """Where the target is, for protocols whose messages name it (the endpoint URL in an
        OPC UA Hello); called once by `protocol_for`, before any template is read. Default: unused."""

    # -- what to send -------------------------------------------------------------------------

    @abstractmethod
    def templates(self) -> Sequence[Template]:
        """Every valid request this module can build."""

    @abstractmethod
    def message_types(self) -> Sequence[MessageType]:
        """Request layouts, for the boundary strategy (one per template is fine)."""

    def structural_faults(self, template: Template) -> Sequence[tuple[str, bytes]]:
        """Protocol-specific structural faults of a valid request, as (description, frame).

        Length fields, protocol ids, checksums, state-machine faults: what parsers most often get
        wrong. The engine asks once per template and keeps the list, so no caching is needed here.
        """
        return ()

    @abstractmethod
    def probe(self) -> Probe:
        """The health probe request."""

    @abstractmethod
    def probe_ok(self, reply: bytes) -> bool:
        """True when `reply` is the known good answer to `probe()`."""

    def probe_observer(self) -> Session | None:
        """A second session that must witness the probe's effect, or None (the default) when the
        probe's answer alone decides.

        Its `opening()` prepares it (an MQTT client subscribing to the probe topic). The health
        probe then passes only when the probe is answered (`probe_ok`) and this session, on its
        own connection, also receives unasked a message for which `probe_observed` is true, both
        within the probe's deadline. The observer only listens: the monitor waits on it with an
        exchange of no bytes, which the transport must send as nothing.
        """
        return None

    def probe_observed(self, message: bytes) -> bool:
        """True when `message`, received by the `probe_observer()` session, shows the probe took effect."""
        return False

    @abstractmethod
    def session(self) -> Session:
        """A new per-connection state machine."""

    # -- what came back -----------------------------------------------------------------------

    @abstractmethod
    def check_request(self, frame: bytes) -> list[str]:
        """Ways a request departs from the specification; empty when it is a valid request.

        A conforming target must reject (exception, no reply or close) any request for which
        this list is not empty; answering it normally is a spec violation.
        """

    def may_reject(self, frame: bytes) -> list[str]:
        """Ways a request lets a conforming target refuse it without requiring it to (MQTT's
        control characters in strings, or bytes after the packet answered, which the broker reads
        only after answering): a close, reset or silence after it is then no finding, and, unlike
        `check_request`, a normal answer is no violation either. Empty by default."""
        return []

    @abstractmethod
    def classify(self, request: bytes, reply: bytes) -> ReplyVerdict:
        """Judge one complete reply to `request` (NORMAL, EXCEPTION or MALFORMED, plus detail).

        The engine upgrades NORMAL to SPEC_VIOLATION when `check_request` found problems.
        """

    def frame_length(self, frame: bytes) -> int | None:
        """Length of the first frame in `frame` by the protocol's own framing (None: unknown).

        Bytes past it reach the target as the start of another request, so the engine starts
        the next case on a fresh connection rather than take a stray answer for its reply.
        """
        return None

    def repair(self, frame: bytes) -> bytes:
        """Make a mutated frame's framing consistent again (length fields, checksums).

        Mutation uses it for most cases so that the fault reaches the inner layers instead of
        being dropped by the framing check; unrepaired mutations still test the framing.
        """
        return frame

    def needs_opening(self, frame: bytes) -> bool:
        """False for a frame that must go out on a fresh connection without `Session.opening()`:
        it tests the state before the handshake (an IEC 104 I-frame before STARTDT). The engine
        should not reuse that connection for another case afterwards."""
        return True

    def is_write(self, frame: bytes) -> bool:
        """True when sending `frame` could change state: read-only mode never sends it."""
        return False

    def describe(self, frame: bytes) -> str:
        """A short human description of a request, for reports."""
        return frame[:16].hex()

    def identify(self) -> list[bytes]:
        """Requests that read the device's identity (vendor, product, version), if any."""
        return []

    def parse_identity(self, reply: bytes) -> dict[str, str]:
        return {}

    def expects_reply(self, frame: bytes) -> bool:
        """False for requests the specification says are never answered (broadcasts)."""
        return True

    def loopback_only(self, frame: bytes) -> str | None:
        """Why `frame` may only ever be sent to a loopback address, or None.

        For requests a device would relay beyond itself: a BACnet broadcast or routed message
        reaches every device on the networks behind the target, none of which is in scope. The
        engine never generates or sends such a frame to any other address."""
        return None

    def keeps_connection(self, request: bytes, reply: bytes) -> bool:
        """False when the target may close the connection after sending `reply` (an EtherNet/IP
        target may end the session after an encapsulation error), or, with an empty `reply`,
        after receiving `request` without answering (an UnRegisterSession): the engine then
        starts the next case on a new connection instead of blaming the target for the close."""
        return True

    def silence_violation(self, frame: bytes) -> str | None:
        """Why leaving `frame` unanswered breaks the specification (a BACnet confirmed request
        must get a Reject or Abort), or None when silence is allowed. The engine then records
        the silence as a spec violation; silence is otherwise never a finding by itself."""
        return None

    def request_type(self, frame: bytes) -> str | None:
        """The template name of the request type `frame` is (what a finding is labelled with),
        or None when nothing in it identifies one.

        The default picks the template whose valid encoding shares the longest prefix with the
        frame, which works for header-then-code layouts; modules with a real dispatcher (a
        function code table) override it with that.
        """
        best, best_len = None, 0
        for template in self.templates():
            valid = template.encode()
            n = 0
            for a, b in zip(valid, frame):
                if a != b:
                    break
                n += 1
            if n > best_len:
                best, best_len = template.name, n
        return best

    def dictionary(self) -> Mapping[str, Sequence[int | bytes]]:
        """Values with a meaning in the specification, by field name (coil ON/OFF, control
        codes, qualifiers, object ids): the mutation and pairwise strategies draw from them."""
        return {}

    def observed_state(self, reply: bytes) -> bytes:
        """The part of a reply to an observation read that shows the target's state, which a
        policy test compares before and after a write. Default: the whole reply; protocols whose
        replies also carry timestamps or per-message counters return only the values."""
        return reply

    def reply_values(self, request: bytes, reply: bytes) -> list[int]:
        """Numbers a normal reply reports (register values, addresses, counts, identifiers):
        the dictionary offers them to later cases. Default: none."""
        return []

    def stress_flood(self) -> tuple[bytes, str] | None:
        """The protocol's own cheap, always-answered message (echo, link test, keep-alive),
        with its name: flooding it loads the stack below the application. None: there is none."""
        return None

    def sync_request(self) -> bytes | None:
        """A cheap valid request that may follow a possibly dropped frame on the same connection
        and whose answer is told apart from any answer to that frame (by the session:
        `Session.prepare_sync`; `is_sync_reply` here where the answer's content tells): its
        answer proves the frame before it went unanswered. None: the protocol cannot do this
        (no in-order replies, or no way to tell the answers apart)."""
        return None

    def is_sync_reply(self, reply: bytes) -> bool:
        """True when `reply` answers `sync_request()`, not the case before it."""
        return False

    def request_id(self, frame: bytes) -> int | None:
        """The id a reply to `frame` carries back (the Modbus transaction id), so that several
        requests may be in flight on one connection (pipelining). None: this frame is not
        pipelined (the protocol has no such id, or the frame is not exactly one frame)."""
        return None

    def reply_id(self, reply: bytes) -> int | None:
        """The id of the request a reply answers (see `request_id`)."""
        return None

    def with_request_id(self, frame: bytes, request_id: int) -> bytes:
        """`frame` carrying another id: copies of the probe that tell whether a target handles
        pipelining. Only called where `request_id` is not always None."""
        raise NotImplementedError(f"{self.name} has no request ids")

    # -- what a capture shows ---------------------------------------------------------------------
    # Capture import (otfuzz.capture) reads recorded traffic with these hooks: the module's own
    # framing splits a reassembled stream, and a captured request becomes a template whose values
    # are the device's real ones.

    FRAME_HEAD = 64
    """Bytes `split_messages` shows `frame_length` at a time: enough for every protocol's header."""

    def split_messages(self, data: bytes) -> tuple[list[bytes], bytes]:
        """The messages of one direction of a captured stream, by this protocol's own framing, and
        the bytes after them that do not frame (an incomplete last message, or garbage).
        Default: `frame_length`, one message after another."""
        out: list[bytes] = []
        pos = 0
        while pos < len(data):
            n = self.frame_length(bytes(data[pos : pos + self.FRAME_HEAD]))
            if n is None or n <= 0 or pos + n > len(data):
                break
            out.append(bytes(data[pos : pos + n]))
            pos += n
        return out, bytes(data[pos:])

    def normalise_request(self, frame: bytes) -> bytes:
        """A captured request as this module's sessions expect a request: counters the session
        patches relative to its own (sequence numbers) set to zero. Default: unchanged."""
        return frame

    def session_control(self, frame: bytes) -> bool:
        """True for a captured request the session sends by itself (a handshake, an
        acknowledgement, a keep-alive answer): recognised, but no request type to fuzz."""
        return False

    def from_capture(self, frame: bytes) -> Template | None:
        """A captured request as a template carrying its values as seen (the device's real
        addresses and points), or None when it breaks the specification (`check_request`) or
        no declared request type decodes it exactly.

        The request type `request_type` names is tried first; a template fits when its layout
        decodes the normalised frame with no field off its limits and encodes it back unchanged.
        """
        frame = self.normalise_request(frame)
        if not frame or self.check_request(frame):
            return None  # off the specification: listed as unparsed, never a template
        name = self.request_type(frame)
        for template in sorted(self.templates(), key=lambda t: t.name != name):
            message = template.message
            try:
                values = message.decode(frame)
            except (DecodeError, ValueError, KeyError, TypeError, IndexError):
                continue
            if message.violations(values):
                continue
            plain = {k: v for k, v in values.items() if not isinstance(message.field_named(k), (Length, Checksum))}
            try:
                if message.encode(plain) != frame:
                    continue
            except (ValueError, KeyError, TypeError):
                continue
            return Template(template.name, message, plain, writes=template.writes or self.is_write(frame),
                            disruptive=template.disruptive, code=template.code)
        return None
