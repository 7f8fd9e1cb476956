"""A zone agent: a Celery worker inside one zone that runs plan entries sent to that zone's queue.

The agent is a real Celery worker process (solo pool: one campaign at a time) consuming only
`otfuzz.zone.<zone>`. Its scope is set where it runs (`--scope`) and never by a task: before a
byte is sent it refuses a task whose target or observed endpoint lies outside loopback and that
scope, a task for another zone, and a task carrying commands or local file names (`target_cmd`,
`baseline`). It then runs the entry exactly as run-plan does (compliance.plan.run_entry), and
returns the run folder as an evidence bundle signed with its own Ed25519 key.

While a task runs, the agent's `Lease` thread (every few seconds):
- refreshes the agent's lease on the entry (the coordinator's sign of life for it),
- refreshes its message's time in the transport's unacknowledged set, so the broker redelivers
  the task only once the agent has been silent for `--redeliver-after` seconds (it died),
- uploads a signed checkpoint of the run folder (a consistent copy of the evidence store), from
  which another agent of the zone resumes the campaign with resume semantics: it continues
  at the checkpoint's resume point, so no case id is lost or counted twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import socket
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from otfuzz.agents.broker import (KEEP_S, TASK_VERSION, UNACKED_INDEX_KEY, UNACKED_KEY, agent_key, bundle_key, checkpoint_key,
                                  connect, dispatch_zone, lease_key, make_app, mask_url, zone_keys_key, zone_queue)
from otfuzz.errors import OtfuzzError

# Settings a task may not carry: they name commands or files on the agent's machine.
FORBIDDEN_SETTINGS = ("target_cmd", "baseline")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class AgentConfig:
    broker: str
    zone: str
    scope: list[str]
    work: Path
    key: Path
    name: str
    redeliver_after: float
    fingerprint: str = ""
    public_key: Path | None = None
    say: Callable[[str], None] = field(default=lambda text: print(text, flush=True))

    @property
    def beat(self) -> float:
        """Seconds between lease refreshes: several per redelivery window, at most 30."""
        return max(0.5, min(30.0, self.redeliver_after / 6))


def prepare_agent(broker: str, zone: str, scope: list[str], work: Path, key: Path | None = None, name: str | None = None,
                  redeliver_after: float = 600.0) -> AgentConfig:
    """Check everything an agent needs before it consumes a task; refuse in one line otherwise.

    Without `key`, the agent's key pair is WORK/agent.key and .pub, made on first start: give
    the .pub to the coordinator (`run-plan --trust KEYS/`).
    """
    from otfuzz.report.bundle import fingerprint, generate_keypair, load_private_key
    from otfuzz.transport.target import Scope

    if not _NAME.match(zone):
        raise OtfuzzError(f"--zone '{zone}' is not a zone name (letters, digits, '.', '_', '-')")
    Scope(scope)  # refuses a bad --scope entry
    if not redeliver_after > 0:
        raise OtfuzzError(f"--redeliver-after must be positive, got {redeliver_after:g}")
    name = name or f"{zone}-{socket.gethostname()}-{os.getpid()}"
    if not _NAME.match(name):
        raise OtfuzzError(f"--name '{name}' is not an agent name (letters, digits, '.', '_', '-')")
    work = Path(work)
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OtfuzzError(f"cannot create work folder {work}: {exc.strerror}") from None
    if key is None:
        key = work / "agent.key"
        if not key.exists():
            generate_keypair(work / "agent")
    private = load_private_key(key)
    connect(broker).close()  # unreachable broker: one line, exit 2, before the worker starts
    public = Path(str(key)[: -len(".key")] + ".pub") if str(key).endswith(".key") else None
    return AgentConfig(broker, zone, list(scope), work, Path(key), name, float(redeliver_after), fingerprint(private.public_key()),
                       public if public is not None and public.is_file() else None)


def _agent_pool() -> type:
    """Celery's solo pool, with its job termination (Celery's cold shutdown, the second Ctrl-C)
    asking the running campaign to stop cleanly. The solo pool runs the task in the worker's own
    thread and cannot terminate it: Celery raises NotImplementedError from its signal handler,
    which lands wherever the campaign happens to be (out of the event loop when it waits, into
    a callback that swallows it when it is busy), so a stop was a matter of timing."""
    from celery.concurrency.solo import TaskPool

    class AgentPool(TaskPool):
        def terminate_job(self, pid: int, signal: Any = None) -> None:
            agent = getattr(self.app, "otfuzz_agent", None)
            if agent is not None:
                agent.stop_entry()

    return AgentPool


class Agent:
    """One agent process: its registration, its task, and the Celery worker that runs it."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.client = connect(config.broker)
        self.app = make_app(config.broker, config.redeliver_after)
        self.app.conf.worker_pool = _agent_pool()
        self.app.otfuzz_agent = self
        self.running: dict[str, Any] | None = None
        self._job: tuple[asyncio.AbstractEventLoop, Any] | None = None  # the running campaign, to stop it
        self.started = time.time()
        self._stop = threading.Event()
        agent = self

        @self.app.task(name="otfuzz.run_entry", bind=True)
        def run_entry_task(task: Any, payload: dict[str, Any]) -> dict[str, Any]:
            return agent.execute(task, payload)

        self.task = run_entry_task

    # -- registration --------------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        c = self.config
        return {"name": c.name, "zone": c.zone, "scope": c.scope, "fingerprint": c.fingerprint, "host": socket.gethostname(),
                "pid": os.getpid(), "started": self.started, "seen": time.time(), "running": self.running}

    def register(self) -> None:
        ttl = max(3, int(self.config.beat * 4))
        self.client.set(agent_key(self.config.name), json.dumps(self.record()), ex=ttl)
        self.client.sadd(zone_keys_key(self.config.zone), self.config.fingerprint)

    def _register_loop(self) -> None:
        delay = self.config.beat
        while not self._stop.wait(delay):
            try:
                self.register()
                delay = self.config.beat
            except Exception as exc:  # noqa: BLE001 - a broker outage must not end the agent; retry with backoff
                delay = min(60.0, delay * 2)
                self.config.say(f"agent {self.config.name}: broker unreachable ({type(exc).__name__}); retrying in {delay:.0f} s")

    def serve(self) -> None:
        """Register, then run the Celery worker on this zone's queue until it is stopped."""
        c = self.config
        self.register()
        c.say(f"agent {c.name}: zone {c.zone}, scope {', '.join(c.scope) or 'loopback only'}, key {c.fingerprint}"
              + (f" (public key {c.public_key})" if c.public_key else ""))
        c.say(f"agent {c.name}: consuming {zone_queue(c.zone)} on {mask_url(c.broker)}; redelivery after {c.redeliver_after:g} s")
        beat = threading.Thread(target=self._register_loop, name="otfuzz-agent-register", daemon=True)
        beat.start()
        try:
            self.app.worker_main(["--quiet", "worker", f"--queues={zone_queue(c.zone)}", f"--hostname={c.name}@%h",
                                  "--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel=WARNING"])
        finally:
            self._stop.set()
            try:
                self.client.delete(agent_key(c.name))
            except Exception:  # noqa: BLE001 - leaving: the record expires by itself
                pass

    # -- one task ------------------------------------------------------------------------------

    def stop_entry(self) -> None:
        """Ask the running campaign or policy test to stop: it records what it did and ends as
        interrupted, and the task goes back to the zone's queue (see stopped_mid_entry)."""
        if self._job is not None:
            loop, job = self._job
            loop.call_soon_threadsafe(job.request_stop, f"agent {self.config.name} stopped (cold shutdown)")

    def refuse(self, payload: Any, reason: str) -> dict[str, Any]:
        entry = payload.get("entry") if isinstance(payload, dict) else None
        entry_id = entry.get("id") if isinstance(entry, dict) else None
        self.config.say(f"agent {self.config.name}: refused task for entry {entry_id}: {reason}")
        return {"entry": entry_id, "status": "refused", "detail": reason, "agent": self.config.name, "zone": self.config.zone,
                "fingerprint": self.config.fingerprint, "bundle": None}

    def accept(self, payload: Any) -> Any:
        """The entry of a task this agent may run, or the reason it refuses it (nothing sent yet)."""
        from otfuzz.compliance.plan import check_entry, entry_from_dict

        if not isinstance(payload, dict) or payload.get("version") != TASK_VERSION:
            return f"not an otfuzz task of version {TASK_VERSION}"
        if not isinstance(payload.get("plan_key"), str) or not _NAME.match(payload["plan_key"]):
            return "task has no valid plan key"
        try:
            entry = entry_from_dict(payload.get("entry"), "task")
        except OtfuzzError as exc:
            return str(exc)
        forbidden = sorted(set(entry.campaign) & set(FORBIDDEN_SETTINGS))
        if forbidden:
            return f"task carries '{forbidden[0]}': an agent never runs commands or reads files a task names"
        zone = dispatch_zone(entry.kind, entry.zone, entry.from_zones)
        if zone != self.config.zone:
            return f"task is for zone '{zone}', this agent serves zone '{self.config.zone}'"
        try:
            check_entry(entry, self.config.scope)
        except OtfuzzError as exc:
            return f"{exc} (agent scope: {', '.join(self.config.scope) or 'loopback only'})"
        return entry

    def execute(self, task: Any, payload: dict[str, Any]) -> dict[str, Any]:
        from otfuzz.compliance.plan import EntryContext, PlanEntry, entry_status, run_entry

        entry = self.accept(payload)
        if not isinstance(entry, PlanEntry):
            return self.refuse(payload, entry)
        plan_key = payload["plan_key"]
        lease = Lease(self, plan_key, entry.id, task.request.id)
        holder = lease.acquire()
        if holder is not None:  # the task came back while its agent still works on it: try again later
            raise task.retry(countdown=self.config.redeliver_after, max_retries=None)
        run_dir = self.config.work / plan_key / entry.id
        resumed_from = None
        try:
            if entry_status(run_dir) is None:
                resumed_from = self.restore_checkpoint(plan_key, entry.id, run_dir)
            last = [0.0]

            def on_progress(entry_id: str, snap: Any) -> None:
                now = time.monotonic()
                lease.progress = {"cases": snap.cases, "elapsed": round(snap.elapsed, 1), "health": snap.health}
                if now - last[0] >= 1.0:
                    last[0] = now
                    task.update_state(state="PROGRESS", meta={"entry": entry_id, "agent": self.config.name, "cases": snap.cases,
                                                              "rate": round(snap.rate, 1), "anomalies": sum(snap.anomalies.values()),
                                                              "elapsed": round(snap.elapsed, 1), "health": snap.health})

            def on_job(entry_id: str, job: Any) -> None:
                self._job = (asyncio.get_running_loop(), job)

            context = EntryContext(int(payload.get("seed") or 0), dict(payload.get("system") or {}), self.config.scope,
                                   {k: v for k, v in dict(payload.get("tester") or {}).items()
                                    if k in ("operator", "organisation", "independence") and (v is None or isinstance(v, str))},
                                   on_progress, on_job)
            self.running = {"plan": plan_key, "entry": entry.id, "since": time.time()}
            lease.start(run_dir)
            say = lambda text: self.config.say(f"agent {self.config.name}: {text}")  # noqa: E731
            try:
                outcome = asyncio.run(run_entry(entry, run_dir, context, say))
            except BaseException as exc:
                self.stopped_mid_entry(exc, lease, plan_key, entry.id, run_dir)
                raise
            if outcome.status == "interrupted":
                self.stopped_mid_entry(None, lease, plan_key, entry.id, run_dir)
            lease.stop()
            status = "completed" if outcome.status == "skipped" else outcome.status
            self.note_agent(run_dir, resumed_from, final=True)
            result = {"entry": entry.id, "status": status, "detail": outcome.detail, "agent": self.config.name,
                      "zone": self.config.zone, "fingerprint": self.config.fingerprint, "bundle": None, "resumed_from": resumed_from}
            if run_dir.is_dir() and any(run_dir.iterdir()):
                data = self.pack(run_dir, run_dir.parent / f"{entry.id}.bundle")
                self.client.set(bundle_key(plan_key, entry.id), data, ex=KEEP_S)
                result.update(bundle=bundle_key(plan_key, entry.id), bytes=len(data))
            self.client.delete(checkpoint_key(plan_key, entry.id))
            return result
        finally:
            self._job = None
            lease.stop()
            lease.release()
            self.running = None

    def stopped_mid_entry(self, exc: BaseException | None, lease: Lease, plan_key: str, entry_id: str, run_dir: Path) -> None:
        """A second Ctrl-C (Celery's cold shutdown) lands inside the campaign: leave a last checkpoint
        and put the task back on the zone's queue, so an agent resumes it instead of it failing."""
        from celery.exceptions import Reject
        from celery.worker import state

        if state.should_terminate is None and state.should_stop is None:
            return  # not a shutdown: a real failure, reported as such
        lease.stop()
        try:
            self.checkpoint(plan_key, entry_id, run_dir)
        except Exception:  # noqa: BLE001 - the previous checkpoint is still there
            pass
        lease.release()
        self.config.say(f"agent {self.config.name}: stopped during {entry_id}; it goes back to zone {self.config.zone}'s queue")
        raise Reject(f"agent stopped during {entry_id}", requeue=True) from None

    # -- bundles and checkpoints ---------------------------------------------------------------

    def pack(self, run_dir: Path, out: Path) -> bytes:
        from otfuzz.report.bundle import create_bundle

        create_bundle(run_dir, self.config.key, out)
        try:
            return out.read_bytes()
        finally:
            out.unlink(missing_ok=True)

    def checkpoint(self, plan_key: str, entry_id: str, run_dir: Path) -> bool:
        """Upload a signed, consistent copy of the running campaign's folder; False if none yet."""
        from otfuzz.store.evidence import STORE_NAME

        if not (run_dir / STORE_NAME).is_file():
            return False
        with tempfile.TemporaryDirectory(prefix="otfuzz-checkpoint-", dir=self.config.work) as tmp:
            copy = Path(tmp) / entry_id
            snapshot_run(run_dir, copy)
            if not self.note_agent(copy, None, final=False):
                return False
            data = self.pack(copy, Path(tmp) / "checkpoint.bundle")
        self.client.set(checkpoint_key(plan_key, entry_id), data, ex=KEEP_S)
        return True

    def restore_checkpoint(self, plan_key: str, entry_id: str, run_dir: Path) -> dict[str, Any] | None:
        """Unpack the checkpoint another agent of this zone left for the entry; what it was, or None."""
        from otfuzz.report.bundle import extract_bundle, verify_bundle
        from otfuzz.store.evidence import EvidenceStore

        data = self.client.get(checkpoint_key(plan_key, entry_id))
        if not data:
            return None
        path = run_dir.parent / f".{entry_id}.checkpoint"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        try:
            check = verify_bundle(path)
            trusted = {m.decode() if isinstance(m, bytes) else m for m in self.client.smembers(zone_keys_key(self.config.zone))}
            if not check.ok or check.fingerprint not in trusted:
                self.config.say(f"agent {self.config.name}: checkpoint of {entry_id} does not verify or was signed outside the "
                                "zone; starting the entry afresh")
                return None
            shutil.rmtree(run_dir, ignore_errors=True)
            extract_bundle(path, run_dir)
        finally:
            path.unlink(missing_ok=True)
        store = EvidenceStore.open(run_dir)
        try:
            history = store.get_meta("agents") or []
            next_case, _ = store.progress()
        finally:
            store.close()
        previous = history[-1] if history else {}
        self.config.say(f"agent {self.config.name}: resuming {entry_id} from the checkpoint of {previous.get('name', '?')} "
                        f"at case {next_case}")
        return {"agent": previous.get("name"), "fingerprint": check.fingerprint, "next_case": next_case}

    def note_agent(self, run_dir: Path, resumed_from: dict[str, Any] | None, final: bool) -> bool:
        """Record in the run's store which agent ran it (each agent that worked on it, in order)."""
        from otfuzz.store.evidence import EvidenceStore

        try:
            store = EvidenceStore.open(run_dir)
        except OtfuzzError:
            return False
        try:
            history = [h for h in (store.get_meta("agents") or []) if h.get("name") != self.config.name or h.get("final")]
            next_case, _ = store.progress()
            history.append({"name": self.config.name, "zone": self.config.zone, "fingerprint": self.config.fingerprint,
                            "final": final, "next_case": next_case,
                            **({"resumed_from": resumed_from} if resumed_from else {})})
            store.set_meta("agents", history)
        finally:
            store.close()
        return True


def snapshot_run(run_dir: Path, dest: Path) -> None:
    """A consistent copy of a run folder being written: the store through SQLite's backup, the rest as is."""
    from otfuzz.store.evidence import STORE_NAME

    dest.mkdir(parents=True)
    for path in run_dir.rglob("*"):
        name = path.relative_to(run_dir)
        if path.is_file() and not name.name.startswith(STORE_NAME):
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / name)
    source = sqlite3.connect(f"file:{run_dir / STORE_NAME}?mode=ro", uri=True, timeout=10)
    target = sqlite3.connect(dest / STORE_NAME)
    try:
        source.backup(target)
    finally:
        target.close()
        source.close()


class Lease:
    """An agent's claim on the entry it runs, kept alive by a thread while the campaign runs."""

    def __init__(self, agent: Agent, plan_key: str, entry_id: str, task_id: str) -> None:
        self.agent = agent
        self.plan_key = plan_key
        self.entry_id = entry_id
        self.task_id = task_id
        self.key = lease_key(plan_key, entry_id)
        self.progress: dict[str, Any] = {}
        self._tag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ttl(self) -> int:
        return max(2, int(self.agent.config.beat * 3 + 0.999))

    def _value(self) -> str:
        return json.dumps({"agent": self.agent.config.name, "task": self.task_id, "seen": time.time(), **self.progress})

    def acquire(self) -> str | None:
        """Take the lease; the name of another agent that holds it, or None."""
        client = self.agent.client
        if client.set(self.key, self._value(), ex=self.ttl, nx=True):
            return None
        raw = client.get(self.key)
        holder = json.loads(raw).get("agent") if raw else None
        if holder in (None, self.agent.config.name):
            client.set(self.key, self._value(), ex=self.ttl)
            return None
        return str(holder)

    def start(self, run_dir: Path) -> None:
        self._tag = self._delivery_tag()
        self._thread = threading.Thread(target=self._loop, args=(run_dir,), name="otfuzz-agent-lease", daemon=True)
        self._thread.start()

    def _delivery_tag(self) -> str | None:
        """Our message's tag in the transport's unacknowledged set (its value holds the task id)."""
        for tag, value in self.agent.client.hscan_iter(UNACKED_KEY, count=500):
            if self.task_id.encode() in value:
                return tag.decode() if isinstance(tag, bytes) else str(tag)
        return None

    def _loop(self, run_dir: Path) -> None:
        client = self.agent.client
        last_cases = None
        delay = self.agent.config.beat
        while not self._stop.wait(delay):
            try:
                client.set(self.key, self._value(), ex=self.ttl)
                if self._tag is not None:
                    client.zadd(UNACKED_INDEX_KEY, {self._tag: time.time()}, xx=True)
                cases = self.progress.get("cases")
                if cases != last_cases and self.agent.checkpoint(self.plan_key, self.entry_id, run_dir):
                    last_cases = cases
                delay = self.agent.config.beat
            except Exception as exc:  # noqa: BLE001 - keep the campaign running through a broker outage
                delay = min(60.0, delay * 2)
                print(f"agent {self.agent.config.name}: lease refresh failed ({type(exc).__name__}); retrying in {delay:.0f} s",
                      file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def release(self) -> None:
        try:
            raw = self.agent.client.get(self.key)
            if raw and json.loads(raw).get("agent") == self.agent.config.name:
                self.agent.client.delete(self.key)
        except Exception:  # noqa: BLE001 - the lease expires by itself
            pass
