"""The coordinator: run-plan with --broker sends each entry to its zone's agents and collects the evidence.

Each entry becomes one Celery task on its zone's queue (broker.dispatch_zone) carrying the
entry as data. The coordinator records the task ids in RUNS/agents.json before it waits, so a
killed coordinator continues with `run-plan --resume RUNS`: finished bundles are collected,
running tasks waited for, and only entries that never got a task (or failed) are sent again.

A finished task names its bundle in the broker. The coordinator verifies it against the agents'
public keys it was given (`--trust KEYS/`, every *.pub in it): only a bundle whose signer is
trusted and whose every file matches the signed manifest is unpacked into RUNS/<entry id>; any
other is kept in RUNS/rejected/ for inspection, reported and never merged. Trusted bundles are
kept in RUNS/bundles/ as the signed evidence of what each agent sent.

An entry is reported lost when it has not finished and, for `--lost-after` seconds, no agent
has held its lease and no agent of its zone has been up (its agent died and no other agent of
the zone is there to take it over). A queued entry waiting for a busy agent is not lost.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from otfuzz.agents.broker import (TASK_NAME, TASK_VERSION, connect, dispatch_zone, get_json, lease_key, list_agents, make_app,
                                  mask_url,
                                  zone_queue)
from otfuzz.compliance.plan import EntryOutcome, Plan, check_entry, entry_status, write_status
from otfuzz.errors import OtfuzzError

DISPATCH_FILE = "agents.json"
DEFAULT_LOST_AFTER = 1800.0
FINAL = ("completed", "failed", "interrupted", "error", "skipped", "refused", "rejected", "lost")
_RESEND = ("error", "refused", "rejected", "lost")


def load_trust(folder: Path) -> dict[str, Path]:
    """fingerprint -> public key file for every *.pub in `folder`; refused if there is none."""
    from otfuzz.report.bundle import fingerprint, load_public_key

    folder = Path(folder)
    if not folder.is_dir():
        raise OtfuzzError(f"--trust {folder} is not a folder of agents' public keys (*.pub)")
    keys = {fingerprint(load_public_key(path)): path for path in sorted(folder.glob("*.pub"))}
    if not keys:
        raise OtfuzzError(f"--trust {folder} holds no public key (*.pub): copy each agent's WORK/agent.pub there")
    return keys


class RemotePlanRunner:
    """Dispatches a plan's entries to zone agents, follows them and merges their verified bundles."""

    def __init__(self, plan: Plan, runs_dir: Path, broker: str, trust: dict[str, Path], lost_after: float = DEFAULT_LOST_AFTER,
                 tester: dict[str, str | None] | None = None, say: Callable[[str], None] | None = None,
                 poll: float = 0.5) -> None:
        if not lost_after > 0:
            raise OtfuzzError(f"--lost-after must be positive, got {lost_after:g}")
        self.plan = plan
        self.runs_dir = Path(runs_dir)
        self.broker = broker
        self.trust = trust
        self.lost_after = lost_after
        self.tester = tester or {}
        self.say = say or (lambda text: print(text, flush=True))
        self.poll = poll
        self.client = connect(broker)
        self.app = make_app(broker)

    def check(self) -> None:
        """Refuse what no agent could run (scope is each agent's own, checked there)."""
        for entry in self.plan.entries:
            check_entry(entry, None)

    # -- dispatch record -----------------------------------------------------------------------

    def _load_record(self) -> dict[str, Any]:
        path = self.runs_dir / DISPATCH_FILE
        if path.is_file():
            return json.loads(path.read_text())
        return {"plan_key": secrets.token_hex(8), "broker": mask_url(self.broker), "tasks": {}}

    def _save_record(self, record: dict[str, Any]) -> None:
        tmp = self.runs_dir / (DISPATCH_FILE + ".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(self.runs_dir / DISPATCH_FILE)

    def _previous_outcomes(self) -> dict[str, EntryOutcome]:
        from otfuzz.compliance.plan import STATUS_FILE

        path = self.runs_dir / STATUS_FILE
        if not path.is_file():
            return {}
        doc = json.loads(path.read_text())
        return {e["id"]: EntryOutcome(e["id"], e["status"], e.get("detail", "")) for e in doc.get("entries", [])
                if e.get("status") in FINAL}

    # -- running -------------------------------------------------------------------------------

    def payload(self, plan_key: str, entry: Any) -> dict[str, Any]:
        return {"version": TASK_VERSION, "plan_key": plan_key, "entry": asdict(entry), "seed": self.plan.seed,
                "system": self.plan.system, "tester": self.tester}

    def run(self) -> list[EntryOutcome]:
        """Send what is not done yet, wait for every entry's outcome, return them in plan order."""
        record = self._load_record()
        previous = self._previous_outcomes()
        outcomes: dict[str, EntryOutcome] = {}
        waiting: dict[str, Any] = {}
        for entry in self.plan.entries:
            if entry_status(self.runs_dir / entry.id) == "completed":
                outcomes[entry.id] = EntryOutcome(entry.id, "skipped", "completed earlier")
                self.say(f"{entry.id}: already completed, skipped")
                continue
            task_id = record["tasks"].get(entry.id)
            state = self.app.AsyncResult(task_id).state if task_id else None
            old = previous.get(entry.id)
            if task_id is None or state == "FAILURE" or (old is not None and old.status in _RESEND):
                zone = dispatch_zone(entry.kind, entry.zone, entry.from_zones)
                sent = self.app.send_task(TASK_NAME, args=[self.payload(record["plan_key"], entry)], queue=zone_queue(zone))
                task_id = sent.id
                record["tasks"][entry.id] = task_id
                self._save_record(record)
                self.say(f"{entry.id}: sent to zone {zone} ({entry.kind} {entry.target})")
            else:
                self.say(f"{entry.id}: waiting for the task sent earlier ({state.lower()})")
            waiting[entry.id] = {"task": task_id, "zone": dispatch_zone(entry.kind, entry.zone, entry.from_zones),
                                 "last_alive": time.monotonic(), "shown": None}
        write_status(self.runs_dir, self.plan, outcomes)
        while waiting:
            zones_up = {str(a.get("zone")) for a in list_agents(self.client)}
            for entry_id in list(waiting):
                outcome = self._follow(record["plan_key"], entry_id, waiting[entry_id], zones_up)
                if outcome is not None:
                    outcomes[entry_id] = outcome
                    del waiting[entry_id]
                    self.say(f"{entry_id}: {outcome.status}{': ' + outcome.detail if outcome.detail else ''}")
                    write_status(self.runs_dir, self.plan, outcomes)
            if waiting:
                time.sleep(self.poll)
        ordered = [outcomes[e.id] for e in self.plan.entries]
        write_status(self.runs_dir, self.plan, {o.id: o for o in ordered})
        return ordered

    def _follow(self, plan_key: str, entry_id: str, watch: dict[str, Any], zones_up: set[str]) -> EntryOutcome | None:
        result = self.app.AsyncResult(watch["task"])
        state = result.state
        lease = get_json(self.client, lease_key(plan_key, entry_id))
        now = time.monotonic()
        if lease is not None or watch["zone"] in zones_up:  # a stale PROGRESS state is no sign of life
            watch["last_alive"] = now
        if state == "PROGRESS" and isinstance(result.info, dict):
            info = result.info
            shown = (info.get("agent"), int(info.get("elapsed", 0)) // 5)
            if shown != watch["shown"]:
                watch["shown"] = shown
                self.say(f"{entry_id}: running on {info.get('agent')}: {info.get('cases')} cases, {info.get('anomalies')} anomalies, "
                         f"{info.get('elapsed')} s, target {info.get('health')}")
        if state == "SUCCESS":
            return self.collect(entry_id, result.result)
        if state == "FAILURE":
            return EntryOutcome(entry_id, "error", f"agent task failed: {type(result.result).__name__}: {result.result}")
        if now - watch["last_alive"] > self.lost_after:
            return EntryOutcome(entry_id, "lost", f"no agent of zone {watch['zone']} worked on it or was up for {self.lost_after:g} s "
                                                  f"(task {watch['task']}); start one and run-plan --resume")
        return None

    def collect(self, entry_id: str, result: Any) -> EntryOutcome:
        """Verify the bundle a finished task names and unpack it, or reject it."""
        from otfuzz.report.bundle import extract_bundle, verify_bundle

        if not isinstance(result, dict):
            return EntryOutcome(entry_id, "error", "agent returned no result")
        status, detail, agent = str(result.get("status")), str(result.get("detail") or ""), result.get("agent")
        if status == "refused":
            return EntryOutcome(entry_id, "refused", f"agent {agent} refused it: {detail}")
        key = result.get("bundle")
        if not key:
            return EntryOutcome(entry_id, status if status in FINAL else "error", f"{detail} (agent {agent}, no evidence returned)")
        data = self.client.get(key)
        if data is None:
            return EntryOutcome(entry_id, "error", f"agent {agent} finished but its bundle expired from the broker")
        folder = self.runs_dir / "bundles"
        folder.mkdir(exist_ok=True)
        path = folder / f"{entry_id}.bundle"
        path.write_bytes(data)
        problem = self._verify(path, verify_bundle)
        if problem is not None:
            rejected = self.runs_dir / "rejected"
            rejected.mkdir(exist_ok=True)
            shutil.move(str(path), rejected / path.name)
            return EntryOutcome(entry_id, "rejected", f"bundle from agent {agent} rejected, not merged: {problem} "
                                                      f"(kept in {rejected / path.name})")
        run_dir = self.runs_dir / entry_id
        shutil.rmtree(run_dir, ignore_errors=True)
        extract_bundle(path, run_dir)
        return EntryOutcome(entry_id, status if status in FINAL else "error", f"{detail} (agent {agent})")

    def _verify(self, path: Path, verify_bundle: Callable[..., Any]) -> str | None:
        try:
            claimed = verify_bundle(path)
        except OtfuzzError as exc:
            return str(exc)
        if claimed.fingerprint not in self.trust:
            return f"signed by {claimed.fingerprint}, not a key in --trust"
        try:
            check = verify_bundle(path, public_key=self.trust[claimed.fingerprint])
        except OtfuzzError as exc:
            return str(exc)
        if not check.ok:
            lines = [line for line in check.lines() if line.startswith(("PROBLEM", "ALTERED", "ADDED", "REMOVED"))]
            return "; ".join(lines[:3]) or "verification failed"
        return None
