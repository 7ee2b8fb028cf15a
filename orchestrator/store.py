"""Runs, kept in SQLite under DL_HOME.

The database is plain data a later version can read: one row per run, JSON
columns for maps, ``PRAGMA user_version`` as the schema version and an ordered
list of migrations. WAL mode lets ``dl runs`` read while training processes
write. Status changes go through one function per transition, and a run in a
terminal state is never moved again by them (a late writer loses quietly).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from orchestrator.backends import public_state_keys
from orchestrator.errors import RunNotFound, StoreError


class RunStatus(StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "InProgress"
    STOPPING = "Stopping"
    COMPLETED = "Completed"
    FAILED = "Failed"
    STOPPED = "Stopped"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @classmethod
    def parse(cls, text: str) -> RunStatus:
        for status in cls:
            if status.value.lower() == text.lower():
                return status
        names = ", ".join(s.value for s in cls)
        from orchestrator.errors import UsageError

        raise UsageError(f"Unknown status {text!r}.", f"Use one of: {names}.")


_TERMINAL = {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STOPPED}
TERMINAL_VALUES = tuple(s.value for s in _TERMINAL)

_JSON_FIELDS = ("params", "metrics", "data", "backend_state", "promotion")


@dataclass
class Run:
    id: str
    job: str
    target: str
    status: RunStatus
    params: dict = field(default_factory=dict)
    package_hash: str | None = None
    git_commit: str | None = None
    git_dirty: bool | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    failure_reason: str | None = None
    metrics: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    job_dir: str | None = None
    log_uri: str | None = None
    checkpoint_uri: str | None = None
    model_uri: str | None = None
    output_uri: str | None = None
    backend_state: dict = field(default_factory=dict)
    schedule: str | None = None  # the schedule that started it
    promotion: dict = field(default_factory=dict)  # the schedule's decision on it (moved best or not)
    sweep: str | None = None  # the sweep (dl sweep) it belongs to

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    def to_json(self) -> dict:
        """The stable, documented shape that `--json` prints."""
        out = asdict(self)
        out["status"] = self.status.value
        out["terminal"] = self.status.is_terminal
        for key in ("created_at", "started_at", "ended_at"):
            out[key] = _iso(out[key])
        out["duration_s"] = round(self.duration, 3) if self.duration is not None else None
        out["logs"] = out.pop("log_uri")
        out["checkpoints"] = out.pop("checkpoint_uri")
        out["model"] = out.pop("model_uri")
        out["output"] = out.pop("output_uri")
        state = out.pop("backend_state")
        # Only what the run's backend declares readable (`dl show`, `--json` under "backend").
        out["backend"] = {k: state[k] for k in public_state_keys(self.target) if state.get(k) is not None}
        return out


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


_MIGRATIONS: list[str] = [
    # 1: the runs table.
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        job TEXT NOT NULL,
        target TEXT NOT NULL,
        status TEXT NOT NULL,
        params TEXT NOT NULL DEFAULT '{}',
        package_hash TEXT,
        git_commit TEXT,
        git_dirty INTEGER,
        created_at REAL NOT NULL,
        started_at REAL,
        ended_at REAL,
        failure_reason TEXT,
        metrics TEXT NOT NULL DEFAULT '{}',
        data TEXT NOT NULL DEFAULT '{}',
        job_dir TEXT,
        log_uri TEXT,
        checkpoint_uri TEXT,
        model_uri TEXT,
        output_uri TEXT,
        backend_state TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX runs_created ON runs (created_at DESC);
    CREATE INDEX runs_job ON runs (job, created_at DESC);
    CREATE INDEX runs_status ON runs (status);
    """,
    # 2: schedules, their firings, and which schedule started a run.
    """
    CREATE TABLE schedules (
        name TEXT PRIMARY KEY,
        job TEXT NOT NULL,
        target TEXT NOT NULL,
        expression TEXT NOT NULL,
        timezone TEXT NOT NULL DEFAULT 'UTC',
        spec TEXT NOT NULL DEFAULT '{}',
        package_hash TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'active',
        promote_metric TEXT,
        promote_mode TEXT,
        best_run TEXT,
        created_at REAL NOT NULL,
        updated_at REAL,
        last_fire_at REAL,
        cloud TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE firings (
        schedule TEXT NOT NULL,
        due_at REAL NOT NULL,
        decided_at REAL NOT NULL,
        decision TEXT NOT NULL,
        run_id TEXT,
        note TEXT,
        PRIMARY KEY (schedule, due_at)
    );
    ALTER TABLE runs ADD COLUMN schedule TEXT;
    ALTER TABLE runs ADD COLUMN promotion TEXT NOT NULL DEFAULT '{}';
    CREATE INDEX runs_schedule ON runs (schedule, created_at DESC);
    """,
    # 3: per-epoch metrics of each run, and the sweep a run belongs to.
    """
    CREATE TABLE run_metrics (
        run_id TEXT NOT NULL,
        epoch INTEGER NOT NULL,
        step INTEGER,
        name TEXT NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (run_id, epoch, name)
    );
    ALTER TABLE runs ADD COLUMN sweep TEXT;
    CREATE INDEX runs_sweep ON runs (sweep, created_at);
    """,
    # 4: a schedule's launch options as versioned JSON (options.LaunchOptions.to_json): its target,
    # channels and allowed secrets move into them beside the flags it was created with.
    """
    UPDATE schedules SET spec = json_set(json_remove(spec, '$.data', '$.allow_secrets'), '$.options', json_patch(
        COALESCE(json_extract(spec, '$.options'), '{}'),
        json_object('version', 1, 'target', target, 'data', json(COALESCE(json_extract(spec, '$.data'), '{}')),
                    'allow_secrets', json(json_extract(spec, '$.allow_secrets')))
    ));
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)

_COLUMNS = [
    "id", "job", "target", "status", "params", "package_hash", "git_commit", "git_dirty",
    "created_at", "started_at", "ended_at", "failure_reason", "metrics", "data", "job_dir",
    "log_uri", "checkpoint_uri", "model_uri", "output_uri", "backend_state", "schedule", "promotion",
    "sweep",
]  # fmt: skip


class Store:
    """The run database. Opening it creates DL_HOME and migrates the schema."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "dl.db"
        try:
            home.mkdir(parents=True, exist_ok=True)
            probe = home / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise StoreError(
                f"DL_HOME {home} is not writable ({exc.strerror or exc}).",
                "Set DL_HOME to a folder you can write to.",
            ) from exc
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            self._check_version(self._db.execute("PRAGMA user_version").fetchone()[0])
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except BaseException as exc:
            self._db.close()
            if not isinstance(exc, sqlite3.DatabaseError):
                raise
            raise StoreError(
                f"The run database {self.path} cannot be opened ({exc}).",
                "Move it aside to start a new one; it is never modified when it cannot be read.",
            ) from exc

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The run database {self.path} has schema {version}, newer than this dl ({SCHEMA_VERSION}).",
                "Upgrade dl, or point DL_HOME elsewhere.",
            )

    def _migrate(self) -> None:
        while True:
            self._db.execute("BEGIN IMMEDIATE")
            # Read under the write lock: two processes opening a new DL_HOME migrate once.
            number = self._db.execute("PRAGMA user_version").fetchone()[0]
            self._check_version(number)
            if number >= SCHEMA_VERSION:
                self._db.execute("COMMIT")
                return
            try:
                for statement in _MIGRATIONS[number].split(";"):
                    if statement.strip():
                        self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number + 1}")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        self._db.close()

    # -- reading ---------------------------------------------------------------

    def get(self, run_id: str) -> Run:
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            hint = "Run `dl runs` to list runs."
            close = self._similar_ids(run_id)
            if close:
                hint = f"Did you mean {' or '.join(close)}? " + hint
            raise RunNotFound(f"No run {run_id!r}.", hint)
        return _row_to_run(row)

    def _similar_ids(self, run_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT id FROM runs WHERE instr(id, ?) > 0 ORDER BY created_at DESC LIMIT 3", (run_id,)
        ).fetchall()
        return [r[0] for r in rows]

    def list(
        self,
        *,
        job: str | None = None,
        status: RunStatus | None = None,
        target: str | None = None,
        limit: int | None = None,
        schedule: str | None = None,
        sweep: str | None = None,
    ) -> list[Run]:
        where, args = [], []
        if sweep:
            where.append("sweep = ?")
            args.append(sweep)
        if schedule:
            where.append("schedule = ?")
            args.append(schedule)
        if job:
            where.append("job = ?")
            args.append(job)
        if status:
            where.append("status = ?")
            args.append(status.value)
        if target:
            where.append("target = ?")
            args.append(target)
        sql = f"SELECT {', '.join(_COLUMNS)} FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_at DESC, id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        return [_row_to_run(row) for row in self._db.execute(sql, args)]

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM runs").fetchone()[0]

    def exists(self, run_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is not None

    # -- writing ---------------------------------------------------------------

    def insert(self, run: Run) -> None:
        values = _run_to_row(run)
        try:
            self._db.execute(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", values
            )
        except sqlite3.IntegrityError as exc:
            from orchestrator.errors import UsageError

            raise UsageError(f"A run named {run.id!r} already exists.", "Pick another --name.") from exc

    def insert_many(self, runs: Iterable[Run]) -> None:
        """Bulk insert (imports, benchmarks) in one transaction: all runs or none."""
        from orchestrator.errors import UsageError

        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                (_run_to_row(r) for r in runs),
            )
        except sqlite3.IntegrityError as exc:
            self._db.execute("ROLLBACK")
            raise UsageError(f"A run among these already exists ({exc}).", "Nothing was imported.") from exc
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def update(self, run_id: str, **fields) -> None:
        """Set fields of a run; JSON fields take dicts. Unknown names are a programming error."""
        sets, args = [], []
        for key, value in fields.items():
            if key not in _COLUMNS or key == "id":
                raise ValueError(f"unknown run field {key}")
            sets.append(f"{key} = ?")
            args.append(_encode(key, value))
        self._db.execute(f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id))

    def merge_backend_state(self, run_id: str, **state) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT backend_state FROM runs WHERE id = ?", (run_id,)).fetchone()
            current = json.loads(row[0]) if row else {}
            current.update(state)
            self._db.execute("UPDATE runs SET backend_state = ? WHERE id = ?", (json.dumps(current), run_id))
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # -- per-epoch metrics --------------------------------------------------------

    def replace_epoch_metrics(self, run_id: str, rows: Iterable[dict]) -> int:
        """Make ``rows`` (dicts with epoch, step and metric values) the run's per-epoch metrics.

        The run's earlier rows go in the same transaction: a resumed run's metrics.csv holds
        every epoch so far, so the store always mirrors the latest file. NaN values (a diverged
        loss) are left out. Returns the number of values stored."""
        values = []
        for row in rows:
            epoch, step = int(row["epoch"]), row.get("step")
            for name, value in row.items():
                if name not in ("epoch", "step") and value is not None and value == value:  # NaN: not stored
                    values.append((run_id, epoch, None if step is None else int(step), name, float(value)))
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM run_metrics WHERE run_id = ?", (run_id,))
            self._db.executemany(
                "INSERT OR REPLACE INTO run_metrics (run_id, epoch, step, name, value) VALUES (?, ?, ?, ?, ?)", values
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return len(values)

    def epoch_metrics(self, run_id: str) -> list[dict]:
        """One dict per epoch, in order: ``{"epoch": 0, "step": 7, "val_acc": 0.9, ...}``."""
        by_epoch: dict[int, dict] = {}
        rows = self._db.execute(
            "SELECT epoch, step, name, value FROM run_metrics WHERE run_id = ? ORDER BY epoch, name", (run_id,)
        )
        for epoch, step, name, value in rows:
            entry = by_epoch.setdefault(epoch, {"epoch": epoch, "step": step})
            entry[name] = value
        return list(by_epoch.values())

    # -- transitions: each returns True when it changed the run ------------------

    def mark_in_progress(self, run_id: str, *, started_at: float | None = None) -> bool:
        return self._transition(
            run_id,
            RunStatus.IN_PROGRESS,
            allowed_from=(RunStatus.PENDING,),
            started_at=started_at or time.time(),
        )

    def mark_resumed(self, run_id: str) -> bool:
        """A Failed or Stopped run starts again (dl resume): back to Pending, outcome cleared."""
        return self._transition(
            run_id,
            RunStatus.PENDING,
            allowed_from=(RunStatus.FAILED, RunStatus.STOPPED),
            ended_at=None,
            failure_reason=None,
        )

    def mark_stopping(self, run_id: str) -> bool:
        return self._transition(run_id, RunStatus.STOPPING, allowed_from=(RunStatus.PENDING, RunStatus.IN_PROGRESS))

    def mark_finished(
        self,
        run_id: str,
        status: RunStatus,
        *,
        failure_reason: str | None = None,
        metrics: dict | None = None,
        ended_at: float | None = None,
    ) -> bool:
        if not status.is_terminal:
            raise ValueError(f"{status} is not terminal")
        fields: dict = {"ended_at": ended_at or time.time(), "failure_reason": failure_reason}
        if metrics is not None:
            fields["metrics"] = metrics
        return self._transition(
            run_id,
            status,
            allowed_from=(RunStatus.PENDING, RunStatus.IN_PROGRESS, RunStatus.STOPPING),
            **fields,
        )

    def _transition(self, run_id: str, status: RunStatus, *, allowed_from, **fields) -> bool:
        sets = ["status = ?"] + [f"{k} = ?" for k in fields]
        args = [status.value] + [_encode(k, v) for k, v in fields.items()]
        placeholders = ", ".join("?" * len(allowed_from))
        cur = self._db.execute(
            f"UPDATE runs SET {', '.join(sets)} WHERE id = ? AND status IN ({placeholders})",
            (*args, run_id, *(s.value for s in allowed_from)),
        )
        return cur.rowcount == 1

    # -- schedules ---------------------------------------------------------------

    def insert_schedule(self, schedule: Schedule) -> None:
        from orchestrator.errors import UsageError

        values = _schedule_to_row(schedule)
        try:
            self._db.execute(
                f"INSERT INTO schedules ({', '.join(_SCHEDULE_COLUMNS)}) VALUES ({', '.join('?' * len(values))})",
                values,
            )
        except sqlite3.IntegrityError as exc:
            raise UsageError(
                f"A schedule named {schedule.name!r} already exists.", "Pick another name, or `dl schedule update`."
            ) from exc

    def get_schedule(self, name: str) -> Schedule:
        row = self._db.execute(
            f"SELECT {', '.join(_SCHEDULE_COLUMNS)} FROM schedules WHERE name = ?", (name,)
        ).fetchone()
        if row is None:
            from orchestrator.errors import UsageError

            raise UsageError(f"No schedule {name!r}.", "Run `dl schedule list` to list schedules.")
        return _row_to_schedule(row)

    def list_schedules(self) -> list[Schedule]:
        rows = self._db.execute(f"SELECT {', '.join(_SCHEDULE_COLUMNS)} FROM schedules ORDER BY name")
        return [_row_to_schedule(row) for row in rows]

    def update_schedule(self, name: str, **fields) -> None:
        for key in fields:
            if key not in _SCHEDULE_COLUMNS or key == "name":
                raise ValueError(f"unknown schedule field {key}")
        sets = ", ".join(f"{k} = ?" for k in fields)
        args = [json.dumps(v, sort_keys=True) if k in ("spec", "cloud") else v for k, v in fields.items()]
        self._db.execute(f"UPDATE schedules SET {sets} WHERE name = ?", (*args, name))

    def delete_schedule(self, name: str) -> None:
        """Forget the schedule and its firings; the runs it started stay."""
        self._db.execute("BEGIN IMMEDIATE")
        self._db.execute("DELETE FROM schedules WHERE name = ?", (name,))
        self._db.execute("DELETE FROM firings WHERE schedule = ?", (name,))
        self._db.execute("COMMIT")

    def claim_firing(self, schedule: str, due_at: float, decision: str, note: str | None = None) -> bool:
        """Record the decision for one fire time; False when it was already decided (by another
        process): the primary key (schedule, due_at) makes a fire time fire at most once."""
        try:
            self._db.execute(
                "INSERT INTO firings (schedule, due_at, decided_at, decision, note) VALUES (?, ?, ?, ?, ?)",
                (schedule, due_at, time.time(), decision, note),
            )
        except sqlite3.IntegrityError:
            return False
        self._db.execute("UPDATE schedules SET last_fire_at = MAX(COALESCE(last_fire_at, 0), ?) WHERE name = ?",
                         (due_at, schedule))  # fmt: skip
        return True

    def settle_firing(self, schedule: str, due_at: float, decision: str, run_id: str | None, note: str | None) -> None:
        self._db.execute(
            "UPDATE firings SET decision = ?, run_id = ?, note = ? WHERE schedule = ? AND due_at = ?",
            (decision, run_id, note, schedule, due_at),
        )

    def firings(self, schedule: str, limit: int = 10) -> list[Firing]:
        rows = self._db.execute(
            "SELECT schedule, due_at, decided_at, decision, run_id, note FROM firings WHERE schedule = ?"
            " ORDER BY due_at DESC LIMIT ?",
            (schedule, limit),
        )
        return [Firing(*row) for row in rows]


@dataclass
class Schedule:
    """A recurring launch: the job, options and pinned package it was created with.

    ``spec`` holds what a firing launches (params, options as LaunchOptions JSON, job_dir); ``cloud`` what the
    cloud target created (schedule ARN, group, region). ``status`` is active or paused."""

    name: str
    job: str
    target: str
    expression: str
    package_hash: str
    created_at: float
    timezone: str = "UTC"
    spec: dict = field(default_factory=dict)
    status: str = "active"
    promote_metric: str | None = None
    promote_mode: str | None = None
    best_run: str | None = None
    updated_at: float | None = None
    last_fire_at: float | None = None
    cloud: dict = field(default_factory=dict)


@dataclass
class Firing:
    """One fire time of a schedule and what was decided: started (run_id), skipped, or failed."""

    schedule: str
    due_at: float
    decided_at: float
    decision: str
    run_id: str | None
    note: str | None


_SCHEDULE_COLUMNS = [
    "name", "job", "target", "expression", "package_hash", "created_at", "timezone", "spec", "status",
    "promote_metric", "promote_mode", "best_run", "updated_at", "last_fire_at", "cloud",
]  # fmt: skip


def _schedule_to_row(schedule: Schedule) -> tuple:
    values = asdict(schedule)
    return tuple(json.dumps(values[k], sort_keys=True) if k in ("spec", "cloud") else values[k]
                 for k in _SCHEDULE_COLUMNS)  # fmt: skip


def _row_to_schedule(row: tuple) -> Schedule:
    values = dict(zip(_SCHEDULE_COLUMNS, row))
    values["spec"] = json.loads(values["spec"] or "{}")
    values["cloud"] = json.loads(values["cloud"] or "{}")
    return Schedule(**values)


def _encode(key: str, value):
    if key in _JSON_FIELDS:
        return json.dumps(value or {}, sort_keys=True)
    if key == "status" and isinstance(value, RunStatus):
        return value.value
    if key == "git_dirty" and value is not None:
        return int(value)
    return value


def _run_to_row(run: Run) -> tuple:
    return tuple(_encode(name, getattr(run, name)) for name in _COLUMNS)


def _row_to_run(row: tuple) -> Run:
    values = dict(zip(_COLUMNS, row))
    for key in _JSON_FIELDS:
        values[key] = json.loads(values[key] or "{}")
    values["status"] = RunStatus(values["status"])
    if values["git_dirty"] is not None:
        values["git_dirty"] = bool(values["git_dirty"])
    return Run(**values)


def open_store() -> Store:
    from orchestrator.settings import dl_home

    return Store(dl_home())
