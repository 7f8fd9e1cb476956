"""Test cases: pure values derived from (campaign seed, case id).

Nothing here depends on time, the network or earlier cases, so any case can be regenerated and
replayed byte for byte from the seed and configuration alone: the basis of `otfuzz replay`,
confirmation and `--resume` with the same case ids.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class TestCase:
    """One test case: a valid prefix of requests (possibly empty) followed by the faulty one."""

    __test__ = False  # not a pytest test class

    case_id: int
    group: str
    frames: tuple[bytes, ...]
    template: str
    description: str
    fault: str = ""  # the structural fault of the last frame, when the case carries one
    pattern: Any = None  # a connection-level case: its engine.connection.ConnectionPattern
    parent: int | None = None  # the corpus entry a feedback case came from

    @property
    def request(self) -> bytes:
        """The frame under test: the last one sent."""
        return self.frames[-1]


def case_rng(seed: int, case_id: int, salt: str = "") -> random.Random:
    """A random generator that depends only on (seed, case id, salt).

    Hashing keeps neighbouring ids uncorrelated and is stable across Python versions and
    processes (unlike `hash()`), so a case generated today replays the same next year.
    """
    digest = hashlib.blake2b(f"{seed}:{case_id}:{salt}".encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))
