"""Target URLs and the declared scope: the only addresses otfuzz will ever send to.

OT devices are often live and fragile, so every address is checked against the scope before a
single byte leaves: loopback is always in scope, anything else must be named with --scope.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

from otfuzz.errors import OtfuzzError


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int
    options: dict[str, str] = field(default_factory=dict)
    path: str = ""  # e.g. an OPC UA endpoint's path; protocols that take none refuse one

    @property
    def url(self) -> str:
        query = "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.path}" + (f"?{query}" if query else "")


def parse_target(url: str, default_port: int | None = None) -> Target:
    """Parse `scheme://host[:port][?opt=value&...]`; the scheme names the protocol."""
    if "://" not in url:
        raise OtfuzzError(f"bad target URL '{url}': expected scheme://host:port, e.g. modbus://127.0.0.1:502")
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise OtfuzzError(f"bad target URL '{url}': expected scheme://host:port, e.g. modbus://127.0.0.1:502")
    try:
        port = parts.port
    except ValueError:
        raise OtfuzzError(f"bad target URL '{url}': port is not a number from 1 to 65535") from None
    if port is None:
        if default_port is None:
            raise OtfuzzError(f"bad target URL '{url}': no port given")
        port = default_port
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    return Target(parts.scheme.lower(), parts.hostname, port, options, "" if parts.path == "/" else parts.path)


def is_loopback(address: str) -> bool:
    """True for a loopback address (127.0.0.0/8, ::1); False for anything else, names included."""
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


class Scope:
    """Addresses and networks the operator declared fair game; loopback is always included."""

    def __init__(self, entries: Iterable[str] = ()) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.ip_network("127.0.0.0/8"),
            ipaddress.ip_network("::1/128"),
        ]
        self.declared: list[str] = []
        for entry in entries:
            for item in entry.replace(",", " ").split():
                try:
                    self.networks.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise OtfuzzError(f"bad --scope entry '{item}': expected an address or a network such as 10.0.0.0/24") from None
                self.declared.append(item)

    def resolve(self, host: str) -> list[str]:
        try:
            return [str(ipaddress.ip_address(host))]
        except ValueError:
            pass
        try:
            infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
        except socket.gaierror as exc:
            raise OtfuzzError(f"cannot resolve target host '{host}': {exc.strerror}") from None
        return sorted({info[4][0] for info in infos})

    def check(self, target: Target) -> str:
        """Return the address to use, or refuse a target outside the scope."""
        addresses = self.resolve(target.host)
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if not any(ip in net for net in self.networks):
                raise OtfuzzError(
                    f"target {target.host} ({address}) is outside the declared scope; "
                    f"if you are authorised to test it, add --scope {address} (or its network, e.g. --scope {address}/24)"
                )
        return addresses[0]
