"""Learned silence: per fault kind (one rule a faulty frame breaks, values blanked), has the
target ever answered a frame that broke it?

Many targets drop a faulty frame without a word (pymodbus drops any frame with a bad MBAP
header, and everything after it on that connection), so every such case waits out the silence
timeout for nothing: at defaults that wait is most of a campaign's time. Once frames breaking
one rule have gone unanswered `LEARN_AFTER` times and none was ever answered, a frame breaking
that rule is not waited for at all: the case runner parks its connection for the usual silence
wait and moves on. An answer that does come is still read on the parked connection, judged,
recorded against its own case (see `CaseRunner`) and counted by what it drew, not as no reply;
the first answer to a frame ends the learning of every rule that frame broke, for good (up to
its length: see below). No verdict gets weaker: what the usual wait would have caught is still
caught. Where a second connection would displace the first (DNP3) there is no parking, and such
a frame waits in full as before.

A learned drop is also no sign that the target stopped serving: it does not count toward the
run of silences after which the campaign probes the target (one that did stop is found out by
the next valid request, a closed connection or the periodic probe). Against dnp3py, such runs
cost a probe every third faulty frame.

The kind is the rule alone, not the rule with the request type: what decides silence is the
fault (a foreign protocol id, a length past the bytes sent), and a frame usually breaks several
rules, so (request type, rule set) kinds came to 467 in a 10 s campaign against pymodbus and
most were never met often enough to be learned. A rule some request type does get answered for
is simply never learned: a coarse kind costs speed, never a verdict. So the whole set of rules a
frame breaks is learned too, as one more kind: pymodbus answered a frame or two whose ADU ran
past 256 bytes, so that rule was never learned, yet each set it came in (with a byte count that
disagrees, say) was dropped every time, and those frames waited in full, 1.1 s in 10 s. And
each rule is learned on each request type apart as well ("read_file_record|ADU of # bytes
exceeds the #-byte maximum"): a rule answered on one request type may be dropped on every
other, and so may a set that is new each time (against pymodbus, 184 of 254 full waits in 15 s
were frames whose every rule had been answered somewhere, in a set not yet met four times).

Many targets also drop every frame past a buffer's size and answer shorter ones that break the
same rule (pymodbus answers a Modbus/TCP ADU of up to 264 bytes, past the 260-byte maximum, and
drops longer ones), and a kind blanks the sizes. So a kind that was answered is learned above a
length too: once `LEARN_AFTER` frames of it longer than any it was answered for went unanswered,
a frame of it at least as long as those is not waited for (in 15 s against pymodbus, 275 of 368
full waits were such frames, and none of them was answered). An answer to a longer frame
raises the bar and the learning starts again above it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence

from otfuzz.engine.findings import trigger_of
from otfuzz.protocols.base import Protocol

LEARN_AFTER = 4
"""Unanswered frames breaking one rule (and no answer ever) before that rule is learned."""
QUICK_WAIT = 0.0
"""Seconds a learned-silent frame is waited for before its connection is parked: none (the
event loop still reads what has already arrived)."""
KEY_CACHE = 8192
_UNKNOWN = 1 << 62
"""The longest answered frame of a kind answered at a length nobody gave: no length is above it."""
TYPED = "|"
"""Between a request type and a rule in a kind learned on that request type (as in a trigger's text)."""


class SilenceBook:
    """Shared by a campaign's workers: what frames breaking each rule have drawn so far."""

    def __init__(self, protocol: Protocol, learn_after: int = LEARN_AFTER,
                 rules: Callable[[bytes], Sequence[str]] | None = None) -> None:
        self.protocol = protocol
        self.rules = rules  # a memo of check_request (otfuzz.engine.rules), shared with the campaign
        self.learn_after = learn_after
        self._silent: dict[str | tuple[str, ...], int] = {}  # per rule, and per set of rules
        self._answered: set[str | tuple[str, ...]] = set()
        # per answered kind: the longest frame answered, and the shortest `learn_after` frames
        # longer than it that went unanswered (in order)
        self._longest: dict[str | tuple[str, ...], int] = {}
        self._above: dict[str | tuple[str, ...], list[int]] = {}
        self._kinds: dict[bytes, tuple[str, ...]] = {}

    def kinds(self, frame: bytes) -> tuple[str, ...]:
        """The fault kinds of a frame: the rules it breaks, values blanked, then each of them on
        the frame's request type (`TYPED`); cached by frame."""
        kinds = self._kinds.get(frame)
        if kinds is None:
            if len(self._kinds) >= KEY_CACHE:
                self._kinds.clear()
            trigger = trigger_of(self.protocol, frame, self.rules)
            kinds = self._kinds[frame] = (*trigger.rules, *(f"{trigger.request_type}{TYPED}{rule}" for rule in trigger.rules))
        return kinds

    def learned(self, kinds: tuple[str, ...], length: int | None = None) -> bool:
        """True when one of these kinds, or this set of them, was always dropped, often enough
        to stop waiting for it; or, for a frame of `length` bytes, always dropped when as long."""
        n = self.learn_after
        for kind in _with_set(kinds):
            if kind not in self._answered:
                if self._silent.get(kind, 0) >= n:
                    return True
            elif length is not None:
                above = self._above.get(kind)
                if above is not None and len(above) >= n and above[n - 1] <= length:
                    return True
        return False

    def note(self, kinds: tuple[str, ...], answered: bool, length: int | None = None) -> None:
        """What a frame (of `length` bytes) breaking these rules drew: an answer ends the learning
        of each of them and of the set, except above the longest frame answered."""
        for kind in _with_set(kinds):
            if answered:
                self._answered.add(kind)
                self._silent.pop(kind, None)
                longest = length if length is not None else _UNKNOWN  # (unknown: never learned above)
                if longest > self._longest.get(kind, -1):
                    self._longest[kind] = longest
                    above = self._above.get(kind)
                    if above:
                        self._above[kind] = [each for each in above if each > longest]
            elif kind not in self._answered:
                self._silent[kind] = self._silent.get(kind, 0) + 1
            elif length is not None and length > self._longest[kind]:
                above = self._above.setdefault(kind, [])
                bisect.insort(above, length)
                del above[self.learn_after:]

    def as_record(self) -> dict[str, object]:
        """For the search summary: which kinds the target was learned to drop."""
        learned = sorted(k for k in self._silent if isinstance(k, str) and TYPED not in k and self.learned((k,)))
        typed = sum(1 for k in self._silent if isinstance(k, str) and TYPED in k and self.learned((k,)))
        sets = sum(1 for k in self._silent if isinstance(k, tuple) and k not in self._answered
                   and self._silent[k] >= self.learn_after)
        above = sum(1 for k in self._above if len(self._above[k]) >= self.learn_after)
        return {"learned_silent": len(learned), "learned_silent_on_a_request_type": typed, "learned_silent_sets": sets,
                "learned_silent_above_a_length": above,
                "answered_kinds": sum(1 for k in self._answered if isinstance(k, str) and TYPED not in k),
                "kinds": learned[:50]}


def _with_set(kinds: tuple[str, ...]) -> tuple[str | tuple[str, ...], ...]:
    """The kinds, and the set of the rules when there are several (one rule is its own set)."""
    rules = tuple(k for k in kinds if TYPED not in k)
    return (*kinds, rules) if len(rules) > 1 else kinds
