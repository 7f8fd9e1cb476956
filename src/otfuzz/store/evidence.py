"""The evidence store: one SQLite file per run folder.

It holds what an auditor needs and nothing that can be regenerated: campaign metadata (tool
version, seed, full configuration, target, host, times), counts per test group and reply class,
a resume point, one timeline sample a second, every probe and event, and every anomaly whole.
Individual cases are not stored: any case is regenerated from seed and id.

Crash safety: WAL journal, counts and the resume point are committed together in one
transaction at most once a second, and anomalies are committed the moment they are recorded.
A SIGKILL therefore loses at most the last second of counts (those cases are re-run on resume,
so totals stay exact) and never an anomaly.
"""

from __future__ import annotations

import json
import platform
import socket
import sqlite3
import uuid
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

from otfuzz import __version__
from otfuzz.errors import OtfuzzError

STORE_NAME = "evidence.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS counts (grp TEXT NOT NULL, reply TEXT NOT NULL, n INTEGER NOT NULL,
                                   PRIMARY KEY (grp, reply));
CREATE TABLE IF NOT EXISTS progress (id INTEGER PRIMARY KEY CHECK (id = 1), next_case INTEGER NOT NULL,
                                     elapsed REAL NOT NULL);
CREATE TABLE IF NOT EXISTS timeline (t REAL NOT NULL, cases INTEGER NOT NULL, anomalies INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS probes (t REAL NOT NULL, ok INTEGER NOT NULL, latency_ms REAL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (t REAL NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS anomalies (id INTEGER PRIMARY KEY AUTOINCREMENT, case_id INTEGER NOT NULL,
                                      grp TEXT NOT NULL, class TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (series TEXT NOT NULL, t REAL NOT NULL, record TEXT NOT NULL);
"""


def now_iso() -> str:
    """UTC time with milliseconds: the timestamps of every record."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def host_record() -> dict[str, str]:
    return {"hostname": socket.gethostname(), "platform": platform.platform(), "python": platform.python_version()}


class _Config(Protocol):
    seed: int
    operator: str | None
    organisation: str | None
    independence: str | None

    def as_dict(self) -> dict[str, Any]: ...

    def sha256(self) -> str: ...


class EvidenceStore:
    """Batched, crash-safe writer and reader of one run's evidence."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise OtfuzzError(f"cannot open evidence store {path}: {exc}") from None
        self._counts: Counter[tuple[str, str]] = Counter()
        self._probes: list[tuple[float, int, float | None, str]] = []
        self._events: list[tuple[float, str, str]] = []
        self._samples: list[tuple[str, float, str]] = []

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: Path) -> EvidenceStore:
        return cls(run_dir / STORE_NAME)

    @classmethod
    def open(cls, run_dir: Path) -> EvidenceStore:
        path = run_dir / STORE_NAME
        if not path.is_file():
            raise OtfuzzError(f"{run_dir} is not an otfuzz run folder (no {STORE_NAME})")
        store = cls(path)
        if store.get_meta("campaign") is None:
            raise OtfuzzError(f"{path} holds no campaign metadata")
        return store

    def close(self) -> None:
        self.db.close()

    # -- metadata -----------------------------------------------------------------------------

    def set_meta(self, key: str, value: Any) -> None:
        self._write("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, json.dumps(value, sort_keys=True)))

    def record_start(self, kind: str, config: _Config, target: dict[str, Any]) -> None:
        """Who ran what against what, when and where: the head of every run's evidence."""
        self.set_meta("campaign", {
            "id": str(uuid.uuid4()), "kind": kind, "seed": getattr(config, "seed", 0), "config": config.as_dict(),
            "config_sha256": config.sha256(), "started_at": now_iso(), "ended_at": None, "status": "running",
            "host": host_record(), "operator": config.operator, "organisation": config.organisation,
            "independence": config.independence,
        })
        self.set_meta("tool", {"name": "otfuzz", "version": __version__})
        self.set_meta("target", target)

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- batched results ----------------------------------------------------------------------

    def count(self, group: str, reply: str, n: int = 1) -> None:
        self._counts[(group, reply)] += n

    def probe(self, t: float, ok: bool, latency_ms: float | None, reason: str) -> None:
        self._probes.append((t, int(ok), latency_ms, reason))

    def event(self, t: float, kind: str, detail: str) -> None:
        self._events.append((t, kind, detail))

    def sample(self, series: str, t: float, record: dict[str, Any]) -> None:
        """A time-series point of another layer (stress load, monitor latency...)."""
        self._samples.append((series, t, json.dumps(record, sort_keys=True)))

    def flush(self, next_case: int, elapsed: float, timeline: tuple[float, int, int] | None = None) -> None:
        """Commit pending counts with the resume point they correspond to, atomically."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "INSERT INTO counts (grp, reply, n) VALUES (?, ?, ?) ON CONFLICT (grp, reply) DO UPDATE SET n = n + excluded.n",
                [(g, r, n) for (g, r), n in self._counts.items()],
            )
            self.db.execute("INSERT OR REPLACE INTO progress (id, next_case, elapsed) VALUES (1, ?, ?)", (next_case, elapsed))
            if timeline is not None:
                self.db.execute("INSERT INTO timeline (t, cases, anomalies) VALUES (?, ?, ?)", timeline)
            self.db.executemany("INSERT INTO probes (t, ok, latency_ms, reason) VALUES (?, ?, ?, ?)", self._probes)
            self.db.executemany("INSERT INTO events (t, kind, detail) VALUES (?, ?, ?)", self._events)
            self.db.executemany("INSERT INTO samples (series, t, record) VALUES (?, ?, ?)", self._samples)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise OtfuzzError(f"cannot write evidence store {self.path}: {exc}") from None
        self._counts.clear()
        self._probes.clear()
        self._events.clear()
        self._samples.clear()

    def add_anomaly(self, case_id: int, group: str, anomaly_class: str, record: dict[str, Any]) -> int:
        """Record an anomaly and commit it at once: anomalies are never batched."""
        cur = self._write(
            "INSERT INTO anomalies (case_id, grp, class, record) VALUES (?, ?, ?, ?)",
            (case_id, group, anomaly_class, json.dumps(record, sort_keys=True)),
        )
        return int(cur.lastrowid or 0)

    def update_anomaly(self, anomaly_id: int, record: dict[str, Any]) -> None:
        self._write("UPDATE anomalies SET record = ?, class = ? WHERE id = ?",
                    (json.dumps(record, sort_keys=True), record.get("class", ""), anomaly_id))

    def _write(self, sql: str, params: tuple[Any, ...]) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, params)
        except sqlite3.Error as exc:
            raise OtfuzzError(f"cannot write evidence store {self.path}: {exc}") from None

    # -- reading ------------------------------------------------------------------------------

    def progress(self) -> tuple[int, float]:
        row = self.db.execute("SELECT next_case, elapsed FROM progress WHERE id = 1").fetchone()
        return (0, 0.0) if row is None else (int(row[0]), float(row[1]))

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for group, reply, n in self.db.execute("SELECT grp, reply, n FROM counts ORDER BY grp, reply"):
            out.setdefault(group, {})[reply] = n
        return out

    def anomaly_classes(self) -> dict[str, int]:
        """Anomalies per class, counted in SQL: cheap however many there are."""
        return dict(self.db.execute("SELECT class, COUNT(*) FROM anomalies GROUP BY class ORDER BY class"))

    def anomaly_keys(self) -> list[tuple[int, int, str, str | None]]:
        """(id, case id, class, signature) of every anomaly, without loading the records."""
        return [(i, c, k, s) for i, c, k, s in self.db.execute(
            "SELECT id, case_id, class, json_extract(record, '$.signature') FROM anomalies ORDER BY id")]

    def pending_anomaly_ids(self) -> list[int]:
        """Anomalies still awaiting confirmation, the first of each signature before its duplicates."""
        return [i for (i,) in self.db.execute(
            "SELECT id FROM anomalies WHERE json_extract(record, '$.confirmation.status') = 'pending' "
            "ORDER BY json_extract(record, '$.duplicate_of') IS NOT NULL, id")]

    def anomalies(self) -> list[dict[str, Any]]:
        out = []
        for anomaly_id, record in self.db.execute("SELECT id, record FROM anomalies ORDER BY id"):
            item = json.loads(record)
            item["id"] = anomaly_id
            out.append(item)
        return out

    def anomaly(self, anomaly_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT record FROM anomalies WHERE id = ?", (anomaly_id,)).fetchone()
        if row is None:
            return None
        item = json.loads(row[0])
        item["id"] = anomaly_id
        return item

    def timeline(self) -> list[dict[str, Any]]:
        return [{"t": t, "cases": c, "anomalies": a} for t, c, a in self.db.execute("SELECT t, cases, anomalies FROM timeline ORDER BY rowid")]

    def probes(self) -> list[dict[str, Any]]:
        return [
            {"t": t, "ok": bool(ok), "latency_ms": lat, "reason": reason}
            for t, ok, lat, reason in self.db.execute("SELECT t, ok, latency_ms, reason FROM probes ORDER BY rowid")
        ]

    def events(self) -> list[dict[str, Any]]:
        return [{"t": t, "kind": k, "detail": d} for t, k, d in self.db.execute("SELECT t, kind, detail FROM events ORDER BY rowid")]

    def samples(self, series: str) -> list[dict[str, Any]]:
        return [json.loads(r) for (r,) in self.db.execute("SELECT record FROM samples WHERE series = ? ORDER BY rowid", (series,))]
