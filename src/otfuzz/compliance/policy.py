"""The conduit policy test: does a conduit let through only what its policy allows?

From the outer zone's side, the test sends every operation the protocol module declares (its
templates: reads, writes, and disruptive requests only if asked) once through the conduit
endpoint, each on its own connection, and records whether it was allowed by the policy, whether
an answer came back and of what kind, and, for writes, whether the server behind the conduit
changed (read directly on an inside observation endpoint before and after, when one is given).

A disallowed operation *came through* when it was answered normally or changed the target: that
is a policy violation, mapped to SR 5.2 (zone boundary protection) and SR 5.1 (segmentation),
and to SR 3.5 as well when the device acted on it. An exception reply counts as a refusal:
filtering gateways answer that way, and without a tap inside the zone a refusal by the device
cannot be told from one by the conduit. Which requirements and strengths apply, and the marker
values that make a write visible, are data (`data/zones_and_conduits.yaml`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from statistics import median
from typing import Any

import yaml

from otfuzz.engine.config import RecordedConfig
from otfuzz.errors import OtfuzzError
from otfuzz.compliance.operations import Operation, operations
from otfuzz.protocols.base import ReplyKind
from otfuzz.transport.target import Scope, parse_target

ANSWERED = (ReplyKind.NORMAL, ReplyKind.EXCEPTION, ReplyKind.MALFORMED, ReplyKind.SPEC_VIOLATION)


def load_rules() -> dict[str, Any]:
    """The zones-and-conduits rules shipped with otfuzz (planning, policy test, roles)."""
    text = resources.files("otfuzz.compliance").joinpath("data/zones_and_conduits.yaml").read_bytes()
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


@dataclass
class PolicyTestConfig(RecordedConfig):
    """Everything that defines a policy test; stored whole in the evidence."""

    target: str  # URL of the conduit endpoint the outer zone uses
    allow: list[str | int] = field(default_factory=list)
    observe: str | None = None  # HOST:PORT of the server itself, inside the protected zone
    timeout: float = 1.0
    include_disruptive: bool = False
    read_only: bool = False  # a live target: writes are not sent, so the write policy stays untested
    scope: list[str] = field(default_factory=list)
    conduit: str | None = None
    channel: str | None = None
    from_zone: str | None = None
    to_zone: str | None = None
    operator: str | None = None
    organisation: str | None = None
    independence: str | None = None



@dataclass(frozen=True)
class OperationResult:
    name: str
    code: int | None
    writes: bool
    disruptive: bool
    allowed: bool
    sent: bool
    reply_kind: str | None
    reply_detail: str
    latency_ms: float | None
    changed: bool | None  # None: not observed
    outcome: str  # passed, over-blocked, blocked, violation, skipped
    frame_hex: str
    reply_hex: str | None

    @property
    def answered(self) -> bool:
        return self.reply_kind in {k.value for k in ANSWERED}

    @property
    def came_through(self) -> bool:
        """Anything but a clean refusal (silence, close, reset, exception) reached past the conduit."""
        return (self.answered and self.reply_kind != ReplyKind.EXCEPTION.value) or self.changed is True

    @property
    def accepted(self) -> bool:
        """The device acted on it: a normal answer to a write, or an observed change."""
        return (self.writes and self.reply_kind == ReplyKind.NORMAL.value) or self.changed is True

    def as_record(self) -> dict[str, Any]:
        return {**asdict(self), "answered": self.answered, "came_through": self.came_through, "accepted": self.accepted}


class PolicyTest:
    """Runs one conduit policy test; `run()` returns the policy section of the results."""

    def __init__(self, config: PolicyTestConfig, on_result: Callable[[OperationResult], None] | None = None) -> None:
        from otfuzz.compliance.system import Policy
        from otfuzz.protocols import protocol_for

        if config.timeout <= 0:
            raise OtfuzzError(f"policy test timeout must be positive, got {config.timeout}")
        self.config = config
        self.target = parse_target(config.target)
        self.protocol = protocol_for(self.target)
        scope = Scope(config.scope)
        self.address = scope.check(self.target)
        self.observe: tuple[str, int] | None = None
        if config.observe:
            host, _, port = config.observe.rpartition(":")
            inside = parse_target(f"{self.target.scheme}://{host}:{port}")
            self.observe = (scope.check(inside), inside.port)
        self.policy = Policy(tuple(config.allow))
        rules = load_rules()["policy_test"]
        self.rules = rules
        table = rules["protocols"].get(self.protocol.name, {})
        self.observations = [self._observation(item) for item in table.get("observe", [])] if self.observe else []
        self.ops = operations(self.protocol, table.get("markers") if self.observations else None)
        self.on_result = on_result
        self.stop_requested = False

    def _observation(self, item: Mapping[str, Any]) -> bytes:
        template = next((t for t in self.protocol.templates() if t.name == item["operation"]), None)
        if template is None:
            raise OtfuzzError(f"policy test data names unknown {self.protocol.name} operation '{item['operation']}'")
        return template.encode(**dict(item.get("values", {})))

    def request_stop(self, reason: str = "stopped by operator") -> None:
        self.stop_requested = True

    # -- wire -----------------------------------------------------------------------------------

    async def _exchange(self, host: str, port: int, frame: bytes) -> tuple[str, bytes | None, float | None, str]:
        """Send one frame on a new connection: (reply kind, reply, latency, detail)."""
        from otfuzz.transport import open_connection

        timeout = self.config.timeout
        try:
            conn = await open_connection(self.protocol, host, port, timeout)
        except (ConnectionRefusedError, ConnectionResetError):
            return ReplyKind.RESET.value, None, None, "connection refused"
        except (TimeoutError, asyncio.TimeoutError):
            return ReplyKind.NO_REPLY.value, None, None, "connect timed out"
        except OSError as exc:
            return ReplyKind.RESET.value, None, None, f"cannot connect: {exc.strerror or exc}"
        try:
            result = await conn.exchange(frame, timeout)
        finally:
            conn.abort()
        latency = round(result.latency * 1000, 3)
        if result.outcome == "reply" and result.reply is not None:
            verdict = self.protocol.classify(frame, result.reply)
            return verdict.kind.value, result.reply, latency, verdict.detail
        kind = {"timeout": ReplyKind.NO_REPLY, "closed": ReplyKind.CLOSED, "reset": ReplyKind.RESET}[result.outcome]
        return kind.value, None, latency, result.outcome

    async def _snapshot(self) -> tuple[bytes, ...] | None:
        """The inside state the writes could change, read directly on the server; None if unreadable."""
        assert self.observe is not None
        out = []
        for frame in self.observations:
            kind, reply, _, _ = await self._exchange(self.observe[0], self.observe[1], frame)
            if kind != ReplyKind.NORMAL.value or reply is None:
                return None
            out.append(self.protocol.observed_state(reply))
        return tuple(out)

    async def _probe_inside(self, samples: int) -> list[float]:
        """Latencies of the protocol's health probe sent directly to the server (ms)."""
        if self.observe is None:
            return []
        probe = self.protocol.probe()
        out = []
        for _ in range(samples):
            kind, reply, latency, _ = await self._exchange(self.observe[0], self.observe[1], probe.frame)
            if reply is not None and self.protocol.probe_ok(reply) and latency is not None:
                out.append(latency)
        return out

    # -- the test -------------------------------------------------------------------------------

    async def run_operation(self, op: Operation) -> OperationResult:
        allowed = self.policy.allows(op.name, op.code, op.writes, op.disruptive)
        why_not = None
        if op.disruptive and not self.config.include_disruptive:
            why_not = "not sent: disruptive (restarts or reconfigures the device); use --include-disruptive"
        elif op.writes and self.config.read_only:
            why_not = "not sent: read-only test of a live target"
        if why_not:
            return OperationResult(op.name, op.code, op.writes, op.disruptive, allowed, False, None, why_not,
                                   None, None, "skipped", op.frame.hex(), None)
        before = await self._snapshot() if op.writes and self.observations else None
        kind, reply, latency, detail = await self._exchange(self.address, self.target.port, op.frame)
        changed: bool | None = None
        if before is not None:
            after = await self._snapshot()
            changed = None if after is None else after != before
        probe = OperationResult(op.name, op.code, op.writes, op.disruptive, allowed, True, kind, detail, latency, changed,
                                "", op.frame.hex(), reply.hex() if reply is not None else None)
        if allowed:
            outcome = "passed" if probe.answered or changed else "over-blocked"
        else:
            outcome = "violation" if probe.came_through else "blocked"
        return OperationResult(**{**asdict(probe), "outcome": outcome})

    async def run(self) -> dict[str, Any]:
        """Send every operation once (bounded by the template count and the timeout)."""
        baseline = await self._probe_inside(5)
        results: list[OperationResult] = []
        for op in self.ops:
            if self.stop_requested:
                break
            result = await self.run_operation(op)
            results.append(result)
            if self.on_result is not None:
                self.on_result(result)
        after = await self._probe_inside(1) if self.observe else []
        return self.section(results, baseline, bool(after) if self.observe else None)

    def section(self, results: Sequence[OperationResult], baseline: Sequence[float], alive_after: bool | None) -> dict[str, Any]:
        """The policy section of the results document: operations, summary, verdicts."""
        sent = [r for r in results if r.sent]
        allowed = [r for r in sent if r.allowed]
        disallowed = [r for r in sent if not r.allowed]
        violations = [r for r in disallowed if r.outcome == "violation"]
        accepted = [r for r in violations if r.accepted]
        notes: list[str] = []
        if allowed:
            conclusive = any(r.outcome == "passed" for r in allowed)
            if not conclusive:
                notes.append("none of the allowed operations came through: check the conduit endpoint; "
                             "refusals cannot be told from an endpoint that is not there")
        else:
            conclusive = bool(sent)
            if sent:
                notes.append("the policy allows nothing; an endpoint that is not there would look the same as a conduit that blocks")
        if self.config.read_only:
            notes.append("read-only (live target): no write was sent, so whether the conduit blocks writes is untested")
        if self.observe is None:
            notes.append("no inside observation endpoint: writes that changed the target unseen are not detected")
        elif not self.observations:
            notes.append(f"no observation reads are declared for {self.protocol.name}: changes are not checked")
        disruptive = [r.name for r in results if not r.sent and r.disruptive and not r.allowed]
        if disruptive:
            notes.append(f"disruptive operations not sent (their refusal is untested): {', '.join(disruptive)}")
        if len(results) < len(self.ops):
            notes.append(f"stopped after {len(results)} of {len(self.ops)} operations")
        section: dict[str, Any] = {
            "conduit": self.config.conduit,
            "channel": self.config.channel,
            "from_zone": self.config.from_zone,
            "to_zone": self.config.to_zone,
            "protocol": self.protocol.name,
            "endpoint": {"url": self.target.url, "address": self.address, "port": self.target.port},
            "observe": None if self.observe is None else {"address": self.observe[0], "port": self.observe[1]},
            "allow": list(self.config.allow),
            "operations": [r.as_record() for r in results],
            "summary": {
                "operations": len(self.ops), "sent": len(sent), "allowed": len(allowed), "disallowed": len(disallowed),
                "violations": len(violations), "accepted": len(accepted),
                "over_blocked": sum(r.outcome == "over-blocked" for r in allowed),
                "skipped": sum(not r.sent for r in results), "complete": len(results) == len(self.ops),
            },
            "conclusive": conclusive,
            "target_alive_after": alive_after,
            "baseline_ms": _baseline(baseline),
            "verdicts": policy_verdicts(self.rules["evidence"], violations, accepted, disallowed, conclusive,
                                        [r for r in results if not r.sent and not r.allowed and not r.disruptive]),
            "notes": notes,
        }
        section["group_verdicts"] = {"conduit-policy": group_verdict(section["verdicts"])}
        return section


def group_verdict(verdicts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The conduit-policy test group judged as a whole, for the requirement mapping: a leak fails
    it, a complete refusal passes it, anything short of that is inconclusive (never a pass)."""
    if any(v["verdict"] == "fail" for v in verdicts):
        return {"verdict": "fail", "reasons": [v["reason"] for v in verdicts if v["verdict"] == "fail"]}
    if verdicts and all(v["verdict"] == "pass" for v in verdicts):
        return {"verdict": "pass", "reasons": [verdicts[0]["reason"]]}
    return {"verdict": "inconclusive", "reasons": [v["reason"] for v in verdicts if v["verdict"] != "pass"] or ["nothing judged"]}


def policy_verdicts(evidence: Sequence[Mapping[str, Any]], violations: Sequence[OperationResult], accepted: Sequence[OperationResult],
                    disallowed: Sequence[OperationResult], conclusive: bool,
                    unsent: Sequence[OperationResult] = ()) -> list[dict[str, Any]]:
    """One verdict per requirement the data links policy tests to (pass, partial, fail or inconclusive).

    Disallowed operations left unsent (writes to a live target) make a pass partial; disruptive
    ones, never sent by default, are listed in the notes instead so that they do not cap SL-C.
    """
    out = []
    for item in evidence:
        against = violations if item["fails_when"] == "violation" else accepted
        names = [r.name for r in against]
        if against:
            what = "came through the conduit" if item["fails_when"] == "violation" else "were acted on by the device"
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
            verdict, reason = "fail", f"{len(against)} disallowed operation(s) {what}: {shown}"
        elif item["fails_when"] == "accepted":
            continue  # the device accepting nothing through a closed conduit says nothing about its input validation
        elif not conclusive:
            verdict, reason = "inconclusive", "the test could not show that the conduit endpoint carries the allowed traffic"
        elif not disallowed:
            verdict, reason = "inconclusive", "the policy allows every operation the test can send: nothing to refuse"
        elif unsent:
            verdict, reason = "partial", (f"all {len(disallowed)} disallowed operations sent were refused; {len(unsent)} were not sent "
                                          f"({', '.join(r.name for r in unsent[:3])}{', ...' if len(unsent) > 3 else ''})")
        else:
            verdict, reason = "pass", f"all {len(disallowed)} disallowed operations were refused"
        out.append({"requirement": item["requirement"], "strength": item["strength"], "verdict": verdict, "reason": reason,
                    "operations": names})
    return out


def _baseline(latencies: Sequence[float]) -> dict[str, Any]:
    if not latencies:
        return {}
    ordered = sorted(latencies)
    return {"median": round(median(ordered), 3), "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 3),
            "samples": len(ordered)}


# -- evidence store -------------------------------------------------------------------------------


async def run_policy_test(config: PolicyTestConfig, run_dir: Path, extra_meta: Mapping[str, Any] | None = None,
                          test: PolicyTest | None = None) -> dict[str, Any]:
    """Run a policy test into `run_dir` (a new evidence store); returns the policy section.

    The campaign record has kind "policy"; the policy section is stored under meta "policy",
    which the results document copies whole.
    """
    from otfuzz.store.evidence import EvidenceStore, now_iso

    test = test or PolicyTest(config)
    group = test.rules["group"]
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    store = EvidenceStore.create(Path(run_dir))
    t0 = time.monotonic()
    try:
        for key, value in (extra_meta or {}).items():
            store.set_meta(key, value)
        store.record_start("policy", config, {"url": test.target.url, "protocol": test.protocol.name, "address": test.address,
                                              "port": test.target.port, "identity": {}, "command": None})

        def record(result: OperationResult) -> None:
            elapsed = round(time.monotonic() - t0, 3)
            if result.sent and result.reply_kind:
                store.count(group, result.reply_kind)
            if result.outcome in ("violation", "over-blocked"):
                store.event(elapsed, f"policy-{result.outcome}", f"{result.name} (code {result.code}): {result.reply_kind} {result.reply_detail}")

        test.on_result = record
        status = "completed"
        try:
            section = await test.run()
        except asyncio.CancelledError:
            status = "interrupted"
            raise
        finally:
            elapsed = round(time.monotonic() - t0, 3)
            store.flush(len(test.ops), elapsed, None)
            if status == "interrupted" or test.stop_requested:
                status = "interrupted"
            meta = store.get_meta("campaign")
            meta.update({"status": status, "ended_at": now_iso(), "elapsed_s": elapsed,
                         "stop_reason": "stopped by operator" if status == "interrupted" else "every operation sent once"})
            store.set_meta("campaign", meta)
        store.set_meta("liveness", {
            "method": ("the protocol's health probe sent directly to the server inside the zone" if test.observe
                       else "not measured: no inside observation endpoint"),
            "probe_request_hex": test.protocol.probe().frame.hex(),
            "baseline_ms": section["baseline_ms"],
            "case_timeout_ms": round(config.timeout * 1000, 3),
        })
        store.set_meta("policy", section)
        if not section["summary"]["complete"]:
            meta = store.get_meta("campaign")
            meta["status"] = "interrupted"
            store.set_meta("campaign", meta)
        return section
    finally:
        store.close()
