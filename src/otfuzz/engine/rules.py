"""The rules a frame breaks, remembered for recent frames.

`Protocol.check_request` is pure and one of the costlier calls per case: the case runner
checks a frame before sending it, the pipelining test checks it, the campaign reads its
trigger from the same rules, and the silence book its fault kinds. Against pymodbus that was
three to four checks per frame, on the path between one answer and the next request. The
campaign checks each frame once, while the target works on the case before (see
`Campaign._worker`), and every later caller reads the memo.
"""

from __future__ import annotations

from otfuzz.protocols.base import Protocol

MEMO_SIZE = 512
"""Frames remembered: a case's frames stay in memo from its generation to its verdict, and
the frames that repeat (boundary values, sync and probe requests) keep being found."""


class RuleMemo:
    """`protocol.check_request` with a bounded memory (cleared when full: no ordering kept)."""

    def __init__(self, protocol: Protocol, size: int = MEMO_SIZE) -> None:
        self.protocol = protocol
        self.size = size
        self._memo: dict[bytes, tuple[str, ...]] = {}

    def __call__(self, frame: bytes) -> tuple[str, ...]:
        found = self._memo.get(frame)
        if found is None:
            if len(self._memo) >= self.size:
                self._memo.clear()
            found = self._memo[frame] = tuple(self.protocol.check_request(frame))
        return found
