"""Sans-IO protocol modules and the registry that maps URL schemes to them."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Protocol as Interface

from otfuzz.errors import OtfuzzError
from otfuzz.protocols.base import Protocol

# scheme -> "module:Class"; modules are imported on first use so a broken optional module
# cannot stop the others from loading.
_REGISTRY: dict[str, str] = {
    "modbus": "otfuzz.protocols.modbus:ModbusTCP",
    "dnp3": "otfuzz.protocols.dnp3:DNP3",
    "iec104": "otfuzz.protocols.iec104:IEC104",
    "opcua": "otfuzz.protocols.opcua:OPCUA",
    "bacnet": "otfuzz.protocols.bacnet:BACnetIP",
    "s7": "otfuzz.protocols.s7:S7Comm",
    "enip": "otfuzz.protocols.enip:EtherNetIP",
    "mqtt": "otfuzz.protocols.mqtt:MQTT",
}


def available() -> dict[str, type[Protocol]]:
    """Every protocol whose module imports, by scheme."""
    out: dict[str, type[Protocol]] = {}
    for scheme in _REGISTRY:
        try:
            out[scheme] = protocol_class(scheme)
        except OtfuzzError:
            continue
    return out


def protocol_class(scheme: str) -> type[Protocol]:
    target = _REGISTRY.get(scheme)
    if target is None:
        known = ", ".join(sorted(_REGISTRY))
        raise OtfuzzError(f"unknown protocol '{scheme}' (known: {known})")
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise OtfuzzError(f"protocol '{scheme}' is not available in this build ({exc})") from None
    return getattr(module, class_name)


class Addressed(Interface):
    """What a target URL tells a protocol module (otfuzz.transport.target.Target has it)."""

    scheme: str
    host: str
    port: int
    options: dict[str, str]
    path: str


def protocol_for(target: Addressed) -> Protocol:
    """The protocol module a target URL names, built with the URL's options, path and address."""
    protocol = protocol_class(target.scheme)(target.options, path=target.path)
    protocol.address(target.host, target.port)
    return protocol


def default_instance(scheme: str, options: Mapping[str, str] | None = None) -> Protocol:
    """A module with default options: for reading its templates and operations."""
    return protocol_class(scheme)(options)
