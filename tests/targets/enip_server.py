"""A cpppo 5.2.5 EtherNet/IP + CIP server on 127.0.0.1 with tags of known values, for integration tests.

Third-party code is the point: the EtherNet/IP module is proven against an implementation we did
not write. cpppo simulates a Logix controller (Identity: vendor 1, product "1756-L61/B
LOGIX5561", revision 20.11) and serves these tags by name (Read/Write Tag, Read Tag
Fragmented, directly, through Unconnected Send or on a Forward Open connection):

    SCADA   INT[100]   SCADA[i] == 3 * i     (the templates' default ?tag=; the policy test's
                                             write markers go to SCADA[0])
    COUNTER DINT       123456

Prints READY and serves until killed (cpppo binds TCP and UDP on the port).

    python tests/targets/enip_server.py --port 44818
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cpppo.server.enip import device
from cpppo.server.enip.main import main as cpppo_main

TAGS: dict[str, tuple[str, Any]] = {
    "SCADA": ("INT[100]", [3 * i for i in range(100)]),
    "COUNTER": ("DINT", 123456),
}


class KnownValues(device.Attribute):  # type: ignore[misc]
    """cpppo creates command-line tags with zeros; these start with the values in TAGS."""

    def __init__(self, name: str, type_cls: Any, default: Any = 0, **kwds: Any) -> None:
        if name in TAGS:
            value = TAGS[name][1]
            default = list(value) if isinstance(value, list) else value
        super().__init__(name, type_cls, default=default, **kwds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    argv = ["--no-config", "-a", f"127.0.0.1:{args.port}", *(f"{name}={kind}" for name, (kind, _) in TAGS.items())]
    # READY before serving: the fixture also waits until the port accepts a connection.
    print("READY", flush=True)
    sys.exit(cpppo_main(argv, attribute_class=KnownValues))


if __name__ == "__main__":
    main()
