"""The system under consideration: assets, zones, conduits and the channels through them.

IEC 62443-3-2 partitions a system into zones (groups of assets with one SL-T vector) joined by
conduits; protocol testing belongs where an industrial protocol crosses a zone boundary. This
module reads a `system.yaml`, validates it against the published JSON Schema
(`schema/system.schema.json`) and then against the rules of the model (every asset in exactly
one zone, conduits join two existing zones, a channel's server sits in one of them and its
clients in the other, ...), and returns an immutable `SystemModel`. Every problem is reported
as one `Problem` naming the file, line and field, so a user can fix them all in one pass.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from otfuzz.errors import OtfuzzError

FRS = ("FR1", "FR2", "FR3", "FR4", "FR5", "FR6", "FR7")
FR_NAMES: Mapping[str, str] = MappingProxyType({"FR1": "IAC", "FR2": "UC", "FR3": "SI", "FR4": "DC", "FR5": "RDF", "FR6": "TRE", "FR7": "RA"})
OPERATION_CLASSES = ("read", "write", "disruptive", "all")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a system file, located well enough to fix without searching."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class SystemModelError(OtfuzzError):
    """A system file that does not validate; `problems` holds every problem found."""

    def __init__(self, path: Path, problems: list[Problem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more problems; run: otfuzz model check {path})" if len(problems) > 1 else ""
        super().__init__(f"{problems[0]}{more}")


@dataclass(frozen=True)
class Service:
    protocol: str
    port: int
    options: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Asset:
    name: str
    address: str
    type: str
    role: str = ""
    live: bool = False
    services: tuple[Service, ...] = ()

    def service(self, protocol: str, port: int | None = None) -> Service | None:
        """The asset's service of `protocol` (on `port` if given), if it has exactly one such."""
        found = [s for s in self.services if s.protocol == protocol and (port is None or s.port == port)]
        return found[0] if len(found) == 1 else None


@dataclass(frozen=True)
class Countermeasure:
    """Requirements a zone meets by other means than the tested assets, with where to check."""

    requirements: tuple[str, ...]
    by: str
    reference: str


@dataclass(frozen=True)
class Zone:
    name: str
    sl_t: tuple[int, ...]  # seven levels, FR1..FR7
    assets: tuple[str, ...]
    criticality: str = "medium"
    description: str = ""
    countermeasures: tuple[Countermeasure, ...] = ()

    def sl_t_of(self, fr: str) -> int:
        return self.sl_t[FRS.index(fr)]

    @property
    def sl_t_map(self) -> dict[str, int]:
        return dict(zip(FRS, self.sl_t))


@dataclass(frozen=True)
class Policy:
    """What a conduit lets through on one channel: operation classes, names or function codes."""

    allow: tuple[str | int, ...]

    def allows(self, name: str, code: int | None, writes: bool, disruptive: bool) -> bool:
        """Whether an operation is on the allow-list; 'read' never covers a write, 'write' never a disruptive one."""
        for item in self.allow:
            if item == "all" or item == name or (isinstance(item, int) and item == code):
                return True
            if item == "read" and not writes and not disruptive:
                return True
            if item == "write" and writes and not disruptive:
                return True
            if item == "disruptive" and disruptive:
                return True
        return False


@dataclass(frozen=True)
class Channel:
    """One protocol flow through a conduit: clients in `from_zone` to `server` in `to_zone`."""

    name: str
    protocol: str
    server: str
    port: int
    from_zone: str
    to_zone: str
    via: tuple[str, int]  # where clients in from_zone reach the server
    direct: tuple[str, int]  # the server's own address and port
    options: Mapping[str, str] = field(default_factory=dict)
    policy: Policy | None = None
    observe: tuple[str, int] | None = None
    line: int = 0

    def url(self, endpoint: tuple[str, int] | None = None) -> str:
        host, port = endpoint or self.via
        host = f"[{host}]" if ":" in host else host
        query = "&".join(f"{k}={v}" for k, v in sorted(self.options.items()))
        return f"{self.protocol}://{host}:{port}" + (f"?{query}" if query else "")


@dataclass(frozen=True)
class Conduit:
    name: str
    zones: tuple[str, str]
    channels: tuple[Channel, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Organisation:
    role: str
    name: str = ""


@dataclass(frozen=True)
class SystemModel:
    """A validated system file."""

    name: str
    organisation: Organisation
    assets: tuple[Asset, ...]
    zones: tuple[Zone, ...]
    conduits: tuple[Conduit, ...]
    path: str
    sha256: str
    description: str = ""

    def asset(self, name: str) -> Asset:
        return next(a for a in self.assets if a.name == name)

    def zone(self, name: str) -> Zone:
        return next(z for z in self.zones if z.name == name)

    def zone_of(self, asset: str) -> Zone:
        return next(z for z in self.zones if asset in z.assets)

    def channels(self) -> Iterator[tuple[Conduit, Channel]]:
        for conduit in self.conduits:
            for channel in conduit.channels:
                yield conduit, channel


# -- YAML with line numbers ----------------------------------------------------------------------


class _Located:
    """The YAML document as plain data plus the line of every node, keyed by its path."""

    def __init__(self) -> None:
        self.lines: dict[Path_, int] = {}
        self.duplicates: list[tuple[Path_, int]] = []

    def build(self, loader: yaml.SafeLoader, node: yaml.Node, path: Path_) -> Any:
        self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = loader.construct_object(key_node, deep=True)
                if isinstance(key, (list, dict)):
                    key = str(key)
                if key in out:
                    self.duplicates.append(((*path, key), key_node.start_mark.line + 1))
                out[key] = self.build(loader, value_node, (*path, key))
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(loader, item, (*path, i)) for i, item in enumerate(node.value)]
        return loader.construct_object(node, deep=True)

    def line(self, path: Path_) -> int:
        """Line of `path`, or of its nearest ancestor present in the file (for missing fields)."""
        while path not in self.lines and path:
            path = path[:-1]
        return self.lines.get(path, 1)


def _parse(text: str, file: str) -> tuple[Any, _Located] | Problem:
    located = _Located()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return Problem(file, 1, "(file)", "the file is empty; start from examples/three-zone/system.yaml")
        data = located.build(loader, node, ())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        return Problem(file, line, "(yaml)", f"not valid YAML: {problem}")
    finally:
        loader.dispose()
    return data, located


def _field(data: Any, path: Path_) -> str:
    """`zones[control].assets[0]`: list items that have a name are shown by name."""
    out = ""
    node = data
    for part in path:
        if isinstance(part, int):
            name = node[part].get("name") if isinstance(node, list) and isinstance(node[part], dict) else None
            out += f"[{name}]" if isinstance(name, str) and name else f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return out or "(top level)"


# -- schema ---------------------------------------------------------------------------------------


def system_schema() -> dict[str, Any]:
    """The published JSON Schema of system files."""
    return json.loads(resources.files("otfuzz.compliance").joinpath("schema/system.schema.json").read_text())


def _schema_message(error: Any) -> tuple[Path_, str]:
    """A path and a human message for one jsonschema error."""
    path: Path_ = tuple(error.absolute_path)
    kind = error.validator
    if kind == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return path, f"missing required field '{missing}'"
    if kind == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        known = ", ".join(sorted(error.schema.get("properties", {})))
        return (*path, extra[0]) if extra else path, f"unknown field '{extra[0] if extra else '?'}' (known fields: {known})"
    if kind == "enum":
        return path, f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}"
    if kind in ("minimum", "maximum") and "sl_t" in path:
        return path, f"security level {error.instance} is outside 1-4"
    if kind == "oneOf":
        description = error.schema.get("description", "")
        inner = [e for e in error.context if e.validator not in ("type", "oneOf")]
        if inner:
            return _schema_message(max(inner, key=lambda e: len(e.absolute_path)))
        return path, f"{error.instance!r} is not valid here" + (f": {description}" if description else "")
    if kind == "pattern":
        description = error.schema.get("description", "")
        return path, f"{error.instance!r} is not valid" + (f": {description}" if description else "")
    if kind == "const":
        return path, f"must be {error.validator_value!r}, found {error.instance!r}"
    return path, error.message


def _schema_problems(data: Any, located: _Located, file: str) -> list[Problem]:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(system_schema())
    problems: list[Problem] = []
    seen: set[tuple[Path_, str]] = set()
    for error in sorted(validator.iter_errors(data), key=lambda e: (located.line(tuple(e.absolute_path)), str(e.message))):
        path, message = _schema_message(error)
        if (path, message) in seen:
            continue
        seen.add((path, message))
        problems.append(Problem(file, located.line(path), _field(data, path), message))
    return problems


# -- model rules ----------------------------------------------------------------------------------


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def _valid_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        labels = text.rstrip(".").split(".")
        return all(label and len(label) <= 63 and label.replace("-", "").replace("_", "").isalnum() for label in labels)


class _Checker:
    """Applies the model rules to schema-valid data, collecting problems and building the model."""

    def __init__(self, data: dict[str, Any], located: _Located, file: str) -> None:
        self.data = data
        self.located = located
        self.file = file
        self.problems: list[Problem] = []
        self.catalogue: Any = False  # loaded on first use: most files have few countermeasures

    def problem(self, path: Path_, message: str) -> None:
        self.problems.append(Problem(self.file, self.located.line(path), _field(self.data, path), message))

    def unique(self, items: list[dict[str, Any]], where: str, what: str) -> dict[str, int]:
        index: dict[str, int] = {}
        for i, item in enumerate(items):
            name = item["name"]
            if name in index:
                first = self.located.line((where, index[name]))
                self.problem((where, i, "name"), f"{what} '{name}' is defined twice (first at line {first})")
            else:
                index[name] = i
        return index

    def run(self) -> tuple[Asset, ...] | None:
        data = self.data
        assets = data.get("assets", [])
        zones = data["zones"]
        conduits = data.get("conduits", [])
        asset_index = self.unique(assets, "assets", "asset")
        zone_index = self.unique(zones, "zones", "zone")
        self.unique(conduits, "conduits", "conduit")
        for i, asset in enumerate(assets):
            if not _valid_address(asset["address"]):
                self.problem(("assets", i, "address"), f"'{asset['address']}' is neither an IP address nor a host name")
            seen: dict[tuple[str, int], int] = {}
            for j, service in enumerate(asset.get("services", [])):
                key = (service["protocol"], service["port"])
                if key in seen:
                    self.problem(("assets", i, "services", j), f"{key[0]} on port {key[1]} is listed twice for asset '{asset['name']}'")
                seen[key] = j
        # every asset in exactly one zone
        home: dict[str, str] = {}
        for i, zone in enumerate(zones):
            for j, name in enumerate(zone["assets"]):
                path = ("zones", i, "assets", j)
                if name not in asset_index:
                    self.problem(path, f"zone '{zone['name']}' lists unknown asset '{name}' (assets: {', '.join(asset_index) or 'none'})")
                elif name in home:
                    where = "twice" if home[name] == zone["name"] else f"in zone '{home[name]}' too"
                    self.problem(path, f"asset '{name}' is listed {where}: zones must not overlap, each asset is in exactly one zone")
                else:
                    home[name] = zone["name"]
            for j, measure in enumerate(zone.get("countermeasures", [])):
                for k, req in enumerate(measure["requirements"]):
                    self.check_requirement(req, ("zones", i, "countermeasures", j, "requirements", k))
        for name, i in asset_index.items():
            if name not in home:
                self.problem(("assets", i), f"asset '{name}' is in no zone; add it to the assets of one zone")
        for i, conduit in enumerate(conduits):
            self.check_conduit(i, conduit, zone_index, asset_index, home)
        return None

    def check_requirement(self, req: str, path: Path_) -> None:
        if self.catalogue is False:
            self.catalogue = _catalogue()
        catalogue = self.catalogue
        if catalogue is None:
            return
        if req not in catalogue:
            self.problem(path, f"'{req}' is not an IEC 62443 requirement in the catalogue (write it like 'SR 1.1' or 'SR 5.2 RE(1)')")
        elif catalogue.get(req).part != "3-3":
            self.problem(path, f"'{req}' is not a 3-3 system requirement; zone countermeasures count toward the zone's system SL-C")

    def check_conduit(self, i: int, conduit: dict[str, Any], zone_index: dict[str, int], asset_index: dict[str, int],
                      home: dict[str, str]) -> None:
        joined = conduit["zones"]
        ok = True
        for j, name in enumerate(joined):
            if name not in zone_index:
                self.problem(("conduits", i, "zones", j), f"conduit '{conduit['name']}' joins unknown zone '{name}' (zones: {', '.join(zone_index)})")
                ok = False
        if joined[0] == joined[1]:
            self.problem(("conduits", i, "zones"), f"conduit '{conduit['name']}' joins zone '{joined[0]}' to itself; a conduit joins two zones")
            ok = False
        names: set[str] = set()
        for j, channel in enumerate(conduit.get("channels", [])):
            path = ("conduits", i, "channels", j)
            server = channel["server"]
            name = channel.get("name") or f"{channel['protocol']}-{server}"
            if name in names:
                self.problem(path, f"channel '{name}' appears twice in conduit '{conduit['name']}'; give them distinct names")
            names.add(name)
            if server not in asset_index:
                self.problem((*path, "server"), f"unknown asset '{server}' in conduit '{conduit['name']}' (assets: {', '.join(asset_index) or 'none'})")
                continue
            asset = self.data["assets"][asset_index[server]]
            port = channel.get("port")
            matching = [s for s in asset.get("services", []) if s["protocol"] == channel["protocol"] and (port is None or s["port"] == port)]
            if not matching:
                served = ", ".join(f"{s['protocol']}:{s['port']}" for s in asset.get("services", [])) or "nothing"
                what = f"{channel['protocol']} on port {port}" if port is not None else channel["protocol"]
                self.problem((*path, "port" if port is not None else "protocol"), f"asset '{server}' does not serve {what} (it serves {served})")
            elif len(matching) > 1:
                self.problem((*path, "server"), f"asset '{server}' serves {channel['protocol']} on several ports; give the channel a port")
            if not ok or server not in home:
                continue
            if home[server] not in joined:
                self.problem((*path, "server"), f"server '{server}' is in zone '{home[server]}', which conduit '{conduit['name']}' "
                                                f"does not join ({joined[0]}, {joined[1]}): endpoints must belong to assets in the conduit's zones")
                continue
            if channel["from"] not in joined:
                self.problem((*path, "from"), f"zone '{channel['from']}' is not joined by conduit '{conduit['name']}' ({joined[0]}, {joined[1]})")
            elif channel["from"] == home[server]:
                self.problem((*path, "from"), f"clients in '{channel['from']}' reach '{server}' inside their own zone; a channel "
                                              f"through conduit '{conduit['name']}' comes from the other zone")
            policy = channel.get("policy")
            if policy is not None:
                self.check_policy(policy, channel["protocol"], (*path, "policy", "allow"))

    def check_policy(self, policy: dict[str, Any], protocol: str, path: Path_) -> None:
        operations = _operations(protocol)
        for k, item in enumerate(policy["allow"]):
            if isinstance(item, bool):
                self.problem((*path, k), f"{item!r} is not an operation")
            elif isinstance(item, str) and item not in OPERATION_CLASSES:
                if operations is None:
                    self.problem((*path, k), f"'{item}' is not an operation class ({', '.join(OPERATION_CLASSES)}) and otfuzz has no "
                                             f"{protocol} module to look operation names up in")
                elif item not in operations[0]:
                    self.problem((*path, k), f"'{item}' is neither an operation class ({', '.join(OPERATION_CLASSES)}) nor a {protocol} "
                                             f"operation (e.g. {', '.join(sorted(operations[0])[:4])})")
            elif isinstance(item, int) and operations is not None and item not in operations[1]:
                codes = ", ".join(str(c) for c in sorted(operations[1])) or "none"
                self.problem((*path, k), f"function code {item} is not a {protocol} operation otfuzz knows (known: {codes})")


def _catalogue() -> Any:
    """The IEC 62443 catalogue, to check requirement IDs; None if the compliance data is absent."""
    try:
        from otfuzz.compliance.catalogue import load_catalogue
    except ImportError:  # pragma: no cover - the catalogue ships with otfuzz
        return None
    return load_catalogue()


def _operations(protocol: str) -> tuple[set[str], set[int]] | None:
    """Template names and function codes of a protocol module, or None if otfuzz has none."""
    from otfuzz.compliance.operations import operations

    try:
        from otfuzz.protocols import default_instance

        proto = default_instance(protocol)
    except Exception:  # noqa: BLE001 - no usable module: operation names cannot be checked, classes still can
        return None
    ops = operations(proto)
    return {op.name for op in ops}, {op.code for op in ops if op.code is not None}


# -- building -------------------------------------------------------------------------------------


def _sl_vector(value: Any) -> tuple[int, ...]:
    return tuple(value) if isinstance(value, list) else tuple(value[fr] for fr in FRS)


def _build(data: dict[str, Any], path: Path, digest: str) -> SystemModel:
    assets = tuple(
        Asset(
            name=a["name"], address=a["address"], type=a["type"], role=a.get("role", ""), live=bool(a.get("live", False)),
            services=tuple(Service(s["protocol"], s["port"], {k: str(v) for k, v in s.get("options", {}).items()})
                           for s in a.get("services", [])),
        )
        for a in data.get("assets", [])
    )
    by_name = {a.name: a for a in assets}
    zones = tuple(
        Zone(
            name=z["name"], sl_t=_sl_vector(z["sl_t"]), assets=tuple(z["assets"]), criticality=z.get("criticality", "medium"),
            description=z.get("description", ""),
            countermeasures=tuple(Countermeasure(tuple(c["requirements"]), c["by"], c["reference"]) for c in z.get("countermeasures", [])),
        )
        for z in data["zones"]
    )
    home = {a: z.name for z in zones for a in z.assets}
    conduits = []
    for i, c in enumerate(data.get("conduits", [])):
        channels = []
        for j, ch in enumerate(c.get("channels", [])):
            asset = by_name[ch["server"]]
            service = asset.service(ch["protocol"], ch.get("port"))
            assert service is not None  # checked by the rules
            direct = (asset.address, service.port)
            observe = ch.get("observe", False)
            channels.append(Channel(
                name=ch.get("name") or f"{ch['protocol']}-{asset.name}",
                protocol=ch["protocol"], server=asset.name, port=service.port, from_zone=ch["from"], to_zone=home[asset.name],
                via=_endpoint(ch["via"]) if "via" in ch else direct, direct=direct, options=dict(service.options),
                policy=Policy(tuple(ch["policy"]["allow"])) if "policy" in ch else None,
                observe=direct if observe is True else (_endpoint(observe) if isinstance(observe, str) else None),
            ))
        conduits.append(Conduit(c["name"], (c["zones"][0], c["zones"][1]), tuple(channels), c.get("description", "")))
    org = data["organisation"]
    return SystemModel(
        name=data["system"], organisation=Organisation(org["role"], org.get("name", "")), assets=assets, zones=zones,
        conduits=tuple(conduits), path=str(path), sha256=digest, description=data.get("description", ""),
    )


def check_system(path: Path) -> tuple[SystemModel | None, list[Problem]]:
    """Validate a system file: the model if it is valid, and every problem found."""
    path = Path(path)
    file = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise OtfuzzError(f"cannot read system file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, [Problem(file, 1, "(file)", "not UTF-8 text")]
    parsed = _parse(text, file)
    if isinstance(parsed, Problem):
        return None, [parsed]
    data, located = parsed
    problems = [Problem(file, line, _field(data, key), f"field '{key[-1]}' is given twice; the second would silently win")
                for key, line in located.duplicates]
    if not isinstance(data, dict):
        return None, [*problems, Problem(file, 1, "(top level)", "expected a mapping with version, system, organisation, assets, zones, conduits")]
    problems += _schema_problems(data, located, file)
    if problems:
        return None, problems
    checker = _Checker(data, located, file)
    checker.run()
    if checker.problems:
        return None, checker.problems
    return _build(data, path, hashlib.sha256(raw).hexdigest()), []


def load_system(path: Path) -> SystemModel:
    """Load a system file, raising SystemModelError (an OtfuzzError) if it has any problem."""
    model, problems = check_system(path)
    if model is None:
        raise SystemModelError(Path(path), problems)
    return model
