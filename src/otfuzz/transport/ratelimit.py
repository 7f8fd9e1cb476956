"""A rate cap shared by every worker of a campaign.

Fragile field devices fall over under load a workstation shrugs off; the operator sets a ceiling
in cases (or requests) per second and it holds across all concurrent connections.
"""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    """Spaces acquisitions at least 1/rate apart (no bursts); rate None or 0 means unlimited."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 1.0 / rate if rate else 0.0
        self._next = 0.0

    async def acquire(self) -> None:
        if not self.interval:
            return
        now = time.monotonic()
        slot = max(now, self._next)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
