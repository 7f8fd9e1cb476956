"""The IEC 62443 requirements catalogue, loaded from package data and checked before use.

The catalogue (`data/catalogue.yaml`, a copy of the project's reference catalogue) holds the
identifiers, short titles and lowest security level (`sl_min`) of every 3-3 system requirement,
4-2 component requirement (common and per component type), 4-1 practice requirement, 3-2 zone
and conduit requirement and 2-4 service-provider requirement. This module flattens it into one
index of `Requirement`s and answers "which requirements apply to this kind of object". It
refuses a catalogue whose cross-references (selection tables, parents, `see` lists, Table 3)
name a requirement it does not define, so a typo cannot silently drop a requirement.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from otfuzz.errors import OtfuzzError

SYSTEM = "system"  # the 3-3 object type; the component types are the keys of COMPONENT_TYPES

# User-facing component type names (IEC 62443-4-2 clause 3 wording) -> catalogue codes.
COMPONENT_TYPES: Mapping[str, str] = MappingProxyType({
    "embedded-device": "EDR",
    "host-device": "HDR",
    "network-device": "NDR",
    "software-application": "SAR",
})

SECURITY_LEVELS = (1, 2, 3, 4)


@dataclass(frozen=True)
class Requirement:
    """One requirement or requirement enhancement, as an assessor would cite it."""

    id: str
    title: str
    part: str  # "3-3", "4-2", "4-1", "3-2" or "2-4"
    fr: str | None = None  # foundational requirement whose SL-C it counts toward
    sl_min: int | None = None  # lowest SL at which it is selected; None: not part of any SL
    parent: str | None = None  # base requirement of an RE, common CR of a type-specific one
    applies_to: frozenset[str] = frozenset()  # 4-2 component type codes it applies to
    clause: str | None = None
    confidence: str = "high"

    @property
    def is_enhancement(self) -> bool:
        return " RE(" in self.id


@dataclass(frozen=True)
class FoundationalRequirement:
    id: str
    abbreviation: str
    name: str


@dataclass(frozen=True)
class IndependenceRow:
    """A row of IEC 62443-4-1 Table 3: the tester independence a kind of testing needs."""

    test_type: str
    reference: str
    independence: str


@dataclass(frozen=True)
class Catalogue:
    """The flattened, validated catalogue. Built by `load_catalogue`."""

    requirements: Mapping[str, Requirement]
    foundational_requirements: tuple[FoundationalRequirement, ...]
    independence_table: tuple[IndependenceRow, ...]
    editions: Mapping[str, str]
    title: str
    sha256: str
    source: str

    def __contains__(self, requirement_id: object) -> bool:
        return requirement_id in self.requirements

    def __iter__(self) -> Iterator[Requirement]:
        return iter(self.requirements.values())

    def get(self, requirement_id: str) -> Requirement:
        try:
            return self.requirements[requirement_id]
        except KeyError:
            raise OtfuzzError(f"unknown IEC 62443 requirement '{requirement_id}' (not in the catalogue)") from None

    def fr(self, fr_id: str) -> FoundationalRequirement:
        for fr in self.foundational_requirements:
            if fr.id == fr_id:
                return fr
        raise OtfuzzError(f"unknown foundational requirement '{fr_id}'")

    def applicable(self, object_type: str) -> list[Requirement]:
        """Requirements that count toward SL-C for `object_type` ("system" or a type code).

        3-3 SRs and REs for a system; for a component, the common CRs and REs plus those
        specific to its type (security_levels.md section 4). Entries without an `sl_min`
        (headings such as CR 3.2 that exist only in type-specific form) never count.
        """
        if object_type == SYSTEM:
            return [r for r in self if r.part == "3-3" and r.sl_min is not None]
        if object_type not in COMPONENT_TYPES.values():
            raise OtfuzzError(f"unknown component type code '{object_type}'")
        return [r for r in self if r.part == "4-2" and r.sl_min is not None and object_type in r.applies_to]

    def in_scope(self, requirement: Requirement, object_type: str | None) -> bool:
        """Whether a requirement belongs in the report for `object_type` (None: everything).

        A component report covers 4-2 requirements of that type and the 4-1 process
        requirements; system requirements stay out (robustness_mapping.md section 4, item 11).
        """
        if object_type is None:
            return True
        if requirement.part == "4-1":
            return True
        if object_type == SYSTEM:
            return requirement.part == "3-3"
        return requirement.part == "4-2" and object_type in requirement.applies_to


def catalogue_path() -> Path:
    """The catalogue shipped with otfuzz."""
    return Path(str(resources.files("otfuzz.compliance").joinpath("data/catalogue.yaml")))


def read_yaml(path: Path, what: str) -> tuple[Any, str]:
    """Parsed YAML and the SHA-256 of its bytes; every way it can be unreadable is one clear error."""
    try:
        text = Path(path).read_bytes()
    except OSError as exc:
        raise OtfuzzError(f"cannot read {what} {path}: {exc.strerror}") from None
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(text, Loader=loader), hashlib.sha256(text).hexdigest()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise OtfuzzError(f"{what} {path} is not valid YAML{where}") from None


def load_catalogue(path: Path | None = None) -> Catalogue:
    """Load and validate a catalogue file (default: the one shipped with otfuzz)."""
    path = Path(path) if path is not None else catalogue_path()
    data, digest = read_yaml(path, "catalogue")
    if not isinstance(data, dict):
        raise OtfuzzError(f"catalogue {path} is not a mapping of catalogue sections")
    try:
        return _build(data, digest, str(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise OtfuzzError(f"catalogue {path} is malformed: {type(exc).__name__} {exc}") from None


# -- building ----------------------------------------------------------------------------------


def _build(data: dict[str, Any], digest: str, source: str) -> Catalogue:
    frs = tuple(
        FoundationalRequirement(str(f["id"]), str(f["abbreviation"]), str(f["name"]))
        for f in data["foundational_requirements"]
    )
    fr_ids = {f.id for f in frs}
    index: dict[str, Requirement] = {}
    for requirement in _flatten(data):
        if requirement.id in index:
            raise OtfuzzError(f"catalogue {source} defines requirement '{requirement.id}' twice")
        if requirement.sl_min is not None and requirement.sl_min not in SECURITY_LEVELS:
            raise OtfuzzError(f"catalogue {source}: {requirement.id} has sl_min {requirement.sl_min}, expected 1-4 or null")
        if requirement.fr is not None and requirement.fr not in fr_ids:
            raise OtfuzzError(f"catalogue {source}: {requirement.id} names unknown foundational requirement '{requirement.fr}'")
        index[requirement.id] = requirement
    table = tuple(
        IndependenceRow(str(row["test_type"]), str(row["reference"]), str(row["independence"]))
        for row in data.get("iec_62443_4_1", {}).get("svv_tester_independence_table_3", [])
    )
    _check_references(data, index, table, source)
    meta = data.get("meta", {})
    return Catalogue(
        requirements=MappingProxyType(index),
        foundational_requirements=frs,
        independence_table=table,
        editions=MappingProxyType(dict(meta.get("editions_assumed", {}))),
        title=str(meta.get("title", "IEC 62443 requirements catalogue")),
        sha256=digest,
        source=source,
    )


def _flatten(data: dict[str, Any]) -> Iterable[Requirement]:
    for sr in data.get("iec_62443_3_3", {}).get("system_requirements", []):
        yield _entry(sr, "3-3", fr=sr["fr"])
        for re in sr.get("requirement_enhancements", []):
            yield _entry(re, "3-3", fr=sr["fr"], parent=sr["id"])
    part42 = data.get("iec_62443_4_2", {})
    for cr in part42.get("component_requirements", []):
        applies = frozenset(cr["applies_to"]) if isinstance(cr.get("applies_to"), list) else frozenset()
        yield _entry(cr, "4-2", fr=cr["fr"], applies_to=applies)
        for re in cr.get("requirement_enhancements", []):
            yield _entry(re, "4-2", fr=cr["fr"], parent=cr["id"], applies_to=applies)
    for code, section in part42.get("component_type_specific_requirements", {}).items():
        for item in section.get("requirements", []):
            if item.get("component_type", code) != code:
                raise ValueError(f"{item['id']} is filed under {code} but says {item['component_type']}")
            yield _entry(item, "4-2", fr=item["fr"], parent=item.get("parent"), applies_to=frozenset({code}))
            for re in item.get("requirement_enhancements", []):
                yield _entry(re, "4-2", fr=item["fr"], parent=item["id"], applies_to=frozenset({code}))
    for practice in data.get("iec_62443_4_1", {}).get("practices", []):
        for item in practice.get("requirements", []):
            yield _entry(item, "4-1", parent=practice["id"])
    for zcr in data.get("iec_62443_3_2", {}).get("zone_and_conduit_requirements", []):
        yield _entry(zcr, "3-2")
        for sub in zcr.get("sub_requirements", []):
            yield _entry(sub, "3-2", parent=zcr["id"])
    for area in data.get("iec_62443_2_4", {}).get("functional_areas", []):
        yield _entry(area, "2-4")
        for item_id in area.get("requirement_ids", []):
            yield Requirement(id=str(item_id), title=str(area["title"]), part="2-4", parent=str(area["id"]),
                              confidence=str(area.get("confidence", "high")))


def _entry(item: Mapping[str, Any], part: str, *, fr: str | None = None, parent: str | None = None,
           applies_to: frozenset[str] = frozenset()) -> Requirement:
    sl_min = item.get("sl_min")
    return Requirement(
        id=str(item["id"]),
        title=str(item["title"]),
        part=part,
        fr=fr,
        sl_min=int(sl_min) if sl_min is not None else None,
        parent=parent,
        applies_to=applies_to,
        clause=str(item["clause"]) if item.get("clause") is not None else None,
        confidence=str(item.get("confidence", "high")),
    )


def _check_references(data: dict[str, Any], index: Mapping[str, Requirement], table: tuple[IndependenceRow, ...],
                      source: str) -> None:
    """Every ID the catalogue mentions must be one it defines."""
    mentioned: list[tuple[str, str]] = []
    part42 = data.get("iec_62443_4_2", {})
    for cr in part42.get("component_requirements", []):
        mentioned += [(ref, f"'see' of {cr['id']}") for ref in cr.get("see", [])]
    mentioned += [(r.parent, f"parent of {r.id}") for r in index.values() if r.parent and r.part in ("3-3", "4-2")]
    for key, where in (("sl_c_selection_by_fr", "iec_62443_3_3"),):
        for fr, levels in data.get(where, {}).get(key, {}).items():
            for level, ids in levels.items():
                mentioned += [(ref, f"{where}.{key}.{fr}.{level}") for ref in ids]
    for code, frs in part42.get("sl_c_selection_by_component_type", {}).items():
        for fr, levels in frs.items():
            for level, ids in levels.items():
                mentioned += [(ref, f"sl_c_selection_by_component_type.{code}.{fr}.{level}") for ref in ids]
    mentioned += [(row.reference, "svv_tester_independence_table_3") for row in table]
    for ref, where in mentioned:
        if ref not in index:
            raise OtfuzzError(f"catalogue {source} references unknown requirement '{ref}' in {where}")
