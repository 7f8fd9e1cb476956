"""Learned silence: per kind of faulty frame (its request type and the rules it breaks), has the
target ever answered it?

Many targets drop a faulty frame without a word (pymodbus drops any frame with a bad MBAP
header, and everything after it on that connection), so every such case waits out the silence
timeout for nothing: at defaults that wait is most of a campaign's time. Once one kind of
frame has gone unanswered `LEARN_AFTER` times and was never answered, the case runner waits for
it only `QUICK_WAIT`, then parks its connection for the rest of the usual wait and moves on: an
answer that does come is still read on the parked connection, judged and recorded against its
own case (see `CaseRunner`), and the first answer to a kind ends the learning for that kind
for good. No verdict gets weaker: what the usual wait would have caught is still caught.
"""

from __future__ import annotations

from otfuzz.engine.findings import trigger_of
from otfuzz.protocols.base import Protocol

LEARN_AFTER = 4
"""Unanswered cases of one kind (and no answer ever) before its wait is shortened."""
QUICK_WAIT = 0.0005
"""Seconds a learned-silent frame is waited for before its connection is parked."""
KEY_CACHE = 8192


class SilenceBook:
    """Shared by a campaign's workers: what each kind of faulty frame has drawn so far."""

    def __init__(self, protocol: Protocol, learn_after: int = LEARN_AFTER) -> None:
        self.protocol = protocol
        self.learn_after = learn_after
        self._silent: dict[str, int] = {}
        self._answered: set[str] = set()
        self._keys: dict[bytes, str] = {}

    def key(self, frame: bytes) -> str:
        """The kind of a frame: its request type's family (a sub-function's parent) and the rules
        it breaks, values blanked: coarse, so that a campaign learns each kind within seconds."""
        key = self._keys.get(frame)
        if key is None:
            if len(self._keys) >= KEY_CACHE:
                self._keys.clear()
            trigger = trigger_of(self.protocol, frame)
            key = self._keys[frame] = f"{trigger.request_type.split('/')[0]}|{'; '.join(trigger.rules)}"
        return key

    def learned(self, key: str) -> bool:
        """True when the target has always dropped this kind, often enough to stop waiting long."""
        return key not in self._answered and self._silent.get(key, 0) >= self.learn_after

    def note(self, key: str, answered: bool) -> None:
        if answered:
            self._answered.add(key)
            self._silent.pop(key, None)
        elif key not in self._answered:
            self._silent[key] = self._silent.get(key, 0) + 1

    def as_record(self) -> dict[str, object]:
        """For the search summary: which kinds the target was learned to drop."""
        learned = sorted(k for k in self._silent if self.learned(k))
        return {"learned_silent": len(learned), "answered_kinds": len(self._answered), "kinds": learned[:50]}
