"""Findings: distinct defects of the target, each a bucket of anomalies (its occurrences).

An anomaly is one event ("the target crashed after case 4711"); a finding is one defect ("the
server exits with OverflowError on a read whose address range runs past 65535"). Bucketing
follows ClusterFuzz: the target's own evidence first (how its process died and the top of its
crash report, or where its threads were stuck while it hung), with addresses, numbers and paths
blanked; without such evidence, what the minimised reproducer does: its request type and the
specification rules its last frame breaks, named by field, never by value.

Everything here is pure: keys, titles and severities are functions of the evidence and of the
protocol module's judgement of the frames, so a resumed run and a report rebuild agree.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from types import MappingProxyType
from typing import Any

from otfuzz.protocols.base import Protocol

KEY_FORMAT = 5
"""Version of the key format below: baselines name it, and refuse keys of another version.
2: reply-level findings on requests that break rules are keyed by behaviour (BY_BEHAVIOUR).
3: a malformed reply is keyed by what is wrong with it (`_answered_as`); object labels such as
DNP3's g30v5 are blanked like any value.
4: a spec violation is keyed by one rule the request broke (`leniency`), not by all of them.
5: a float written with an exponent, nan or inf is blanked like any number (OPC UA's
`max_age=nan below 0` was a finding apart from `max_age=# below 0`); DNP3's function name is a
place like a service's ("function WRITE: no objects" and "function SELECT: no objects" are one)."""

SEVERITY: Mapping[str, str] = MappingProxyType({
    "crash": "high",
    "unresponsive-after": "high",
    "hang": "medium",
    "degradation": "medium",
    "slow-reply": "medium",
    "connection-reset": "medium",
    "malformed-reply": "low",
    "spec-violation": "low",
})
SEVERITY_ORDER = ("high", "medium", "low")

# Classes one replay cannot tell apart (a hang that lasts looks like one that passes): one family.
_FAMILY = MappingProxyType({"hang": "unresponsive", "unresponsive-after": "unresponsive"})

_HEX = re.compile(r"0x[0-9a-fA-F]+")
# (a float the way Python writes it is a number too: -1e+300, nan, -inf)
_NUMBER = re.compile(r"(?<![A-Za-z_])[-+]?(?:\d+(?:\.\d+)?(?:e[-+]?\d+)?|nan|inf)(?![A-Za-z_])")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[\w.+-]*[/\\])+([\w.+-]+)")
_ADDRESS = re.compile(r"\b(?:0x)?[0-9a-fA-F]{8,16}\b")
# An object named by its numbers (DNP3's g30v5: group 30, variation 5) is a value like any other:
# an outstation that acts on an undefined variation does so for g1v3 as for g60v146, one leniency.
_OBJECT = re.compile(r"\bg\d+v\d+\b")
_DIGITS = re.compile(r"[\d#]+")  # (a run of them, blanked or not, is one value)


def family(anomaly_class: str) -> str:
    return _FAMILY.get(anomaly_class, anomaly_class)


def severity(anomaly_class: str) -> str:
    return SEVERITY.get(anomaly_class, "medium")


@lru_cache(maxsize=16384)
def blank_values(text: str) -> str:
    """A rule or report line with its values blanked: what stays is the field names and the rule.
    (Remembered: every case's rules and reply detail are blanked, and they repeat.)"""
    text = _QUOTED.sub("'_'", text)
    text = _OBJECT.sub("g#v#", text)
    text = _HEX.sub("#", text)
    text = _NUMBER.sub("#", text)
    return re.sub(r"#(?:[#.,:\s]*#)+", "#", text).strip()


@dataclass(frozen=True)
class Trigger:
    """What one request does in specification terms: its type and the rules it breaks."""

    request_type: str
    rules: tuple[str, ...]  # blanked, sorted, unique; empty for a valid request

    @cached_property
    def text(self) -> str:  # (a case's triggers are matched against the book before it is sent)
        return f"{self.request_type}|{'; '.join(self.rules) if self.rules else 'valid request'}"

    @classmethod
    def parse(cls, text: str) -> Trigger:
        request_type, _, rules = text.partition("|")
        return cls(request_type, () if rules in ("", "valid request") else tuple(rules.split("; ")))


FAULT_TRIGGER = "structural fault|"
COSTLY = frozenset({"crash", "hang", "unresponsive-after", "degradation", "slow-reply"})
"""Classes whose every occurrence costs a restart or a long wait: suppressed more widely."""


def fault_trigger(fault: str) -> str:
    """The trigger text of a structural fault (matched against a case's `fault`), values blanked."""
    return f"{FAULT_TRIGGER}{blank_values(fault)}"


def trigger_of(protocol: Protocol, frame: bytes, rules: Callable[[bytes], Sequence[str]] | None = None) -> Trigger:
    """The trigger of one frame, as the protocol module judges it (`rules`: a memo of its
    check_request, see otfuzz.engine.rules)."""
    request_type = protocol.request_type(frame) or "unrecognised request"
    problems = (rules or protocol.check_request)(frame)
    framed = protocol.frame_length(frame)
    if framed is not None and framed < len(frame):
        problems = [*problems, "bytes after the first frame"]
    return Trigger(request_type, tuple(sorted({blank_values(p) for p in problems})))


CONDITION_SEPARATOR = "|needs "
WRITE_STEP = "a write"


@dataclass(frozen=True)
class Condition:
    """What a valid request needs, beyond its type, to reach a defect that left no evidence of
    its own: the request types sent before it on the connection, and its fields off their
    template values. Read from the minimised reproducer, which showed every other step and
    value not to matter; "any valid read" is then never the trigger of a crash that needs a
    write first, or a broadcast of 125 registers.
    """

    request_type: str = ""
    prefix: tuple[str, ...] = ()
    values: tuple[tuple[str, str], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.prefix or self.values)

    @property
    def text(self) -> str:
        parts = []
        if self.prefix:
            parts.append("after " + ", ".join(self.prefix))
        if self.values:
            parts.append(", ".join(f"{name}={value}" for name, value in self.values))
        return "; ".join(parts)

    def met_by(self, before: Iterable[str], values: Mapping[str, str]) -> bool:
        """Whether a valid frame with these off-template `values`, sent after requests of the
        types `before` on its connection, meets the condition."""
        return set(self.prefix) <= set(before) and all(values.get(name) == value for name, value in self.values)

    def as_record(self) -> dict[str, Any]:
        return {"request_type": self.request_type, "prefix": list(self.prefix),
                "values": {name: value for name, value in self.values}}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Condition | None:
        if not record:
            return None
        return cls(str(record.get("request_type") or ""), tuple(record.get("prefix") or ()),
                   tuple(sorted((record.get("values") or {}).items())))


class FrameValues:
    """Fields of a frame off its template's values, by the protocol's message model (cached)."""

    LIMIT = 4096

    def __init__(self, protocol: Protocol) -> None:
        self.protocol = protocol
        self.templates = {t.name: t for t in protocol.templates()}
        self._cache: dict[bytes, dict[str, str]] = {}

    def of(self, frame: bytes) -> dict[str, str]:
        found = self._cache.get(frame)
        if found is None:
            if len(self._cache) >= self.LIMIT:
                self._cache.clear()
            found = self._cache[frame] = self._read(frame)
        return found

    def _read(self, frame: bytes) -> dict[str, str]:
        from otfuzz.errors import DecodeError
        from otfuzz.protocols.model import Checksum, Length

        template = self.templates.get(self.protocol.request_type(frame) or "")
        if template is None:
            return {}
        message = template.message
        try:
            values, _ = message.decode_prefix(frame)
        except (DecodeError, ValueError, KeyError, TypeError):
            return {}
        valid = {**message.defaults(), **dict(template.values)}
        out: dict[str, str] = {}
        for f in message.fields:
            if isinstance(f, (Length, Checksum)) or f.name not in values:
                continue
            value = values[f.name]
            if value != valid.get(f.name):
                out[f.name] = value.hex() if isinstance(value, (bytes, bytearray)) else str(value)
        return out

    def condition(self, frames: Sequence[bytes]) -> Condition:
        """The condition a minimised reproducer states for its last frame."""
        if not frames:
            return Condition()
        prefix = tuple(dict.fromkeys(t for t in (self._step(f) for f in frames[:-1]) if t))
        # a value an earlier step also carries (the address written, then read) ties the steps
        # together: a relation, not a constant the defect needs, so it is no part of the condition
        earlier = {item for f in frames[:-1] for item in self.of(f).items()}
        values = tuple(sorted(item for item in self.of(frames[-1]).items() if item not in earlier))
        return Condition(self.protocol.request_type(frames[-1]) or "", prefix, values)

    def meets(self, frames: Sequence[bytes], condition: Condition) -> bool:
        """Whether some valid frame of the condition's request type in `frames` meets it."""
        before: list[str] = []
        for frame in frames:
            kind = self.protocol.request_type(frame)
            if (kind == condition.request_type and not self.protocol.check_request(frame)
                    and condition.met_by(before, self.of(frame))):
                return True
            step = self._step(frame)
            if step:
                before.append(step)
        return False

    def _step(self, frame: bytes) -> str | None:
        """A step of a prefix as a condition names it: any write is "a write" (the state a write
        changes, not which request changed it, is what a defect after it needs), else its type."""
        kind = self.protocol.request_type(frame)
        template = self.templates.get(kind or "")
        return WRITE_STEP if template is not None and template.writes else kind


# -- the target's own evidence ------------------------------------------------------------------


_PY_FRAME = re.compile(r'^\s*File "([^"]+)", line \d+, in (\S+)')
_PY_EXCEPTION = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning|Fault))\b")
_CPP_TERMINATE = re.compile(r"terminate called (?:after throwing an instance of '([^']+)'|without an active exception)")
_SANITIZER = re.compile(r"SUMMARY: (\w+Sanitizer): (.*)")
_ABORT_LINES = re.compile(r"(Assertion .* failed|Segmentation fault|stack smashing detected|double free|free\(\): .*|"
                          r"malloc\(\): .*|corrupted .*|panicked at .*)")


def crash_report(stderr: str) -> str | None:
    """The normalised top of the crash report in a target's stderr, or None when it has none.

    Python tracebacks give the exception type and the innermost three frames (file name and
    function, no line numbers); C++ the type of the exception that reached terminate; sanitizers
    their summary line; glibc and Rust their abort messages. Values, addresses and paths are
    blanked so that every input reaching the same fault gives the same text.
    """
    lines = stderr.splitlines()
    for index in range(len(lines) - 1, -1, -1):
        if lines[index].startswith("Traceback (most recent call last)"):
            frames: list[str] = []
            exception = ""
            for line in lines[index + 1:]:
                match = _PY_FRAME.match(line)
                if match:
                    frames.append(f"{match.group(1).replace(chr(92), '/').rsplit('/', 1)[-1]}:{match.group(2)}")
                    continue
                found = _PY_EXCEPTION.match(line.strip())
                if found and not line.startswith(" "):
                    exception = found.group(1)
                    break
            if frames or exception:
                return " < ".join([exception or "Python exception", *reversed(frames[-3:])])
    for line in reversed(lines):
        match = _SANITIZER.search(line)
        if match:
            return f"{match.group(1)}: {_blank_report(match.group(2))}"
    for line in reversed(lines):
        match = _CPP_TERMINATE.search(line)
        if match:
            return f"C++ terminate: {match.group(1) or 'no active exception'}"
    for line in reversed(lines):
        match = _ABORT_LINES.search(line)
        if match:
            return _blank_report(match.group(1))
    return None


def _blank_report(text: str) -> str:
    text = _PATH.sub(r"\1", text)
    text = _ADDRESS.sub("#", text)
    return blank_values(text)


# Innermost frames of a thread that is only waiting for work: such a thread says nothing about a hang.
_IDLE = frozenset({"select", "poll", "epoll", "wait", "_run_once", "accept", "recv", "serve_forever", "get", "join",
                   "_wait_for_tstate_lock", "acquire"})


def stack_evidence(threads: Sequence[Mapping[str, Any]]) -> str | None:
    """Where a hung target's threads are: the innermost three frames of each busy thread.

    `threads` is py-spy's JSON dump (name, short_filename per frame). Threads waiting in the
    event loop, a selector or a queue are left out; when every thread waits, the dump is no
    evidence (the target may have stopped answering without being stuck) and None is returned.
    """
    busy: list[str] = []
    for thread in threads:
        frames = [f for f in thread.get("frames") or [] if isinstance(f, Mapping)]
        if not frames:
            continue
        top = str(frames[0].get("name", ""))
        leaf = top.rsplit(".", 1)[-1].lower()
        if leaf in _IDLE and "site-packages" not in str(frames[0].get("filename", "")):
            continue
        shown = [f"{str(f.get('short_filename', '?')).rsplit('/', 1)[-1]}:{f.get('name', '?')}" for f in frames[:3]]
        busy.append(" < ".join(shown))
    if not busy:
        return None
    return "stuck in " + " | ".join(sorted(set(busy)))


@dataclass(frozen=True)
class TargetEvidence:
    """What the target itself showed: how its process ended, its crash report, its stacks."""

    signal: str | None = None
    returncode: int | None = None
    report: str | None = None  # normalised crash report or stack evidence
    excerpt: str = ""  # the raw lines it came from (escaped by the report writers)

    @property
    def exit_text(self) -> str | None:
        if self.signal:
            return f"signal {self.signal}"
        if self.returncode is not None:
            return f"exit code {self.returncode}"
        return None

    @property
    def strong(self) -> bool:
        """Evidence that identifies the fault on its own (a signal alone does not)."""
        return self.report is not None

    def as_record(self) -> dict[str, Any]:
        return {"signal": self.signal, "returncode": self.returncode, "report": self.report, "excerpt": self.excerpt}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> TargetEvidence | None:
        if not record:
            return None
        return cls(record.get("signal"), record.get("returncode"), record.get("report"), record.get("excerpt") or "")


BY_BEHAVIOUR = frozenset({"spec-violation", "malformed-reply"})
"""Reply-level classes keyed by behaviour when the request broke a rule: a leniency of a shared
layer (framing, a common decoder) answers every request type the same way, and each reply
answers its own request, so the request types it shows on are occurrences of one finding (a
malformed reply whose malformation is known is keyed by that instead: `_answered_as`).
Target-level classes stay keyed by request type: only the target's own evidence (a crash report,
a stack) proves that two request types reach one fault."""


def _rule_words(request_type: str, rules: Sequence[str]) -> list[str]:
    """The rules with the request type's own name blanked."""
    if not request_type:
        return list(rules)
    return [rule.replace(f"the {request_type} request", "the request").replace(request_type, "the request") for rule in rules]


def _any_request(request_type: str, rules: Sequence[str]) -> str:
    """The rules with the request type's own name blanked, sorted and joined."""
    words = _rule_words(request_type, rules)
    return "; ".join(sorted(words)) if words else "valid request"


_POSITION = re.compile(r"^(?:(?:tag at octet|data item|item|segment|sub-request|packet|link frame|frame|chunk|TPDU|APDU)"
                       r" (?:#: |(?=#))|message # \([A-Z]+\): |(?:link )?function [A-Z][A-Z0-9_]*: "
                       r"|[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]*)+ (?=\S)"
                       r"|[A-Z][a-z]*(?:-[A-Z][a-z]*)+ (?=\S))+")
"""Where a rule was broken, as the protocol modules write it: the place in the frame ("item #: ",
"TPDU #: ", OPC UA's "message # (MSG): ") and the service whose decoder found it (BACnet's
"ReadProperty ", "Who-Is ", OPC UA's "ReadRequest ", DNP3's "function DIRECT_OPERATE: "): one
rule of a shared decoder wherever it is broken.
Blanking joins "TPDU #: # octets" into "TPDU # octets", so a place is also dropped before a value."""


def leniency(request_type: str, rules: Sequence[str]) -> str:
    """The one rule a spec violation is keyed by: the first, in sorted order, of the rules the
    request broke, with the request type's name and the rule's position in the frame blanked.

    A target that acts on a request breaking several rules enforces none of them, and each is a
    leniency of its own. Keyed by the whole set, every combination was a finding: snap7's lax
    parser gave 127 spec-violation findings in 10 s, which named 77 rules first. Keyed by one
    rule, a combination is an occurrence of the finding of its first rule, whose reproducer
    (minimised: each departure undone in turn while the target still acts on it) shows the
    rest; the key is the same in every campaign, whatever came first.
    """
    return min(_POSITION.sub("", word) for word in _rule_words(request_type, rules))


def behaviour(anomaly_class: str, request_type: str, rules: Sequence[str]) -> str:
    """What a finding shows whatever request carries it: its class and rules with the request
    type's own name blanked (for a spec violation, the one rule it is keyed by)."""
    if anomaly_class == "spec-violation" and rules:
        return f"{anomaly_class}: {leniency(request_type, rules)}"
    return f"{anomaly_class}: {_any_request(request_type, rules)}"


def behaviour_of(finding: Mapping[str, Any]) -> str:
    """The behaviour of a stored finding (records written before behaviours existed included)."""
    if finding.get("behaviour"):
        return str(finding["behaviour"])
    report = (finding.get("target_evidence") or {}).get("report")
    if report:
        return f"{finding.get('class')}: {report}"
    return behaviour(str(finding.get("class")), str(finding.get("request_type") or ""), finding.get("violated_rules") or [])


def _answered_as(anomaly_class: str, trigger: Trigger | None, reply_detail: str) -> str | None:
    """A malformed reply, by what is wrong with it (values blanked), or None.

    What is wrong is in the reply, so the same malformation after any request is one defect of
    the layer that builds replies: dnp3py addresses every response to the master it learned
    from a connection's first frame, not to the request's source, and that showed as one
    finding per request type and per set of rules the request broke (32 of 56 findings in
    3,000 cases). Malformations that differ stay apart, also on one request type."""
    if anomaly_class != "malformed-reply" or trigger is None or not reply_detail:
        return None
    # digits inside names are the request's values too (snap7's "4 octets for DB1.DBB0 DATE x4")
    return f"reply: {_DIGITS.sub('#', blank_values(reply_detail))}"


def finding_key(protocol: str, anomaly_class: str, trigger: Trigger | None, evidence: TargetEvidence | None,
                reply_detail: str = "") -> str:
    """The bucket of one anomaly: equal keys are one defect.

    Strong target evidence (a crash report, a stack) is the key on its own, so every input that
    reaches the same fault joins one finding; a bare signal or exit code is combined with what
    the reproducer does; without evidence, the reproducer alone, except for a malformed reply,
    keyed by what is wrong with it (`_answered_as`), and a spec violation, by one rule its
    request broke (`leniency`).
    """
    parts = [protocol, family(anomaly_class)]
    if evidence is not None and evidence.strong:
        return "|".join([*parts, f"evidence: {evidence.report}"])
    if evidence is not None and evidence.exit_text:
        parts.append(evidence.exit_text)
    answered = _answered_as(anomaly_class, trigger, reply_detail) if evidence is None or not evidence.exit_text else None
    if answered is not None:
        parts.append(answered)
    elif trigger is not None and trigger.rules and anomaly_class == "spec-violation":
        parts.append(f"any request|{leniency(trigger.request_type, trigger.rules)}")
    elif trigger is not None and trigger.rules and anomaly_class in BY_BEHAVIOUR:
        parts.append(f"any request|{_any_request(trigger.request_type, trigger.rules)}")
    else:
        parts.append(trigger.text if trigger is not None else "unknown trigger")
    return "|".join(parts)


def request_types(triggers: Iterable[str]) -> list[str]:
    """The request types a finding was met on, from its triggers (structural faults aside)."""
    return sorted({Trigger.parse(t).request_type for t in triggers if not t.startswith(FAULT_TRIGGER)})


# -- plain words --------------------------------------------------------------------------------


def _request_words(request_type: str) -> str:
    return request_type.replace("/", ": ").replace("_", " ")


def finding_title(anomaly_class: str, request_type: str, problems: Sequence[str], evidence: TargetEvidence | None,
                  reply_detail: str = "", latency_ms: float | None = None) -> str:
    """One line an engineer understands without the key: what happens, on what input."""
    what = _request_words(request_type)
    if problems:
        on = f"a {what} request with {'; '.join(problems[:2])}" + (" ..." if len(problems) > 2 else "")
    else:
        on = f"a valid {what} request"
    how = {
        "crash": "Target process dies",
        "hang": "Target stops answering for a while",
        "unresponsive-after": "Target stops answering until restarted",
        "degradation": "Target answers far slower",
        "connection-reset": "Target resets the connection",
        "slow-reply": "Target answers late",
        "malformed-reply": "Target sends a malformed reply",
        "spec-violation": "Target acts on",
    }.get(anomaly_class, anomaly_class)
    if anomaly_class == "crash" and evidence is not None:
        cause = evidence.report or evidence.exit_text
        if cause:
            how = f"Target process dies ({evidence.exit_text + ': ' if evidence.exit_text and evidence.report else ''}{cause})"
    if anomaly_class == "slow-reply" and latency_ms is not None:
        how = f"Target answers late ({latency_ms:.0f} ms)"
    if anomaly_class == "spec-violation":
        return f"Target acts on {on}, which the specification says to reject"
    title = f"{how} on {on}"
    if anomaly_class == "malformed-reply" and reply_detail:
        title += f": {reply_detail}"
    return title[:300]


# -- the book of findings during a campaign --------------------------------------------------------


@dataclass
class FindingState:
    """What the campaign keeps in memory about one finding (the store holds the whole record)."""

    id: int
    key: str
    anomaly_class: str
    aliases: set[str] = field(default_factory=set)  # provisional keys that led here
    triggers: set[str] = field(default_factory=set)  # Trigger.text of inputs known to reach it
    confirmed: bool = False
    skipped: int = 0
    matched: int = 0  # cases that matched a trigger since it was confirmed
    committed: tuple[int, int] = (0, 0)  # (skipped, matched) of cases below the resume point
    faults: dict[str, set[str]] = field(default_factory=dict)  # structural fault -> request types it reached it on
    condition: Condition | None = None  # what its valid trigger needs (no evidence of its own to key it)
    tried: bool = False  # replayed once while fuzzing (confirmed or not): a deferred one is tried at its next occurrence


class FindingBook:
    """Finds the finding an anomaly belongs to, and which cases suppression holds back.

    Known-finding suppression: once a finding is confirmed, a case whose frames carry one of its
    triggers is sent only once in `rate` matches (the rest are counted as skipped), so a crash
    that costs a restart cannot eat the campaign. A frame matches a trigger with the same request
    type and the same rules broken, or the same structural fault. For the classes that cost a
    restart or a wait (COSTLY), a frame also matches when it breaks every rule of a trigger and
    more: the input already holds all that reaches the defect, and fuzzers make endless such
    variants. Which cases are skipped depends only on the order of matches, which `--resume`
    restores from the store.
    """

    def __init__(self, rate: int = 50) -> None:
        self.rate = max(1, rate)
        self.findings: dict[int, FindingState] = {}
        self._by_key: dict[str, int] = {}
        self._exact: dict[str, int] = {}  # trigger text -> costly finding id (any frame of a case)
        self._reply: dict[str, int] = {}  # trigger text -> reply-level finding id (the last frame only)
        self._wider: dict[str, list[tuple[frozenset[str], int]]] = {}  # request type -> (rules, finding id)
        self._merged: dict[int, int] = {}  # finding id -> the finding it was merged into
        self._conditional: dict[str, list[tuple[Condition, int]]] = {}  # request type -> (condition, finding id)
        self._weak: dict[str, list[int]] = {}  # provisional key -> findings keyed further by a condition
        self._strays: dict[str, int] = {}  # provisional key -> anomalies meeting none of its conditions, investigated

    def __len__(self) -> int:
        return len(self.findings)

    def _hold(self, trigger: str, finding_id: int) -> None:
        state = self.findings.get(finding_id)
        if state is None:
            return
        costly = state.anomaly_class in COSTLY
        if costly and state.condition and not trigger.startswith(FAULT_TRIGGER):
            parsed = Trigger.parse(trigger)
            if not parsed.rules and parsed.request_type == state.condition.request_type:
                # a valid request reaches it only under its condition: held back only then
                entries = self._conditional.setdefault(parsed.request_type, [])
                if (state.condition, finding_id) not in entries:
                    entries.append((state.condition, finding_id))
                return
        if costly:
            self._exact.setdefault(trigger, finding_id)
        elif trigger.startswith(FAULT_TRIGGER) or Trigger.parse(trigger).rules:
            # A reply-level finding costs nothing more to meet again: only its own faulty input is
            # held back, never every valid request of a type (their boundary values still count).
            self._reply.setdefault(trigger, finding_id)
        if not costly or trigger.startswith(FAULT_TRIGGER):
            return
        parsed = Trigger.parse(trigger)
        entries = self._wider.setdefault(parsed.request_type, [])
        rules = frozenset(parsed.rules)
        if all(r != rules for r, _ in entries):
            entries.append((rules, finding_id))
            entries.sort(key=lambda e: len(e[0]))

    def add(self, state: FindingState) -> None:
        self.findings[state.id] = state
        self._index_keys(state)
        if state.confirmed:
            for trigger in state.triggers:
                self._hold(trigger, state.id)

    def lookup(self, key: str) -> FindingState | None:
        found = self._by_key.get(key)
        return None if found is None else self.findings.get(found)

    def rekey(self, state: FindingState, key: str) -> None:
        state.aliases.add(state.key)
        state.key = key
        self._index_keys(state)

    def _index_keys(self, state: FindingState) -> None:
        """A finding's keys lead to it; a provisional key of one keyed further by a condition
        leads to it only through that condition (`conditioned`)."""
        self._by_key[state.key] = state.id
        weak_keys = state.aliases - {state.key}
        if state.condition:
            weak_keys = weak_keys | {state.key.split(CONDITION_SEPARATOR)[0]}  # the key without its condition
        for alias in weak_keys:
            if state.condition:
                if self._by_key.get(alias) == state.id:
                    del self._by_key[alias]
                weak = self._weak.setdefault(alias, [])
                if state.id not in weak:
                    weak.append(state.id)
            else:
                self._by_key[alias] = state.id

    def conditioned(self, key: str) -> list[FindingState]:
        """The confirmed findings a provisional key was keyed further from, by a condition."""
        found: dict[int, FindingState] = {}
        for fid in self._weak.get(key, ()):
            state = self.resolve(fid)
            if state is not None and state.confirmed and state.condition:
                found.setdefault(state.id, state)
        return list(found.values())

    def stray(self, key: str) -> int:
        """Count one anomaly of a provisional key that meets none of its findings' conditions."""
        self._strays[key] = self._strays.get(key, 0) + 1
        return self._strays[key]

    def merge(self, source: FindingState, into: FindingState) -> None:
        """`source` turned out to be `into` (its minimised reproducer gave the same key)."""
        self.findings.pop(source.id, None)
        self._merged[source.id] = into.id
        into.aliases |= source.aliases | {source.key}
        into.triggers |= source.triggers
        for fault, types in source.faults.items():
            into.faults.setdefault(fault, set()).update(types)
        into.skipped += source.skipped
        into.matched += source.matched
        into.committed = (into.committed[0] + source.committed[0], into.committed[1] + source.committed[1])
        self._index_keys(into)
        if into.confirmed:
            for trigger in into.triggers:
                self._hold(trigger, into.id)

    def confirm(self, state: FindingState, triggers: Iterable[str] = ()) -> None:
        state.confirmed = True
        state.triggers.update(triggers)
        for trigger in state.triggers:
            self._hold(trigger, state.id)

    def note_fault(self, state: FindingState, fault: str, request_type: str) -> bool:
        """A structural fault reached this finding on `request_type`. Once it has on two request
        types, the fault itself is a trigger, whatever request carries it. True if that is new."""
        types = state.faults.setdefault(fault, set())
        types.add(request_type)
        trigger = fault_trigger(fault)
        if len(types) >= 2 and trigger not in state.triggers:
            self.add_trigger(state, trigger)
            return True
        return False

    def add_trigger(self, state: FindingState, trigger: str) -> None:
        state.triggers.add(trigger)
        if state.confirmed:
            self._hold(trigger, state.id)

    @property
    def suppressing(self) -> bool:
        return bool(self._exact or self._reply or self._conditional)

    def resolve(self, finding_id: int) -> FindingState | None:
        """The finding an id stands for now, following merges."""
        seen = 0
        while finding_id in self._merged and seen < 64:
            finding_id, seen = self._merged[finding_id], seen + 1
        return self.findings.get(finding_id)

    def matching(self, triggers: Sequence[Trigger | str], last: Sequence[Trigger | str] = (),
                 meets: Callable[[Condition], bool] | None = None) -> FindingState | None:
        """The confirmed finding a case matches: a costly one through any of its `triggers` (every
        frame, its structural fault), a reply-level one through the triggers of its `last` frame,
        one that needs a condition when the case's frames meet it (`meets`)."""
        for trigger in triggers:
            text = trigger if isinstance(trigger, str) else trigger.text
            fid = self._exact.get(text)
            if fid is None and isinstance(trigger, Trigger):
                rules = set(trigger.rules)
                fid = next((f for wanted, f in self._wider.get(trigger.request_type, ()) if wanted <= rules), None)
            state = self.resolve(fid) if fid is not None else None
            if state is not None:
                return state
            if meets is not None and isinstance(trigger, Trigger) and not trigger.rules:
                for condition, fid in self._conditional.get(trigger.request_type, ()):
                    state = self.resolve(fid)
                    if state is not None and meets(condition):
                        return state
        for trigger in last:
            fid = self._reply.get(trigger if isinstance(trigger, str) else trigger.text)
            state = self.resolve(fid) if fid is not None else None
            if state is not None:
                return state
        return None

    def match(self, triggers: Sequence[Trigger | str], last: Sequence[Trigger | str] = (),
              may_send: bool = True, meets: Callable[[Condition], bool] | None = None) -> tuple[FindingState | None, bool]:
        """(the confirmed finding a case matches, whether to hold the case back).

        Every match counts; one in `rate` still goes out, since the defect may change (or be
        fixed) and the occurrences stay countable, unless `may_send` is False (known findings
        have taken their share of the campaign's time).
        """
        state = self.matching(triggers, last, meets)
        if state is None:
            return None, False
        state.matched += 1
        if state.matched % self.rate == 0 and may_send:
            return state, False
        state.skipped += 1
        return state, True


def describe(protocol: Protocol, anomaly_class: str, frames: Sequence[bytes], evidence: TargetEvidence | None,
             reply_detail: str = "", latency_ms: float | None = None) -> dict[str, Any]:
    """What a finding's reproducer does, in the record's terms: recomputed after minimisation,
    so a finding is labelled by its reproducer, never by whatever case happened to come last."""
    last = frames[-1] if frames else b""
    trigger = trigger_of(protocol, last)
    problems = list(protocol.check_request(last)) if frames else []
    return {
        "class": anomaly_class,
        "severity": severity(anomaly_class),
        "request_type": trigger.request_type,
        "violated_rules": list(trigger.rules),
        "problems": problems,
        "request": protocol.describe(last) if frames else "",
        "title": finding_title(anomaly_class, trigger.request_type, problems, evidence, reply_detail, latency_ms),
        "behaviour": (f"{anomaly_class}: {evidence.report}" if evidence is not None and evidence.strong
                      else f"{anomaly_class}: {answered}" if (answered := _answered_as(anomaly_class, trigger, reply_detail))
                      else behaviour(anomaly_class, trigger.request_type, trigger.rules)),
    }
