"""Requirements met by other means: the user's file of non-test evidence, each with a reference.

A fuzzer cannot show that a component has, say, a documented hardening guide; an assessor can
accept a documentation review or configuration inspection instead. The file lists such
requirements with the reference an assessor can check, or marks a requirement not applicable
(feature absent) with its justification:

    requirements:
      - id: CR 3.3
        reference: Design review DR-17, section 4
        method: documentation review        # optional
      - id: CR 2.2
        status: not-applicable
        reference: Datasheet rev C - the device has no wireless interface
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from otfuzz.compliance.catalogue import Catalogue, read_yaml
from otfuzz.compliance.verdicts import OtherMeans
from otfuzz.errors import OtfuzzError

STATUSES = ("met", "not-applicable")


def load_other_means(path: Path, catalogue: Catalogue) -> tuple[OtherMeans, ...]:
    """Read and check a met-by-other-means file against the catalogue."""
    data, _ = read_yaml(path, "met-by-other-means file")
    items = data.get("requirements") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise OtfuzzError(f"met-by-other-means file {path} needs a 'requirements' list (entries with id and reference)")
    return parse_other_means(items, catalogue, str(path))


def parse_other_means(items: list[Any], catalogue: Catalogue, source: str = "other means") -> tuple[OtherMeans, ...]:
    """Check entries already parsed from YAML or JSON; see the module docstring for the shape."""
    claims: dict[str, OtherMeans] = {}
    for number, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "id" not in item:
            raise OtfuzzError(f"{source}: entry {number} needs an 'id' and a 'reference'")
        req_id = str(item["id"]).strip()
        if req_id not in catalogue:
            raise OtfuzzError(f"{source}: entry {number} references unknown requirement '{req_id}'")
        reference = str(item.get("reference") or "").strip()
        if not reference:
            raise OtfuzzError(f"{source}: {req_id} has no reference (say where an assessor can check it)")
        status = str(item.get("status", "met")).strip()
        if status not in STATUSES:
            raise OtfuzzError(f"{source}: {req_id} has status '{status}', expected one of {', '.join(STATUSES)}")
        if req_id in claims:
            raise OtfuzzError(f"{source}: {req_id} is listed twice")
        method = str(item.get("method") or ("justification" if status == "not-applicable" else "documentation review"))
        claims[req_id] = OtherMeans(req_id, reference, method.strip(), status)
    return tuple(claims.values())
