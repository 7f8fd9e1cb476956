"""The mapping from test groups and anomaly classes to IEC 62443 requirements, as data.

`data/mapping.yaml` says which test groups exercise which requirement, which anomaly classes
count against it and how strong the evidence is (robustness_mapping.md). This module loads it
into immutable `Rule`s and checks every name against the catalogue and the mapping's own
vocabulary, so a typo in the data fails loudly instead of quietly leaving a requirement
untested. What each strength may conclude is fixed here in `STRENGTHS`: it is the definition
of the vocabulary, not something a mapping file may relax.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from otfuzz.compliance.catalogue import Catalogue, read_yaml
from otfuzz.errors import OtfuzzError

ANY_GROUP = "any"


@dataclass(frozen=True)
class Strength:
    """What evidence of one strength may conclude (robustness_mapping.md section 1)."""

    name: str
    establishes: bool  # a passing link may mark the requirement met
    supports: bool  # a passing link counts as (partial) positive evidence
    falsifies: bool  # an anomaly the rule fails on makes the requirement fail


STRENGTHS: Mapping[str, Strength] = MappingProxyType({
    "direct": Strength("direct", establishes=True, supports=True, falsifies=True),
    "partial": Strength("partial", establishes=False, supports=True, falsifies=True),
    "indirect": Strength("indirect", establishes=False, supports=False, falsifies=False),
    "process": Strength("process", establishes=True, supports=True, falsifies=False),
})


@dataclass(frozen=True)
class Link:
    requirement: str
    strength: Strength


@dataclass(frozen=True)
class Rule:
    """One kind of test evidence and the requirements it speaks to."""

    id: str
    title: str
    description: str
    groups: tuple[str, ...] | None  # None: every group of the campaign
    when: tuple[str, ...]  # anomaly classes that must have occurred for the rule to apply
    fails_on: tuple[str, ...]
    min_cases: int
    group_verdicts: bool  # the run's own per-group verdicts (stress) count
    links: tuple[Link, ...]

    def covers(self, group: str) -> bool:
        return self.groups is None or group in self.groups


@dataclass(frozen=True)
class IndependenceLevel:
    id: str
    label: str


@dataclass(frozen=True)
class IndependencePolicy:
    """How IEC 62443-4-1 SVV-5 is judged: levels weakest first, and which Table 3 rows apply."""

    requirement: str
    levels: tuple[IndependenceLevel, ...]
    aliases: Mapping[str, str]
    activities: tuple[tuple[str, str], ...]  # (test_type, reference) rows of Table 3

    def rank(self, level_id: str) -> int:
        return [level.id for level in self.levels].index(level_id)

    def label(self, level_id: str) -> str:
        return self.levels[self.rank(level_id)].label

    def normalise(self, text: str) -> str | None:
        """A level id for free text such as 'Independent department', or None if unknown."""
        key = " ".join(text.strip().lower().replace("_", " ").replace("-", " ").split())
        if key.replace(" ", "-") in {level.id for level in self.levels}:
            return key.replace(" ", "-")
        return self.aliases.get(key)


@dataclass(frozen=True)
class RequirementMapping:
    """The loaded mapping file."""

    rules: tuple[Rule, ...]
    independence: IndependencePolicy
    test_groups: tuple[str, ...]
    anomaly_classes: tuple[str, ...]
    sha256: str
    source: str

    def requirement_ids(self) -> list[str]:
        """Every requirement the mapping can speak to, in mapping order, without repeats."""
        ids = [link.requirement for rule in self.rules for link in rule.links] + [self.independence.requirement]
        return list(dict.fromkeys(ids))


def mapping_path() -> Path:
    """The mapping shipped with otfuzz."""
    return Path(str(resources.files("otfuzz.compliance").joinpath("data/mapping.yaml")))


def load_mapping(catalogue: Catalogue, path: Path | None = None) -> RequirementMapping:
    """Load a mapping file (default: the shipped one) and check it against `catalogue`."""
    path = Path(path) if path is not None else mapping_path()
    data, digest = read_yaml(path, "mapping")
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise OtfuzzError(f"mapping {path} has no 'rules' list")
    try:
        return _build(data, catalogue, digest, str(path))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OtfuzzError(f"mapping {path} is malformed: {type(exc).__name__} {exc}") from None


def _build(data: dict[str, Any], catalogue: Catalogue, digest: str, source: str) -> RequirementMapping:
    groups = tuple(str(g) for g in data["test_groups"])
    classes = tuple(str(c) for c in data["anomaly_classes"])

    def known(names: Any, vocabulary: tuple[str, ...], what: str, rule_id: str) -> tuple[str, ...]:
        for name in names:
            if name not in vocabulary:
                raise OtfuzzError(f"mapping {source}: rule '{rule_id}' names unknown {what} '{name}'")
        return tuple(str(n) for n in names)

    def requirement(req_id: Any, where: str) -> str:
        if str(req_id) not in catalogue:
            raise OtfuzzError(f"mapping {source}: {where} references unknown requirement '{req_id}'")
        return str(req_id)

    rules = []
    seen: set[str] = set()
    for item in data["rules"]:
        rule_id = str(item["id"])
        if rule_id in seen:
            raise OtfuzzError(f"mapping {source}: rule '{rule_id}' is defined twice")
        seen.add(rule_id)
        raw_groups = item["groups"]
        links = []
        for link in item["links"]:
            strength = STRENGTHS.get(str(link["strength"]))
            if strength is None:
                raise OtfuzzError(f"mapping {source}: rule '{rule_id}' uses unknown strength '{link['strength']}' "
                                  f"(expected one of {', '.join(STRENGTHS)})")
            links.append(Link(requirement(link["requirement"], f"rule '{rule_id}'"), strength))
        rules.append(Rule(
            id=rule_id,
            title=str(item.get("title", rule_id)),
            description=" ".join(str(item.get("description", "")).split()),
            groups=None if raw_groups == ANY_GROUP else known(raw_groups, groups, "test group", rule_id),
            when=known(item.get("when", []), classes, "anomaly class", rule_id),
            fails_on=known(item.get("fails_on", []), classes, "anomaly class", rule_id),
            min_cases=max(1, int(item.get("min_cases", 1))),
            group_verdicts=bool(item.get("group_verdicts", False)),
            links=tuple(links),
        ))

    ind = data["independence"]
    levels = tuple(IndependenceLevel(str(level["id"]), str(level["label"])) for level in ind["levels"])
    level_ids = {level.id for level in levels}
    aliases = {" ".join(str(k).lower().split()): str(v) for k, v in ind.get("aliases", {}).items()}
    for alias, target in aliases.items():
        if target not in level_ids:
            raise OtfuzzError(f"mapping {source}: independence alias '{alias}' names unknown level '{target}'")
    activities = tuple((str(a["test_type"]), requirement(a["reference"], "independence activity")) for a in ind["activities"])
    policy = IndependencePolicy(requirement(ind["requirement"], "independence"), levels, MappingProxyType(aliases), activities)
    table = {(row.test_type, row.reference): row.independence for row in catalogue.independence_table}
    for activity in activities:
        if activity not in table:
            raise OtfuzzError(f"mapping {source}: independence activity {activity[0]!r} ({activity[1]}) is not a row of "
                              "the catalogue's tester independence table")
        if policy.normalise(table[activity]) is None:
            raise OtfuzzError(f"mapping {source}: no independence level matches the catalogue's '{table[activity]}'")
    return RequirementMapping(tuple(rules), policy, groups, classes, digest, source)
