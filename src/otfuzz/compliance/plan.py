"""Test planning at zone boundaries, and running a plan as a whole.

`build_plan` turns a system model into a test plan: one conduit policy test for every channel
that has a policy, and one fuzzing campaign for every protocol endpoint reachable through a
conduit, ordered by the SL-T of the zone being protected (highest first). The depth of each
campaign (test groups, duration) follows the zone's SL-T for the FRs robustness testing speaks
to, from `data/zones_and_conduits.yaml`; the requirements each entry gives evidence for come
from the compliance mapping, limited to the parts of IEC 62443 that apply to the
organisation's role. A plan is a YAML file a person can review and edit before running it.

`PlanRunner` runs a plan into one folder with a run folder per entry, sequentially or several
at once, and resumes as a whole: completed entries are skipped, interrupted campaigns continue
with their own resume, and policy tests (short, not resumable) start again.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from otfuzz.compliance.policy import PolicyTest, PolicyTestConfig, load_rules, run_policy_test
from otfuzz.compliance.system import FRS, SystemModel
from otfuzz.engine.stopping import run_until_stopped
from otfuzz.errors import OtfuzzError

PLAN_VERSION = 1
PLAN_FILE = "plan.yaml"
STATUS_FILE = "plan-status.json"
KINDS = ("policy", "fuzz")


@dataclass
class PlanEntry:
    """One campaign of the plan: what to test, how deep, why, and what it needs."""

    id: str
    kind: str  # "policy" or "fuzz"
    target: str
    protocol: str
    asset: str
    zone: str
    sl_t: list[int]
    channels: list[str]  # "conduit/channel" names this entry covers
    from_zones: list[str]
    duration_s: float
    groups: list[str] = field(default_factory=list)
    requirements: list[dict[str, str]] = field(default_factory=list)
    scope: list[str] = field(default_factory=list)  # addresses beyond loopback the entry sends to
    read_only: bool = False
    allow: list[str | int] = field(default_factory=list)
    observe: str | None = None
    timeout: float | None = None
    campaign: dict[str, Any] = field(default_factory=dict)  # further CampaignConfig settings (max_cases, confirm...)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PlanEntry:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Plan:
    version: int
    system: dict[str, str]
    organisation: dict[str, Any]
    seed: int
    entries: list[PlanEntry]
    not_planned: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"version": self.version, "system": self.system, "organisation": self.organisation, "seed": self.seed,
                "estimated_duration_s": self.duration_s(), "entries": [asdict(e) for e in self.entries],
                "not_planned": self.not_planned, "notes": self.notes}

    def duration_s(self, concurrency: int = 1) -> float:
        """Estimated wall time: entries run in order, `concurrency` at a time."""
        lanes = [0.0] * max(1, concurrency)
        for entry in self.entries:
            lanes[lanes.index(min(lanes))] += entry.duration_s
        return round(max(lanes), 1)


# -- building -------------------------------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _host(endpoint: tuple[str, int]) -> str:
    return endpoint[0]


def _depth(rules: dict[str, Any], level: int) -> dict[str, Any]:
    return rules["planning"]["depth"][level]


def _protocol_available(protocol: str) -> str | None:
    """None if otfuzz can test `protocol`, else why not."""
    from otfuzz.protocols import default_instance

    try:
        default_instance(protocol)
    except OtfuzzError as exc:
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - a protocol module that fails to load cannot be planned, the rest can
        return f"protocol '{protocol}' failed to load ({type(exc).__name__}: {exc})"
    return None


def applicable_parts(role: str) -> dict[str, Any]:
    """The parts of IEC 62443 that apply to an organisation's role, with why."""
    return load_rules()["roles"][role]


def _requirements(zone_sl_t: Sequence[int], component: str, groups: Sequence[str], extra: Sequence[dict[str, Any]],
                  parts: set[str]) -> list[dict[str, str]]:
    """Requirements an entry gives evidence for: mapping links of its groups, in the role's parts,
    selected at or below the protected zone's SL-T for their FR."""
    from otfuzz.compliance.catalogue import COMPONENT_TYPES, load_catalogue
    from otfuzz.compliance.mapping import load_mapping

    catalogue = load_catalogue()
    mapping = load_mapping(catalogue)
    code = COMPONENT_TYPES[component]
    links: list[tuple[str, str]] = []
    for rule in mapping.rules:
        if rule.when or not any(rule.covers(g) for g in groups):
            continue
        links += [(link.requirement, link.strength.name) for link in rule.links if link.strength.name != "indirect"]
    links += [(item["requirement"], item["strength"]) for item in extra]
    out: dict[str, dict[str, str]] = {}
    for req_id, strength in links:
        req = catalogue.get(req_id)
        if req.part not in parts or req_id in out:
            continue
        if req.part == "4-2" and code not in req.applies_to:
            continue
        if req.fr is not None and req.sl_min is not None and req.sl_min > zone_sl_t[FRS.index(req.fr)]:
            continue
        out[req_id] = {"id": req_id, "title": req.title, "strength": strength}
    return list(out.values())


def build_plan(model: SystemModel, duration_s: float | None = None, seed: int = 0, timeout: float | None = None) -> Plan:
    """The test plan for `model`; `duration_s` overrides every campaign's planned duration."""
    rules = load_rules()
    planning = rules["planning"]
    role = applicable_parts(model.organisation.role)
    parts = {p["part"] for p in role["parts"]}
    fuzz: dict[str, PlanEntry] = {}
    policy: list[PlanEntry] = []
    not_planned: list[dict[str, str]] = []
    for conduit, channel in model.channels():
        label = f"{conduit.name}/{channel.name}"
        why_not = _protocol_available(channel.protocol)
        if why_not:
            not_planned.append({"channel": label, "reason": why_not})
            continue
        zone = model.zone(channel.to_zone)
        asset = model.asset(channel.server)
        level = max(zone.sl_t_of(fr) for fr in planning["campaign_frs"])
        depth = _depth(rules, level)
        scope = sorted({h for h in (_host(channel.via), channel.observe and _host(channel.observe)) if h and not _is_loopback(h)})
        if channel.policy is not None:
            ops = _count_operations(channel.protocol)
            policy.append(PlanEntry(
                id="", kind="policy", target=channel.url(), protocol=channel.protocol, asset=asset.name, zone=zone.name,
                sl_t=list(zone.sl_t), channels=[label], from_zones=[channel.from_zone],
                duration_s=round(ops * planning["policy_seconds_per_operation"], 1),
                groups=[rules["policy_test"]["group"]],
                requirements=_requirements(zone.sl_t, asset.type, [rules["policy_test"]["group"]],
                                           rules["policy_test"]["evidence"], parts),
                scope=scope, read_only=asset.live, allow=list(channel.policy.allow),
                observe=None if channel.observe is None else f"{channel.observe[0]}:{channel.observe[1]}", timeout=timeout,
            ))
        url = channel.url()
        if url in fuzz:
            entry = fuzz[url]
            entry.channels.append(label)
            entry.from_zones = sorted(set(entry.from_zones) | {channel.from_zone})
            continue
        fuzz[url] = PlanEntry(
            id="", kind="fuzz", target=url, protocol=channel.protocol, asset=asset.name, zone=zone.name, sl_t=list(zone.sl_t),
            channels=[label], from_zones=[channel.from_zone], duration_s=float(duration_s or depth["duration_s"]),
            groups=list(depth["groups"]), requirements=_requirements(zone.sl_t, asset.type, depth["groups"], [], parts),
            scope=[h for h in scope if h == _host(channel.via)], read_only=asset.live, timeout=timeout,
        )
    entries = policy + list(fuzz.values())
    # Highest SL-T first; within a zone, policy tests (short, and before fuzzing may disturb the target).
    entries.sort(key=lambda e: (-max(e.sl_t), -sum(e.sl_t), e.zone, KINDS.index(e.kind), e.asset, e.target))
    for n, entry in enumerate(entries, start=1):
        entry.id = f"{n:02d}-{entry.kind}-{entry.asset}-{entry.protocol}"
    notes = []
    for note in planning["notes"]:
        zones = [z.name for z in model.zones if z.sl_t_of(note["fr"]) >= note["sl_t_min"]]
        if zones:
            notes.append(f"{note['text']} (zones: {', '.join(zones)})")
    for conduit in model.conduits:
        if not conduit.channels:
            notes.append(f"conduit '{conduit.name}' declares no channels: nothing to test through it")
    return Plan(
        version=PLAN_VERSION,
        system={"name": model.name, "file": model.path, "sha256": model.sha256},
        organisation={"name": model.organisation.name, "role": model.organisation.role, "role_label": role["label"],
                      "applicable_parts": role["parts"]},
        seed=seed, entries=entries, not_planned=not_planned, notes=notes,
    )


def _count_operations(protocol: str) -> int:
    from otfuzz.protocols import default_instance

    return len(default_instance(protocol).templates())


# -- files ----------------------------------------------------------------------------------------


def write_plan(plan: Plan, path: Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# otfuzz test plan: review, edit if needed, then run with: otfuzz run-plan "
                        f"{path.name} --out RUNS\n" + yaml.safe_dump(plan.as_dict(), sort_keys=False, width=120, default_flow_style=None))
    except OSError as exc:
        raise OtfuzzError(f"cannot write plan {path}: {exc.strerror}") from None
    return path


def load_plan(path: Path) -> Plan:
    """Read a plan file back, with a clear error for anything a hand edit may have broken."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise OtfuzzError(f"cannot read plan {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise OtfuzzError(f"plan {path} is not valid YAML" + (f" (line {mark.line + 1})" if mark else "")) from None
    if not isinstance(data, dict) or data.get("version") != PLAN_VERSION or not isinstance(data.get("entries"), list):
        raise OtfuzzError(f"{path} is not an otfuzz plan (version {PLAN_VERSION} with entries); make one with: otfuzz plan SYSTEM")
    entries = []
    seen: set[str] = set()
    for n, item in enumerate(data["entries"], start=1):
        entry = entry_from_dict(item, f"plan {path}", n)
        if entry.id in seen:
            raise OtfuzzError(f"plan {path}: entry id '{entry.id}' is empty, repeated or not a folder name")
        seen.add(entry.id)
        entries.append(entry)
    return Plan(PLAN_VERSION, dict(data.get("system") or {}), dict(data.get("organisation") or {}), int(data.get("seed") or 0),
                entries, list(data.get("not_planned") or []), list(data.get("notes") or []))


def entry_from_dict(item: Any, where: str, n: int | None = None) -> PlanEntry:
    """One plan entry from its mapping (a plan file's or a task's), refused with a clear error if a
    hand edit broke it. Shared by `load_plan` and the zone agents, which receive entries as data."""
    label = f"{where}: entry{'' if n is None else f' {n}'}"
    if not isinstance(item, dict):
        raise OtfuzzError(f"{label} is not a mapping")
    missing = [k for k in ("id", "kind", "target", "duration_s") if k not in item]
    if missing:
        raise OtfuzzError(f"{label} lacks {', '.join(missing)}")
    entry = PlanEntry.from_dict({"protocol": "", "asset": "", "zone": "", "sl_t": [], "channels": [], "from_zones": [], **item})
    if entry.kind not in KINDS:
        raise OtfuzzError(f"{where}: entry {entry.id} has kind '{entry.kind}', expected one of {', '.join(KINDS)}")
    if not isinstance(entry.id, str) or not entry.id or "/" in entry.id or entry.id.startswith("."):
        raise OtfuzzError(f"{where}: entry id '{entry.id}' is empty, repeated or not a folder name")
    if not isinstance(entry.duration_s, (int, float)) or entry.duration_s <= 0:
        raise OtfuzzError(f"{where}: entry {entry.id} needs a positive duration_s")
    settable = _campaign_settings()
    if not isinstance(entry.campaign, dict) or set(entry.campaign) - settable:
        bad = sorted(set(entry.campaign) - settable) if isinstance(entry.campaign, dict) else ["(not a mapping)"]
        raise OtfuzzError(f"{where}: entry {entry.id} campaign setting '{bad[0]}' is not one of {', '.join(sorted(settable))}")
    return entry


def _campaign_settings() -> set[str]:
    """CampaignConfig fields a plan entry may set; the rest come from the entry itself or run-plan."""
    from otfuzz.engine.campaign import CampaignConfig

    fixed = {"target", "seed", "duration", "groups", "read_only", "scope", "timeout", "operator", "organisation", "independence"}
    return {f.name for f in fields(CampaignConfig)} - fixed


def format_plan(plan: Plan, concurrency: int = 1) -> str:
    """The plan as a person reads it: entries in order, then what applies and what is missing."""
    org = plan.organisation
    lines = [f"Test plan for {plan.system.get('name', '?')} ({len(plan.entries)} entries, about "
             f"{_human(plan.duration_s(concurrency))} at concurrency {concurrency})", ""]
    header = ("#", "kind", "target", "zone", "SL-T", "groups", "duration", "evidence for")
    rows = []
    for n, e in enumerate(plan.entries, start=1):
        reqs = ", ".join(r["id"] for r in e.requirements)
        rows.append((str(n), e.kind + (" (read-only)" if e.read_only else ""), e.target, e.zone, "".join(map(str, e.sl_t)),
                     ",".join(e.groups), _human(e.duration_s), reqs or "-"))
    lines += _table(header, rows)
    scope = sorted({s for e in plan.entries for s in e.scope})
    if scope:
        lines += ["", f"Needs scope beyond loopback: run-plan --scope {' --scope '.join(scope)}"]
    if plan.not_planned:
        lines += ["", "Not planned (otfuzz cannot test these channels):"]
        lines += [f"  {item['channel']}: {item['reason']}" for item in plan.not_planned]
    if org.get("applicable_parts"):
        lines += ["", f"IEC 62443 parts that apply to the organisation's role ({org.get('role_label', org.get('role'))}):"]
        lines += [f"  {p['part']} {p['title']}: {p['why']}" for p in org["applicable_parts"]]
    if plan.notes:
        lines += ["", "Not covered by this plan:"] + [f"  - {note}" for note in plan.notes]
    return "\n".join(lines)


def _human(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return [fmt.format(*header).rstrip(), fmt.format(*("-" * w for w in widths)).rstrip()] + [fmt.format(*r).rstrip() for r in rows]


# -- running --------------------------------------------------------------------------------------


@dataclass
class EntryOutcome:
    id: str
    status: str  # completed, failed, interrupted, error, skipped (already complete)
    detail: str = ""


def entry_status(run_dir: Path) -> str | None:
    """The recorded status of an entry's run folder, or None if it never started."""
    from otfuzz.store.evidence import STORE_NAME, EvidenceStore

    if not (run_dir / STORE_NAME).is_file():
        return None
    store = EvidenceStore(run_dir / STORE_NAME)
    try:
        meta = store.get_meta("campaign")
    finally:
        store.close()
    return None if meta is None else str(meta.get("status", "running"))


def check_entry(entry: PlanEntry, scope: Sequence[str] | None) -> None:
    """Refuse an entry before anything is sent: unknown protocol, bad URL, unknown test group, bad
    campaign settings, or (unless `scope` is None) an endpoint outside loopback and `scope`."""
    from otfuzz.engine.strategies import GROUPS
    from otfuzz.protocols import protocol_for
    from otfuzz.transport.target import Scope, parse_target

    where = f"plan entry {entry.id}"
    try:
        target = parse_target(entry.target)
        protocol_for(target)
        if scope is not None:
            Scope(list(scope)).check(target)
            if entry.observe:
                host, _, port = entry.observe.rpartition(":")
                Scope(list(scope)).check(parse_target(f"{target.scheme}://{host}:{port}"))
    except OtfuzzError as exc:
        raise OtfuzzError(f"{where}: {exc}") from None
    unknown = [g for g in entry.groups if g not in GROUPS] if entry.kind == "fuzz" else []
    if unknown:
        raise OtfuzzError(f"{where}: unknown test group '{unknown[0]}' (known: {', '.join(GROUPS)})")
    if entry.kind == "fuzz":
        from otfuzz.engine.campaign import CampaignConfig

        try:
            CampaignConfig(target=entry.target, duration=float(entry.duration_s), groups=list(entry.groups),
                           **entry.campaign).validate()
        except OtfuzzError as exc:
            raise OtfuzzError(f"{where}: {exc}") from None


def write_status(runs_dir: Path, plan: Plan, outcomes: dict[str, EntryOutcome]) -> None:
    """plan-status.json: every entry's outcome so far, pending for those without one."""
    doc = {"plan": PLAN_FILE, "entries": [asdict(outcomes[e.id]) if e.id in outcomes else {"id": e.id, "status": "pending", "detail": ""}
                                         for e in plan.entries]}
    (Path(runs_dir) / STATUS_FILE).write_text(json.dumps(doc, indent=2))


@dataclass
class EntryContext:
    """What running one entry needs besides the entry: the plan's seed and system, the runner's
    scope and tester, and two hooks. `on_progress(entry_id, snapshot)` sees a fuzz campaign's
    progress (the zone agents publish it to the coordinator); `on_job(entry_id, job)` receives the
    stoppable campaign or policy test, so a runner can stop it."""

    seed: int = 0
    system: dict[str, Any] = field(default_factory=dict)
    scope: list[str] = field(default_factory=list)
    tester: dict[str, str | None] = field(default_factory=dict)
    on_progress: Callable[[str, Any], None] | None = None
    on_job: Callable[[str, Any], None] | None = None


async def run_entry(entry: PlanEntry, run_dir: Path, context: EntryContext, say: Callable[[str], None] = lambda text: None,
                    label: str | None = None) -> EntryOutcome:
    """Run one plan entry into `run_dir` exactly as run-plan does, resuming a fuzz campaign that
    recorded its start there; used by the local runner and by a zone agent alike."""
    run_dir = Path(run_dir)
    label = label or entry.id
    status = entry_status(run_dir)
    if status == "completed":
        say(f"{label}: already completed, skipped")
        return EntryOutcome(entry.id, "skipped", "completed earlier")
    resume = status is not None and entry.kind == "fuzz"
    if not resume and run_dir.exists():
        shutil.rmtree(run_dir)  # a policy test or a run that never recorded its start begins again
    run_dir.mkdir(parents=True, exist_ok=True)
    say(f"{label}: {'resuming' if resume else 'starting'} {entry.kind} {entry.target} ({_human(entry.duration_s)})")
    try:
        if entry.kind == "policy":
            outcome = await _run_policy(entry, run_dir, context)
        else:
            outcome = await _run_fuzz(entry, run_dir, resume, context)
    except OtfuzzError as exc:
        if not resume:
            shutil.rmtree(run_dir, ignore_errors=True)
        outcome = EntryOutcome(entry.id, "error", str(exc))
    say(f"{label}: {outcome.status}{': ' + outcome.detail if outcome.detail else ''}")
    return outcome


def _entry_meta(entry: PlanEntry, context: EntryContext) -> dict[str, Any]:
    return {"system": context.system.get("name"), "system_sha256": context.system.get("sha256"), "plan_entry": entry.id,
            "kind": entry.kind, "asset": entry.asset, "zone": entry.zone, "channels": entry.channels}


async def _run_policy(entry: PlanEntry, run_dir: Path, context: EntryContext) -> EntryOutcome:
    config = PolicyTestConfig(
        target=entry.target, allow=list(entry.allow), observe=entry.observe, timeout=entry.timeout or 1.0,
        include_disruptive=False, read_only=entry.read_only, scope=context.scope,
        conduit=entry.channels[0].split("/")[0] if entry.channels else None,
        channel=entry.channels[0].split("/", 1)[-1] if entry.channels else None,
        from_zone=entry.from_zones[0] if entry.from_zones else None, to_zone=entry.zone, **context.tester,
    )
    test = PolicyTest(config)
    if context.on_job is not None:
        context.on_job(entry.id, test)
    section = await run_policy_test(config, run_dir, {"system": _entry_meta(entry, context)}, test)
    summary = section["summary"]
    if not summary["complete"]:
        return EntryOutcome(entry.id, "interrupted", f"{summary['sent']} of {summary['operations']} operations sent")
    return EntryOutcome(entry.id, "completed", f"{summary['violations']} violation(s) in {summary['disallowed']} disallowed "
                                               f"operations, {summary['over_blocked']} allowed operation(s) blocked")


async def _run_fuzz(entry: PlanEntry, run_dir: Path, resume: bool, context: EntryContext) -> EntryOutcome:
    from otfuzz.engine.campaign import Campaign, CampaignConfig
    from otfuzz.report.results import load_results
    from otfuzz.store.evidence import EvidenceStore

    store = EvidenceStore.open(run_dir) if resume else EvidenceStore.create(run_dir)
    try:
        if resume:
            config = CampaignConfig.from_dict(store.get_meta("campaign")["config"])
            config.scope = sorted(set(config.scope) | set(context.scope))
        else:
            config = CampaignConfig(target=entry.target, seed=context.seed, duration=float(entry.duration_s), groups=list(entry.groups),
                                    read_only=entry.read_only, scope=context.scope, timeout=entry.timeout, **context.tester,
                                    **entry.campaign)
            store.set_meta("system", _entry_meta(entry, context))
        hook = context.on_progress
        campaign = Campaign(config, run_dir, store, None if hook is None else (lambda snap: hook(entry.id, snap)))
        if context.on_job is not None:
            context.on_job(entry.id, campaign)
        status = await campaign.run(resume)
        reason = campaign.stop_reason
    finally:
        store.close()
    totals = load_results(run_dir)["totals"]
    detail = f"{totals['cases']} cases, {totals['anomalies']} anomalies"
    return EntryOutcome(entry.id, status, detail + (f"; {reason}" if status == "failed" else ""))


class PlanRunner:
    """Runs the entries of a plan into `runs_dir`/<entry id>, resumable as a whole."""

    def __init__(self, plan: Plan, runs_dir: Path, scope: Sequence[str] = (), concurrency: int = 1,
                 tester: dict[str, str | None] | None = None, say: Callable[[str], None] | None = None,
                 on_progress: Callable[[str, Any], None] | None = None,
                 on_done: Callable[[EntryOutcome], None] | None = None) -> None:
        if not 1 <= concurrency <= 16:
            raise OtfuzzError(f"--concurrency must be from 1 to 16, got {concurrency}")
        self.plan = plan
        self.runs_dir = Path(runs_dir)
        self.scope = list(scope)
        self.concurrency = concurrency
        self.tester = tester or {}
        self.say = say or (lambda text: print(text, flush=True))
        self.on_progress = on_progress
        self.on_done = on_done
        self.stop_requested = False
        self._running: dict[str, Any] = {}

    def check(self) -> None:
        """Refuse the plan before anything starts: unknown protocols, bad URLs, out-of-scope endpoints."""
        for entry in self.plan.entries:
            check_entry(entry, self.scope)

    def request_stop(self, reason: str = "stopped by operator (signal)") -> None:
        self.stop_requested = True
        for job in list(self._running.values()):
            job.request_stop(reason)

    async def run(self) -> list[EntryOutcome]:
        gate = asyncio.Semaphore(self.concurrency)
        outcomes: dict[str, EntryOutcome] = {}

        async def one(index: int, entry: PlanEntry) -> None:
            async with gate:
                if self.stop_requested:
                    outcomes[entry.id] = EntryOutcome(entry.id, "interrupted", "not started")
                    return
                outcome = await self._run_entry(index, entry)
                outcomes[entry.id] = outcome
                write_status(self.runs_dir, self.plan, outcomes)
                if self.on_done is not None:
                    self.on_done(outcome)

        await asyncio.gather(*(one(i, e) for i, e in enumerate(self.plan.entries, start=1)))
        ordered = [outcomes[e.id] for e in self.plan.entries]
        write_status(self.runs_dir, self.plan, {o.id: o for o in ordered})
        return ordered

    async def _run_entry(self, index: int, entry: PlanEntry) -> EntryOutcome:
        context = EntryContext(self.plan.seed, self.plan.system, self.scope, self.tester, self.on_progress,
                               on_job=self._running.__setitem__)
        try:
            return await run_entry(entry, self.runs_dir / entry.id, context, self.say,
                                   f"[{index}/{len(self.plan.entries)}] {entry.id}")
        finally:
            self._running.pop(entry.id, None)


def run_plan(plan: Plan, runs_dir: Path, resume: bool, scope: Sequence[str] = (), concurrency: int = 1,
             tester: dict[str, str | None] | None = None, say: Callable[[str], None] | None = None,
             on_progress: Callable[[str, Any], None] | None = None,
             on_done: Callable[[EntryOutcome], None] | None = None) -> list[EntryOutcome]:
    """Check the plan, prepare its folder and run it with Ctrl-C handling (stop, then resume later)."""
    runner = PlanRunner(plan, runs_dir, scope, concurrency, tester, say, on_progress, on_done)
    runner.check()
    if not resume:
        runs_dir.mkdir(parents=True, exist_ok=True)
        write_plan(plan, runs_dir / PLAN_FILE)

    return run_until_stopped(runner, runner.run)


def plan_exit_status(outcomes: Sequence[EntryOutcome]) -> int:
    """0 when every entry completed, 130 if any was interrupted, 3 if any failed or could not start
    (or, run by zone agents, was refused by its agent, lost, or came back in a bundle that did not verify)."""
    statuses = {o.status for o in outcomes}
    if "interrupted" in statuses:
        return 130
    if statuses & {"failed", "error", "refused", "rejected", "lost"}:
        return 3
    return 0
