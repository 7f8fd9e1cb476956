"""What every recorded configuration shares: a dict form for the evidence store, reloading
for --resume, and a SHA-256 an auditor can compare across reports."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, fields
from typing import Any, TypeVar

C = TypeVar("C", bound="RecordedConfig")


class RecordedConfig:
    """Mixin for dataclass configurations stored whole in the evidence."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Rebuild from a stored dict, ignoring keys a later version no longer knows."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known})

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


def parse_duration(text: str) -> float:
    """'90', '90s', '10m', '2h', '1h30m' -> seconds; ValueError naming the problem otherwise.

    Durations appear in commands, plans and agent tasks alike, so they parse in one place."""
    match = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not match or not any(match.groups()):
        raise ValueError(f"bad duration '{text}' (examples: 30s, 10m, 2h)")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"duration must be positive, got '{text}'")
    return total
