"""Target URLs and scope: nothing outside loopback or the declared scope is ever contacted."""

from __future__ import annotations

import pytest

from otfuzz.errors import OtfuzzError
from otfuzz.transport.target import Scope, parse_target


def test_url_gives_scheme_host_port_and_options() -> None:
    target = parse_target("dnp3://127.0.0.1:20000?outstation=1&master=2")
    assert (target.scheme, target.host, target.port, target.options) == ("dnp3", "127.0.0.1", 20000, {"outstation": "1", "master": "2"})


def test_ipv6_loopback_url_parses() -> None:
    assert parse_target("modbus://[::1]:502").host == "::1"


def test_url_path_is_kept_for_the_protocol_to_judge() -> None:
    target = parse_target("opcua://127.0.0.1:4840/freeopcua/server?security=none")
    assert target.path == "/freeopcua/server" and target.url == "opcua://127.0.0.1:4840/freeopcua/server?security=none"
    assert parse_target("modbus://127.0.0.1:502/").path == ""


@pytest.mark.parametrize("url", ["127.0.0.1:502", "modbus://", "modbus://127.0.0.1:99999"])
def test_bad_urls_are_user_errors(url: str) -> None:
    with pytest.raises(OtfuzzError, match="bad target URL"):
        parse_target(url)


def test_loopback_is_always_in_scope() -> None:
    assert Scope().check(parse_target("modbus://127.0.0.1:502")) == "127.0.0.1"
    assert Scope().check(parse_target("modbus://[::1]:502")) == "::1"


def test_address_outside_scope_is_refused_with_the_fix_in_the_message() -> None:
    with pytest.raises(OtfuzzError, match=r"outside the declared scope.*--scope 10\.0\.0\.5"):
        Scope().check(parse_target("modbus://10.0.0.5:502"))


def test_declared_network_admits_its_addresses_only() -> None:
    scope = Scope(["10.0.0.0/24"])
    assert scope.check(parse_target("modbus://10.0.0.5:502")) == "10.0.0.5"
    with pytest.raises(OtfuzzError):
        scope.check(parse_target("modbus://10.0.1.5:502"))


def test_bad_scope_entry_is_a_user_error() -> None:
    with pytest.raises(OtfuzzError, match="bad --scope entry 'plc-room'"):
        Scope(["plc-room"])
