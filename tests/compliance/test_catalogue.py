"""The shipped catalogue loads whole, agrees with its own Annex B tables, and bad data is refused."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evidence_samples import catalogue, edited_copy  # noqa: F401 (fixtures)

from otfuzz.compliance.catalogue import COMPONENT_TYPES, SYSTEM, Catalogue, catalogue_path, load_catalogue
from otfuzz.errors import OtfuzzError


def test_shipped_catalogue_indexes_every_part(catalogue: Catalogue) -> None:
    parts = [r.part for r in catalogue]
    # 3-3: 51 SRs + 49 REs; 4-2: 58 CR headings + 27 REs + 30 type-specific + 22 of their REs; 4-1: 47.
    assert parts.count("3-3") == 100
    assert parts.count("4-2") == 58 + 27 + 30 + 22
    assert parts.count("4-1") == 47
    assert catalogue.get("CR 7.1 RE(1)").sl_min == 2
    assert catalogue.get("SR 3.7").sl_min == 2 and catalogue.get("CR 3.7").sl_min == 1
    assert catalogue.get("EDR 3.2").applies_to == {"EDR"}
    assert [fr.abbreviation for fr in catalogue.foundational_requirements] == ["IAC", "UC", "SI", "DC", "RDF", "TRE", "RA"]


def test_selection_by_sl_min_matches_the_catalogues_annex_b_tables(catalogue: Catalogue) -> None:
    data = yaml.safe_load(catalogue_path().read_text())
    tables = dict(data["iec_62443_4_2"]["sl_c_selection_by_component_type"])
    tables[SYSTEM] = data["iec_62443_3_3"]["sl_c_selection_by_fr"]
    for object_type in (*COMPONENT_TYPES.values(), SYSTEM):
        applicable = catalogue.applicable(object_type)
        for fr, levels in tables[object_type].items():
            for level, ids in levels.items():
                n = int(level.removeprefix("SL"))
                computed = sorted(r.id for r in applicable if r.fr == fr and r.sl_min <= n)
                assert computed == sorted(ids), (object_type, fr, level)


def test_component_types_without_component_requirement_are_never_applicable(catalogue: Catalogue) -> None:
    # CR 2.3, 5.4 and 7.5 have no component-level requirement; CR 3.2 exists only as EDR/HDR/NDR/SAR 3.2.
    ids = {r.id for r in catalogue.applicable("EDR")}
    assert not {"CR 2.3", "CR 5.4", "CR 7.5", "CR 3.2", "NDR 5.2"} & ids
    assert {"EDR 3.2", "CR 7.1", "CR 7.1 RE(1)"} <= ids


def _edited_catalogue(tmp_path: Path, edit) -> Path:
    return edited_copy(catalogue_path(), tmp_path, edit)


def test_catalogue_referencing_an_unknown_requirement_is_refused(tmp_path: Path) -> None:
    path = _edited_catalogue(
        tmp_path, lambda d: d["iec_62443_4_2"]["sl_c_selection_by_component_type"]["EDR"]["FR7"]["SL2"].append("CR 7.99"))
    with pytest.raises(OtfuzzError, match=r"unknown requirement 'CR 7\.99'"):
        load_catalogue(path)


def test_catalogue_with_a_level_outside_1_to_4_is_refused(tmp_path: Path) -> None:
    def edit(d):
        d["iec_62443_4_2"]["component_requirements"][0]["sl_min"] = 5
    with pytest.raises(OtfuzzError, match="sl_min 5"):
        load_catalogue(_edited_catalogue(tmp_path, edit))


def test_unreadable_catalogue_is_a_one_line_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("meta: [unclosed\n")
    with pytest.raises(OtfuzzError) as error:
        load_catalogue(bad)
    assert "\n" not in str(error.value) and "not valid YAML" in str(error.value)
    with pytest.raises(OtfuzzError, match="cannot read catalogue"):
        load_catalogue(tmp_path / "missing.yaml")
