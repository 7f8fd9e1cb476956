"""The evidence store: one SQLite file per run folder.

It holds what an auditor needs and nothing that can be regenerated: campaign metadata (tool
version, seed, full configuration, target, host, times), counts per test group and reply class,
a resume point, one timeline sample a second, every probe and event, every anomaly whole, and
the findings the anomalies are occurrences of (each anomaly belongs to exactly one), with the
cases held back per finding by known-finding suppression. Individual cases are not stored: any
case is regenerated from seed and id.

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
CREATE TABLE IF NOT EXISTS findings (id INTEGER PRIMARY KEY AUTOINCREMENT, key TEXT NOT NULL UNIQUE,
                                     class TEXT NOT NULL, record TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS suppression (finding_id INTEGER PRIMARY KEY, skipped INTEGER NOT NULL,
                                        matched INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS corpus (id INTEGER PRIMARY KEY, case_id INTEGER NOT NULL, frames TEXT NOT NULL,
                                   reason TEXT NOT NULL, t REAL NOT NULL);
CREATE TABLE IF NOT EXISTS lineage (case_id INTEGER PRIMARY KEY, parent INTEGER, observed INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS observed (idx INTEGER PRIMARY KEY, value INTEGER NOT NULL);
"""


_FINDING_COMPUTED = ("id", "occurrences", "first_case_id", "last_case_id", "first_seen", "last_seen", "suppressed_cases",
                     "matched_after_confirmation")


def _finding_record(record: dict[str, Any]) -> dict[str, Any]:
    """A finding record without what the store computes from its occurrences on reading."""
    return {k: v for k, v in record.items() if k not in _FINDING_COMPUTED}


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

    def __init__(self, path: Path, read_only: bool = False) -> None:
        self.path = path
        try:
            if read_only:  # a watcher (the dashboard): WAL readers never block the campaign's writes
                # No -wal file means no writer has it open: read it as immutable, which leaves no
                # -wal/-shm files behind in a finished run folder (a bundle would pack them).
                idle = not path.with_name(path.name + "-wal").exists()
                self.db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro{'&immutable=1' if idle else ''}", uri=True,
                                          isolation_level=None, check_same_thread=False)
                self.db.execute("PRAGMA query_only=ON")
                self.db.execute("PRAGMA busy_timeout=2000")
                self.db.execute("SELECT COUNT(*) FROM meta").fetchone()  # fail here, on opening, if it is no store
            else:
                self._open_for_writing(path)
        except sqlite3.DatabaseError as exc:
            raise OtfuzzError(f"cannot open evidence store {path}: {exc}") from None
        self._counts: Counter[tuple[str, str]] = Counter()
        self._probes: list[tuple[float, int, float | None, str]] = []
        self._events: list[tuple[float, str, str]] = []
        self._samples: list[tuple[str, float, str]] = []
        self._suppression: dict[int, tuple[int, int]] = {}
        self._corpus: list[tuple[int, int, str, str, float]] = []
        self._lineage: list[tuple[int, int | None, int]] = []
        self._observed: list[tuple[int, int]] = []

    def _open_for_writing(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        columns = {row[1] for row in self.db.execute("PRAGMA table_info(anomalies)")}
        if "finding_id" not in columns:  # a store written before findings existed
            self.db.execute("ALTER TABLE anomalies ADD COLUMN finding_id INTEGER")

    # -- opening ------------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: Path) -> EvidenceStore:
        return cls(run_dir / STORE_NAME)

    @classmethod
    def open(cls, run_dir: Path, read_only: bool = False) -> EvidenceStore:
        """The store of an existing run; `read_only` opens it as a watcher that can never write."""
        path = run_dir / STORE_NAME
        if not path.is_file():
            raise OtfuzzError(f"{run_dir} is not an otfuzz run folder (no {STORE_NAME})")
        store = cls(path, read_only=True) if read_only else cls(path)
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

    def suppressed(self, finding_id: int, skipped: int, matched: int) -> None:
        """Known-finding suppression counters of one finding, committed with the next flush."""
        self._suppression[finding_id] = (skipped, matched)

    def corpus_entry(self, entry_id: int, case_id: int, frames: list[bytes], reason: str, t: float) -> None:
        """A corpus entry, committed with the next flush (before any lineage that names it)."""
        self._corpus.append((entry_id, case_id, json.dumps([f.hex() for f in frames]), reason, t))

    def lineage(self, case_id: int, parent: int | None, observed: int) -> None:
        """What a feedback case was derived from, committed with the next flush."""
        self._lineage.append((case_id, parent, observed))

    def observed_value(self, index: int, value: int) -> None:
        self._observed.append((index, value))

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
            self.db.executemany("INSERT OR REPLACE INTO suppression (finding_id, skipped, matched) VALUES (?, ?, ?)",
                                [(f, skipped, matched) for f, (skipped, matched) in self._suppression.items()])
            self.db.executemany("INSERT OR IGNORE INTO corpus (id, case_id, frames, reason, t) VALUES (?, ?, ?, ?, ?)", self._corpus)
            self.db.executemany("INSERT OR REPLACE INTO lineage (case_id, parent, observed) VALUES (?, ?, ?)", self._lineage)
            self.db.executemany("INSERT OR IGNORE INTO observed (idx, value) VALUES (?, ?)", self._observed)
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise OtfuzzError(f"cannot write evidence store {self.path}: {exc}") from None
        self._counts.clear()
        self._probes.clear()
        self._events.clear()
        self._samples.clear()
        self._suppression.clear()
        self._corpus.clear()
        self._lineage.clear()
        self._observed.clear()

    def add_anomaly(self, case_id: int, group: str, anomaly_class: str, record: dict[str, Any],
                    finding_id: int | None = None) -> int:
        """Record an anomaly and commit it at once: anomalies are never batched."""
        cur = self._write(
            "INSERT INTO anomalies (case_id, grp, class, record, finding_id) VALUES (?, ?, ?, ?, ?)",
            (case_id, group, anomaly_class, json.dumps(record, sort_keys=True), finding_id),
        )
        return int(cur.lastrowid or 0)

    # -- findings ------------------------------------------------------------------------------

    def add_finding(self, key: str, finding_class: str, record: dict[str, Any]) -> int:
        """Record a new finding and commit it at once."""
        cur = self._write("INSERT INTO findings (key, class, record) VALUES (?, ?, ?)",
                          (key, finding_class, json.dumps(record, sort_keys=True)))
        return int(cur.lastrowid or 0)

    def update_finding(self, finding_id: int, record: dict[str, Any]) -> None:
        self._write("UPDATE findings SET key = ?, class = ?, record = ? WHERE id = ?",
                    (record["key"], record["class"], json.dumps(_finding_record(record), sort_keys=True), finding_id))

    def merge_findings(self, source: int, into: int, into_record: dict[str, Any]) -> None:
        """`source` is the same defect as `into`: its occurrences move, it disappears, atomically."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("UPDATE anomalies SET finding_id = ? WHERE finding_id = ?", (into, source))
            self.db.execute("DELETE FROM findings WHERE id = ?", (source,))
            row = self.db.execute("SELECT skipped, matched FROM suppression WHERE finding_id = ?", (source,)).fetchone()
            if row is not None:
                self.db.execute("DELETE FROM suppression WHERE finding_id = ?", (source,))
                self.db.execute("INSERT INTO suppression (finding_id, skipped, matched) VALUES (?, ?, ?) ON CONFLICT (finding_id) "
                                "DO UPDATE SET skipped = skipped + excluded.skipped, matched = matched + excluded.matched",
                                (into, row[0], row[1]))
            self.db.execute("UPDATE findings SET key = ?, class = ?, record = ? WHERE id = ?",
                            (into_record["key"], into_record["class"], json.dumps(_finding_record(into_record), sort_keys=True), into))
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise OtfuzzError(f"cannot write evidence store {self.path}: {exc}") from None
        self._suppression.pop(source, None)

    def finding(self, finding_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT record FROM findings WHERE id = ?", (finding_id,)).fetchone()
        if row is None:
            return None
        item = json.loads(row[0])
        item["id"] = finding_id
        return item

    def findings(self) -> list[dict[str, Any]]:
        """Every finding with its occurrence counts and first/last case, read in SQL."""
        stats = {fid: (n, first, last, t_first, t_last) for fid, n, first, last, t_first, t_last in self.db.execute(
            "SELECT finding_id, COUNT(*), MIN(case_id), MAX(case_id), MIN(json_extract(record, '$.detected_at')), "
            "MAX(json_extract(record, '$.detected_at')) FROM anomalies WHERE finding_id IS NOT NULL GROUP BY finding_id")}
        held = {fid: (skipped, matched) for fid, skipped, matched in self.db.execute("SELECT finding_id, skipped, matched FROM suppression")}
        out = []
        for finding_id, record in self.db.execute("SELECT id, record FROM findings ORDER BY id"):
            item = json.loads(record)
            item["id"] = finding_id
            n, first, last, t_first, t_last = stats.get(finding_id, (0, None, None, None, None))
            skipped, matched = held.get(finding_id, (0, 0))
            item.update({"occurrences": n, "first_case_id": first, "last_case_id": last, "first_seen": t_first,
                         "last_seen": t_last, "suppressed_cases": skipped, "matched_after_confirmation": matched})
            out.append(item)
        return out

    def finding_anomaly_ids(self, finding_id: int) -> list[int]:
        return [i for (i,) in self.db.execute("SELECT id FROM anomalies WHERE finding_id = ? ORDER BY id", (finding_id,))]

    def occurrence_times(self) -> list[tuple[int | None, float, float]]:
        """(finding id, campaign time, seconds spent on it) of every anomaly, read in SQL."""
        return [(f, float(t or 0), float(h or 0) + float(i or 0)) for f, t, h, i in self.db.execute(
            "SELECT finding_id, json_extract(record, '$.elapsed_s'), json_extract(record, '$.handling_s'), "
            "json_extract(record, '$.investigation_s') FROM anomalies ORDER BY id")]

    def corpus(self) -> list[tuple[int, int, list[bytes], str, float]]:
        """(id, case id, frames, reason, campaign time) of every corpus entry, in order."""
        return [(i, c, [bytes.fromhex(h) for h in json.loads(f)], r, t)
                for i, c, f, r, t in self.db.execute("SELECT id, case_id, frames, reason, t FROM corpus ORDER BY id")]

    def lineage_of(self, case_id: int) -> tuple[int | None, int] | None:
        row = self.db.execute("SELECT parent, observed FROM lineage WHERE case_id = ?", (case_id,)).fetchone()
        return None if row is None else (row[0], int(row[1]))

    def observed_values(self) -> list[int]:
        return [int(v) for (v,) in self.db.execute("SELECT value FROM observed ORDER BY idx")]

    def lineage_count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM lineage").fetchone()[0])

    def suppression_counts(self) -> dict[int, tuple[int, int]]:
        return {f: (s, m) for f, s, m in self.db.execute("SELECT finding_id, skipped, matched FROM suppression")}

    def update_anomaly(self, anomaly_id: int, record: dict[str, Any]) -> None:
        stored = {k: v for k, v in record.items() if k not in ("id", "finding_id")}  # columns, not record
        self._write("UPDATE anomalies SET record = ?, class = ? WHERE id = ?",
                    (json.dumps(stored, sort_keys=True), record.get("class", ""), anomaly_id))

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

    def anomaly_keys(self) -> list[tuple[int, int, str]]:
        """(id, case id, class) of every anomaly, without loading the records."""
        return [(i, c, k) for i, c, k in self.db.execute("SELECT id, case_id, class FROM anomalies ORDER BY id")]

    def pending_occurrences(self) -> list[tuple[int, int | None]]:
        """(anomaly id, finding id) of occurrences still awaiting their replay, oldest first."""
        return [(i, f) for i, f in self.db.execute(
            "SELECT id, finding_id FROM anomalies WHERE json_extract(record, '$.confirmation.status') = 'pending' ORDER BY id")]

    def anomalies(self) -> list[dict[str, Any]]:
        out = []
        for anomaly_id, record, finding_id in self.db.execute("SELECT id, record, finding_id FROM anomalies ORDER BY id"):
            item = json.loads(record)
            item["id"] = anomaly_id
            item["finding_id"] = finding_id
            out.append(item)
        return out

    def anomaly(self, anomaly_id: int) -> dict[str, Any] | None:
        row = self.db.execute("SELECT record, finding_id FROM anomalies WHERE id = ?", (anomaly_id,)).fetchone()
        if row is None:
            return None
        item = json.loads(row[0])
        item["id"] = anomaly_id
        item["finding_id"] = row[1]
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

    def timeline_tail(self, n: int) -> list[dict[str, Any]]:
        """The last `n` timeline samples, oldest first (a watcher's recent rate)."""
        rows = self.db.execute("SELECT t, cases, anomalies FROM timeline ORDER BY rowid DESC LIMIT ?", (n,)).fetchall()
        return [{"t": t, "cases": c, "anomalies": a} for t, c, a in reversed(rows)]

    def probes_tail(self, n: int) -> list[dict[str, Any]]:
        """The last `n` probes, oldest first."""
        rows = self.db.execute("SELECT t, ok, latency_ms, reason FROM probes ORDER BY rowid DESC LIMIT ?", (n,)).fetchall()
        return [{"t": t, "ok": bool(ok), "latency_ms": lat, "reason": reason} for t, ok, lat, reason in reversed(rows)]

    def finding_severities(self) -> dict[str, int]:
        """Findings per severity, counted in SQL."""
        return {str(s or "medium"): n for s, n in self.db.execute(
            "SELECT json_extract(record, '$.severity'), COUNT(*) FROM findings GROUP BY 1")}

    def samples(self, series: str) -> list[dict[str, Any]]:
        return [json.loads(r) for (r,) in self.db.execute("SELECT record FROM samples WHERE series = ? ORDER BY rowid", (series,))]
