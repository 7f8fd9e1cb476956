"""Anomaly classes and the first-look judgement of a case outcome.

A case outcome alone rarely proves a fault: silence after a malformed frame is correct
behaviour for many devices. This module decides which outcomes are worth a health probe and
which anomaly class a candidate becomes once the probe has spoken.
"""

from __future__ import annotations

from enum import Enum

from otfuzz.protocols.base import ReplyKind


class AnomalyClass(str, Enum):
    CRASH = "crash"  # the target stops accepting connections (or its process died)
    HANG = "hang"  # accepts connections but the probe gets no answer in time; recovers by itself
    DEGRADATION = "degradation"  # the probe answers, far slower than the learned baseline
    UNRESPONSIVE_AFTER = "unresponsive-after"  # answers nothing from some case on until restarted
    MALFORMED_REPLY = "malformed-reply"  # a reply that does not parse or does not match the request
    SPEC_VIOLATION = "spec-violation"  # answered normally where the specification says reject
    CONNECTION_RESET = "connection-reset"  # the target reset or closed the connection on a valid request
    SLOW_REPLY = "slow-reply"  # a request answered far later than the probe, while the probe stays healthy

    @property
    def family(self) -> str:
        """Classes that one replay can tell apart (a hang and a lasting hang look alike at first)."""
        if self in (AnomalyClass.HANG, AnomalyClass.UNRESPONSIVE_AFTER):
            return "unresponsive"
        return self.value

    @property
    def target_level(self) -> bool:
        """True when the health probe, not the reply, shows the anomaly."""
        return self in (AnomalyClass.CRASH, AnomalyClass.HANG, AnomalyClass.DEGRADATION, AnomalyClass.UNRESPONSIVE_AFTER)


REPLY_CANDIDATES: dict[ReplyKind, AnomalyClass] = {
    ReplyKind.MALFORMED: AnomalyClass.MALFORMED_REPLY,
    ReplyKind.SPEC_VIOLATION: AnomalyClass.SPEC_VIOLATION,
    ReplyKind.RESET: AnomalyClass.CONNECTION_RESET,
    ReplyKind.CLOSED: AnomalyClass.CONNECTION_RESET,
}


def first_look(kind: ReplyKind, request_valid: bool, silent_streak: int, streak_limit: int = 3,
               slow: bool = False) -> tuple[bool, AnomalyClass | None]:
    """(probe now?, reply-level candidate) for one case outcome.

    A reset or close in answer to a malformed frame is a legitimate rejection (closing on
    garbage while unread bytes remain makes the kernel send RST): a reply class, not an anomaly.
    It is one only after a valid request. Silence is suspicious only after a valid request, or
    when it repeats (the target may have stopped serving). A reply far slower than the probe is
    a slow-reply candidate, decided by the probe that follows.
    """
    if kind in (ReplyKind.RESET, ReplyKind.CLOSED):
        if request_valid:
            return True, AnomalyClass.CONNECTION_RESET
        return silent_streak >= streak_limit, None
    candidate = REPLY_CANDIDATES.get(kind)
    if candidate is not None:
        return True, candidate
    if kind is ReplyKind.NO_REPLY:
        return (request_valid or silent_streak >= streak_limit), None
    if slow:
        return True, AnomalyClass.SLOW_REPLY
    return False, None
