"""`otfuzz protocols` and `otfuzz schema`: what this build can test, and the published formats."""

from __future__ import annotations

import argparse
from types import MappingProxyType
from typing import Any

SCHEMAS = MappingProxyType({
    "results": ("otfuzz.report", "schema/results.schema.json"),
    "compliance": ("otfuzz.report", "schema/compliance.schema.json"),
    "system": ("otfuzz.compliance", "schema/system.schema.json"),
})


def add_commands(sub: Any) -> None:
    protocols = sub.add_parser("protocols", help="list protocols, their test groups and URL options")
    protocols.set_defaults(func=cmd_protocols)

    schema = sub.add_parser("schema", help="print a published JSON Schema (results, compliance, system)")
    schema.add_argument("name", choices=sorted(SCHEMAS), help="which schema")
    schema.set_defaults(func=cmd_schema)


def cmd_protocols(args: argparse.Namespace) -> int:
    from otfuzz.engine.strategies import GROUPS
    from otfuzz.protocols import available

    for scheme, cls in available().items():
        print(f"{scheme}  ({cls.transport}, default port {cls.default_port})  {scheme}://HOST:{cls.default_port}{'/PATH' if cls.accepts_path else ''}")
        print(f"  test groups: {', '.join(GROUPS)}")
        for key, spec in cls.options_spec.items():
            print(f"  ?{key}={spec.default}  {spec.doc}")
        print(f"  liveness: {cls.liveness_note}")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from importlib import resources

    package, path = SCHEMAS[args.name]
    print(resources.files(package).joinpath(path).read_text(), end="")
    return 0
