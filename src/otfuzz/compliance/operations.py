"""A protocol's requests as the operations a conduit policy allows or denies.

Shared by the system model (which checks that a policy names real operations) and the policy
test (which sends them), so neither has to import the other.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from otfuzz.protocols.base import Protocol


@dataclass(frozen=True)
class Operation:
    """One request the test can send: a protocol template, possibly with marker values."""

    name: str
    code: int | None  # the protocol's function code, when its messages have one
    writes: bool
    disruptive: bool
    frame: bytes
    marked: bool = False


def operations(protocol: Protocol, markers: Mapping[str, Mapping[str, Any]] | None = None) -> list[Operation]:
    """Every template of `protocol` as an Operation; `markers` override field values by template name."""
    out = []
    for template in protocol.templates():
        overrides = dict((markers or {}).get(template.name, {}))
        frame = template.encode(**overrides)
        out.append(Operation(template.name, template.code, template.writes, template.disruptive, frame, bool(overrides)))
    return out
