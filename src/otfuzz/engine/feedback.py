"""Reply-guided feedback: observers, the novelty feedback, the corpus, and lineage.

Without coverage (a PLC's firmware cannot be instrumented), what otfuzz can see of one case is
its reply: the request type, the reply kind, the exception or error code, the reply's length and
its latency. The *observation* of a case is that tuple, bucketed (lengths and latencies by powers
of two); the *feedback* calls a case interesting when its observation was never seen, or when it
opened a finding; interesting cases enter the *corpus*, and a share of the mutation budget then
mutates corpus entries instead of templates (LibAFL's names for these parts).

Cases stay reproducible: a case derived from the corpus, or drawing values the target reported,
records its *lineage* (which corpus entry, how many reported values were known), committed with
the resume point; replay and `--resume` regenerate it from that record byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from otfuzz.engine.findings import blank_values
from otfuzz.engine.values import Dictionary

CORPUS_LIMIT = 4096
"""Entries kept at most; beyond it, new behaviour still counts but no longer grows the corpus."""


@dataclass(frozen=True)
class CorpusEntry:
    id: int
    case_id: int
    frames: tuple[bytes, ...]
    reason: str  # the observation that was new, or "finding N"


@dataclass(frozen=True)
class Lineage:
    """What a case was derived from, besides seed and id."""

    parent: int | None = None  # corpus entry id
    observed: int = 0  # how many target-reported values the dictionary held


def observation(request_type: str, reply_kind: str, detail: str, reply_length: int, latency_s: float) -> str:
    """The bucketed observation of one case: what reply-guided feedback calls new or known."""
    length_bucket = 0 if reply_length <= 0 else int(math.log2(reply_length)) + 1
    latency_bucket = 0 if latency_s <= 0 else max(0, int(math.log2(latency_s * 10_000)))  # 0.1 ms units
    return f"{request_type}|{reply_kind}|{blank_values(detail)[:60]}|len~2^{length_bucket}|lat~2^{latency_bucket}"


@dataclass
class Feedback:
    """The live corpus and dictionary of a campaign (or their record, for replay).

    In a campaign `live` is True: `choose` picks a corpus entry for a case and remembers the
    lineage until the store commits it. For replay, the corpus and the lineage of each case come
    from the store and `choose` returns what was recorded.
    """

    dictionary: Dictionary
    live: bool = True
    entries: list[CorpusEntry] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    lineage: dict[int, Lineage] = field(default_factory=dict)  # case id -> lineage (pending commit, or loaded)
    recorded: dict[int, Lineage] | None = None  # for replay: every case's recorded lineage
    sizes: list[tuple[float, int]] = field(default_factory=list)  # (campaign time, corpus size) samples
    lookup: Callable[[int], Lineage | None] | None = None  # committed lineage (the store), for old case ids
    horizon: int = -1  # the highest case id generated live so far
    _fresh: int | None = None  # the id choose() last generated live (no lineage of it is stored)

    def by_id(self, entry_id: int) -> CorpusEntry | None:
        return self.entries[entry_id - 1] if 0 < entry_id <= len(self.entries) else None

    def _recorded(self, case_id: int) -> Lineage | None:
        found = self.lineage.get(case_id)
        if found is None and self.recorded is not None:
            found = self.recorded.get(case_id)
        if found is None and self.lookup is not None:
            found = self.lookup(case_id)
        return found

    def choose(self, case_id: int, pick: int) -> tuple[CorpusEntry | None, int]:
        """(the corpus entry case `case_id` mutates, or None for a template; observed values known).

        A case generated before (replay, confirmation, or a retry within one generation) gets
        what it got then; a new one the current corpus and dictionary, recorded as its lineage.
        """
        if not self.live or case_id <= self.horizon:
            self._fresh = None
            record = self._recorded(case_id)
            if record is None:
                return None, 0
            return (self.by_id(record.parent) if record.parent else None), record.observed
        self.horizon = self._fresh = case_id
        observed = len(self.dictionary.observed)
        entry = self.entries[pick % len(self.entries)] if self.entries else None
        if entry is not None or observed:
            self.lineage[case_id] = Lineage(entry.id if entry else None, observed)
        return entry, observed

    def observed_for(self, case_id: int) -> int:
        """How many target-reported values a case that draws from the dictionary may use."""
        if not self.live or case_id < self.horizon:
            record = self._recorded(case_id)
            return record.observed if record else 0
        if case_id > self.horizon or case_id == self._fresh:
            record = self.lineage.get(case_id)  # a new id: what choose() just gave it, never a stored lineage
        else:
            record = self._recorded(case_id)  # (the last id generated, generated again: it may be stored)
        self.horizon = case_id
        observed = len(self.dictionary.observed)
        if observed:
            self.lineage[case_id] = Lineage(record.parent if record else None, observed)
        return observed

    def novel(self, key: str) -> bool:
        if key in self.seen:
            return False
        self.seen.add(key)
        return True

    def add(self, case_id: int, frames: Iterable[bytes], reason: str) -> CorpusEntry | None:
        if len(self.entries) >= CORPUS_LIMIT:
            return None
        entry = CorpusEntry(len(self.entries) + 1, case_id, tuple(frames), reason)
        self.entries.append(entry)
        return entry


def recorded_feedback(protocol_dictionary: Dictionary, store: object) -> Feedback:
    """The corpus, reported values and lineage a run recorded, for regenerating its cases."""
    feedback = Feedback(protocol_dictionary, live=False)
    for _, case_id, frames, reason, _ in store.corpus():  # type: ignore[attr-defined]
        feedback.add(case_id, frames, reason)
    protocol_dictionary.observe(store.observed_values())  # type: ignore[attr-defined]

    def lookup(case_id: int) -> Lineage | None:
        found = store.lineage_of(case_id)  # type: ignore[attr-defined]
        return None if found is None else Lineage(*found)

    feedback.lookup = lookup
    return feedback
