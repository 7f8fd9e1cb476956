"""The system model: the shipped example validates, and every broken file gets one located message per problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from system_fixtures import EXAMPLE, otfuzz, write_system

from otfuzz.compliance.system import Policy, SystemModelError, check_system, load_system

GOOD = """
    version: 1
    system: Test plant
    organisation: {role: integrator}
    assets:
      - name: plc
        address: 127.0.0.1
        type: embedded-device
        services: [{protocol: modbus, port: 5020}]
      - name: hmi
        address: 127.0.0.1
        type: host-device
    zones:
      - name: control
        sl_t: [2, 2, 3, 1, 3, 1, 3]
        assets: [plc]
      - name: supervisory
        sl_t: {FR1: 2, FR2: 2, FR3: 2, FR4: 1, FR5: 2, FR6: 1, FR7: 2}
        assets: [hmi]
    conduits:
      - name: sup-ctl
        zones: [supervisory, control]
        channels:
          - name: polls
            protocol: modbus
            server: plc
            from: supervisory
            via: 127.0.0.1:6020
            policy: {allow: [read, 6]}
    """


def problems_of(tmp_path: Path, text: str) -> list[str]:
    model, problems = check_system(write_system(tmp_path, text))
    assert model is None, "a broken file must not produce a model"
    return [str(p) for p in problems]


def test_shipped_three_zone_example_is_a_valid_model() -> None:
    model = load_system(EXAMPLE)
    assert [z.name for z in model.zones] == ["enterprise", "supervisory", "control"]
    assert model.zone("control").sl_t == (2, 2, 3, 1, 3, 1, 3)
    assert model.zone("supervisory").sl_t_of("FR7") == 2
    channels = {ch.name: ch for _, ch in model.channels()}
    assert channels["reporting-reads"].via == ("10.10.0.1", 1502)
    assert channels["reporting-reads"].direct == ("10.10.1.10", 502)
    assert channels["scada-polls-plc"].to_zone == "control" and channels["scada-polls-plc"].from_zone == "supervisory"
    assert model.organisation.role == "asset-owner"


def test_channel_defaults_to_the_servers_own_endpoint_and_options(tmp_path: Path) -> None:
    model = load_system(write_system(tmp_path, GOOD.replace("via: 127.0.0.1:6020", "observe: true")))
    (_, channel), = model.channels()
    assert channel.via == channel.direct == ("127.0.0.1", 5020)
    assert channel.observe == ("127.0.0.1", 5020)
    assert channel.url() == "modbus://127.0.0.1:5020"


def test_schema_problems_name_file_line_and_field(tmp_path: Path) -> None:
    text = GOOD.replace("        type: host-device\n", "        type: host-device\n        adress: 10.0.0.1\n", 1)
    text = text.replace("sl_t: [2, 2, 3, 1, 3, 1, 3]", "sl_t: [2, 2, 5, 1, 3, 1, 3]")
    found = problems_of(tmp_path, text)
    file = str(tmp_path / "system.yaml")
    assert f"{file}:12: assets[hmi].adress: unknown field 'adress' (known fields: address, live, name, role, services, type)" in found
    assert f"{file}:15: zones[control].sl_t[2]: security level 5 is outside 1-4" in found
    assert len(found) == 2


def test_missing_required_field_points_at_its_parent(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("        type: embedded-device\n", ""))
    assert found == [f"{tmp_path / 'system.yaml'}:5: assets[plc]: missing required field 'type'"]


@pytest.mark.parametrize(("old", "new", "expected"), [
    ("server: plc", "server: plc-9", ":25: conduits[sup-ctl].channels[polls].server: unknown asset 'plc-9' in conduit 'sup-ctl'"),
    ("assets: [hmi]", "assets: [hmi, plc]", ":18: zones[supervisory].assets[1]: asset 'plc' is listed in zone 'control' too: zones must not overlap"),
    ("assets: [hmi]", "assets: []", ":9: assets[hmi]: asset 'hmi' is in no zone"),
    ("zones: [supervisory, control]", "zones: [supervisory, plant]", ":21: conduits[sup-ctl].zones[1]: conduit 'sup-ctl' joins unknown zone 'plant'"),
    ("zones: [supervisory, control]", "zones: [supervisory, supervisory]", ":21: conduits[sup-ctl].zones: conduit 'sup-ctl' joins zone 'supervisory' to itself"),
    ("from: supervisory", "from: control", ":26: conduits[sup-ctl].channels[polls].from: clients in 'control' reach 'plc' inside their own zone"),
    ("server: plc", "server: hmi", ":24: conduits[sup-ctl].channels[polls].protocol: asset 'hmi' does not serve modbus (it serves nothing)"),
    ("policy: {allow: [read, 6]}", "policy: {allow: [read, 99, write_everything]}",
     ":28: conduits[sup-ctl].channels[polls].policy.allow[1]: function code 99 is not a modbus operation otfuzz knows"),
    ("protocol: modbus\n            server", "protocol: modbus\n            port: 5021\n            server",
     ":25: conduits[sup-ctl].channels[polls].port: asset 'plc' does not serve modbus on port 5021 (it serves modbus:5020)"),
])
def test_model_rule_breaks_are_reported_with_location(tmp_path: Path, old: str, new: str, expected: str) -> None:
    text = GOOD.replace(old, new, 1)
    assert text != GOOD
    found = problems_of(tmp_path, text)
    assert any(p.startswith(str(tmp_path / "system.yaml") + expected) for p in found), found


def test_unknown_operation_name_in_a_policy_is_a_problem(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("allow: [read, 6]", "allow: [read, write_everything]"))
    assert len(found) == 1 and "'write_everything' is neither an operation class" in found[0]


def test_countermeasure_must_name_a_system_requirement(tmp_path: Path) -> None:
    text = GOOD.replace("        assets: [plc]\n", "        assets: [plc]\n        countermeasures:\n"
                        "          - {requirements: [SR 1.1, SR 9.9, CR 3.5], by: x, reference: y}\n")
    found = problems_of(tmp_path, text)
    assert any("'SR 9.9' is not an IEC 62443 requirement in the catalogue" in p for p in found)
    assert any("'CR 3.5' is not a 3-3 system requirement" in p for p in found)
    assert len(found) == 2


def test_duplicate_key_and_duplicate_names_are_reported(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("system: Test plant", "system: Test plant\n    system: Other"))
    assert found == [f"{tmp_path / 'system.yaml'}:3: system: field 'system' is given twice; the second would silently win"]
    found = problems_of(tmp_path, GOOD.replace("name: hmi", "name: plc"))
    assert any(":9: assets[plc].name: asset 'plc' is defined twice (first at line 5)" in p for p in found)


def test_bad_yaml_is_one_problem_with_its_line(tmp_path: Path) -> None:
    found = problems_of(tmp_path, GOOD.replace("assets: [hmi]", "assets: [hmi"))
    assert len(found) == 1 and "not valid YAML" in found[0] and ":(yaml)" not in found[0]
    assert found[0].split(":")[1].isdigit()


def test_load_system_raises_an_otfuzz_error_naming_the_first_problem(tmp_path: Path) -> None:
    path = write_system(tmp_path, GOOD.replace("server: plc", "server: nobody"))
    with pytest.raises(SystemModelError) as caught:
        load_system(path)
    assert "unknown asset 'nobody'" in str(caught.value)


def test_policy_read_never_covers_writes_and_codes_match_exactly() -> None:
    policy = Policy(("read", 6))
    assert policy.allows("read_coils", 1, writes=False, disruptive=False)
    assert not policy.allows("write_single_coil", 5, writes=True, disruptive=False)
    assert policy.allows("write_single_register", 6, writes=True, disruptive=False)
    assert not policy.allows("restart", 8, writes=True, disruptive=True)
    assert Policy(("write",)).allows("write_single_coil", 5, True, False)
    assert not Policy(("write",)).allows("restart", 8, True, True)
    assert not Policy(()).allows("read_coils", 1, False, False)


def test_model_check_command_prints_every_problem_and_exits_2(tmp_path: Path) -> None:
    good = otfuzz("model", "check", str(EXAMPLE))
    assert good.returncode == 0 and "valid: 5 assets in 3 zones, 2 conduits with 3 channels" in good.stdout
    bad = write_system(tmp_path, GOOD.replace("server: plc", "server: plc-9").replace("assets: [hmi]", "assets: []"))
    result = otfuzz("model", "check", str(bad))
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("otfuzz: error: ")]
    assert len(lines) == 2 and all(f"{bad}:" in line for line in lines)
    missing = otfuzz("model", "check", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and "cannot read system file" in missing.stderr


def test_model_show_draws_zones_coloured_by_sl_t(tmp_path: Path) -> None:
    result = otfuzz("model", "show", str(EXAMPLE), "--out", str(tmp_path / "system.dot"))
    assert result.returncode == 0, result.stderr
    dot = (tmp_path / "system.dot").read_text()
    assert 'fillcolor="#fdd0a2"' in dot  # control: highest SL-T 3
    assert 'fillcolor="#d9f0d3"' in dot  # enterprise: SL-T 1
    assert '"zone:enterprise" -> "asset:scada-gateway"' in dot
    if shutil.which("dot") is None:
        pytest.skip("Graphviz dot not installed")
    result = otfuzz("model", "show", str(EXAMPLE), "--out", str(tmp_path / "system.svg"))
    assert result.returncode == 0, result.stderr
    svg = (tmp_path / "system.svg").read_text()
    assert "<svg" in svg and "plc&#45;filtration" in svg and "#fdd0a2" in svg
