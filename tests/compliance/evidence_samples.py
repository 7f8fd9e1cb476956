"""Hand-made campaign evidence and data files for the compliance tests.

`make_results` builds the smallest results document the compliance layer reads: test groups
with case counts and anomalies with a group and class. Each test works out the right answer
from these few numbers itself.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from otfuzz.compliance.catalogue import Catalogue, load_catalogue
from otfuzz.compliance.mapping import RequirementMapping, load_mapping


@pytest.fixture(scope="session")
def catalogue() -> Catalogue:
    return load_catalogue()


@pytest.fixture(scope="session")
def mapping(catalogue: Catalogue) -> RequirementMapping:
    return load_mapping(catalogue)


def make_results(groups: dict[str, int], anomalies: list[tuple[str, str]] = (), **campaign: Any) -> dict[str, Any]:
    """groups: name -> cases; anomalies: (group, class) pairs, numbered from 1."""
    found = [{"id": i, "group": g, "class": c, "case_id": i * 10} for i, (g, c) in enumerate(anomalies, start=1)]
    return {
        "campaign": {"status": "completed", **campaign},
        "groups": [{"name": name, "cases": n, "replies": {"normal": n},
                    "anomalies": sum(1 for a in found if a["group"] == name)} for name, n in groups.items()],
        "anomalies": found,
        "totals": {"cases": sum(groups.values()), "anomalies": len(found)},
    }


FUZZ = {"boundary": 400, "structural": 300, "mutation": 200, "sequence": 100}
FLOODS = {"connection-flood": 20, "request-flood": 30, "malformed-flood": 40, "protocol-flood": 50}


def edited_copy(source: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    """A copy of a shipped YAML data file with `edit` applied, to feed the loaders bad data."""
    data = yaml.safe_load(source.read_text())
    edit(data)
    path = tmp_path / source.name
    path.write_text(yaml.safe_dump(data))
    return path
