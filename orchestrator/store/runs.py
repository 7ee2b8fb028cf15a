"""Runs: one row per run, JSON columns for maps, and one function per status transition.

A run in a terminal state is never moved again by a transition (a late writer loses quietly).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from orchestrator import records
from orchestrator.backends import public_state_keys
from orchestrator.errors import RunExists, RunNotFound, UsageError
from orchestrator.failures import FailureKind, default_for


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
    failure_kind: FailureKind | None = None  # why a Failed or Stopped run did not complete

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.ended_at or time.time()) - self.started_at

    def to_json(self) -> dict:
        """The stable, documented shape that `--json` prints."""
        out = asdict(self)
        out["status"] = self.status.value
        out["failure_kind"] = self.failure_kind.value if self.failure_kind else None
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


_COLUMNS = [
    "id", "job", "target", "status", "params", "package_hash", "git_commit", "git_dirty",
    "created_at", "started_at", "ended_at", "failure_reason", "metrics", "data", "job_dir",
    "log_uri", "checkpoint_uri", "model_uri", "output_uri", "backend_state", "schedule", "promotion",
    "sweep", "failure_kind",
]  # fmt: skip


class RunTable:
    """The runs table, on a Connection's ``_db`` (mixed into Store)."""

    _db: sqlite3.Connection
    home: Path

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
        failure_kind: FailureKind | None = None,
    ) -> list[Run]:
        wanted = {
            "failure_kind": failure_kind.value if failure_kind else None,
            "sweep": sweep,
            "schedule": schedule,
            "job": job,
            "status": status.value if status else None,
            "target": target,
        }
        where = [f"{column} = ?" for column, value in wanted.items() if value]
        args: list[object] = [value for value in wanted.values() if value]
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
        """Record a new run. A UsageError when the id is taken, in the database or by a record that
        an earlier run left in its folder (a database moved aside: `dl store rebuild` brings it back)."""
        record = records.run_record_path(self.home, run.id)
        if record.exists() and not self.exists(run.id):
            raise UsageError(
                f"The run folder {record.parent.parent} holds the record of an earlier run {run.id!r}.",
                "Pick another --name, or bring that run back with `dl store rebuild`.",
            )
        values = _run_to_row(run)
        try:
            self._write_run(
                run.id, f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})", values
            )
        except sqlite3.IntegrityError as exc:
            raise RunExists(f"A run named {run.id!r} already exists.", "Pick another --name.") from exc

    def insert_many(self, runs: Iterable[Run]) -> None:
        """Bulk insert (imports, benchmarks, a rebuild) in one transaction: all runs or none."""
        runs = list(runs)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                f"INSERT INTO runs ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                (_run_to_row(r) for r in runs),
            )
            for run in runs:
                self._record_run(run.id)
        except sqlite3.IntegrityError as exc:
            self._rollback()
            raise UsageError(f"A run among these already exists ({exc}).", "Nothing was imported.") from exc
        except BaseException:
            self._rollback()
            raise
        self._commit()

    def update(self, run_id: str, **fields) -> None:
        """Set fields of a run; JSON fields take dicts. Unknown names are a programming error."""
        sets, args = [], []
        for key, value in fields.items():
            if key not in _COLUMNS or key == "id":
                raise ValueError(f"unknown run field {key}")
            sets.append(f"{key} = ?")
            args.append(_encode(key, value))
        self._write_run(run_id, f"UPDATE runs SET {', '.join(sets)} WHERE id = ?", (*args, run_id))

    def merge_backend_state(self, run_id: str, **state) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute("SELECT backend_state FROM runs WHERE id = ?", (run_id,)).fetchone()
            current = json.loads(row[0]) if row else {}
            current.update(state)
            self._db.execute("UPDATE runs SET backend_state = ? WHERE id = ?", (json.dumps(current), run_id))
            self._record_run(run_id)
            self._commit()
        except BaseException:
            self._rollback()
            raise

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
            failure_kind=None,
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
        failure_kind: FailureKind | None = None,
    ) -> bool:
        """``failure_kind``: why it did not complete, when the caller knows; else stopped for
        Stopped and what ``failure_reason`` names for Failed (failures.default_for)."""
        if not status.is_terminal:
            raise ValueError(f"{status} is not terminal")
        if status is RunStatus.COMPLETED:
            failure_kind = None
        kind = failure_kind or default_for(status.value, failure_reason)
        fields: dict = {"ended_at": ended_at or time.time(), "failure_reason": failure_reason, "failure_kind": kind}
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
        changed = self._write_run(
            run_id,
            f"UPDATE runs SET {', '.join(sets)} WHERE id = ? AND status IN ({placeholders})",
            (*args, run_id, *(s.value for s in allowed_from)),
        )
        return changed == 1

    # -- the record beside the run's files (records.py) ------------------------

    def _write_run(self, run_id: str, sql: str, args) -> int:
        """Run one statement that changes run ``run_id`` and rewrite its record, in one write
        transaction; returns the rows changed. Every change of a run comes through here (or calls
        ``_record_run`` inside its own transaction: merge_backend_state, insert_many, epoch metrics)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            changed = self._db.execute(sql, args).rowcount
            if changed:
                self._record_run(run_id)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return changed

    def _record_run(self, run_id: str) -> None:
        """Rewrite the run's record from its row and per-epoch metrics, inside the caller's write
        transaction (so records are written in the order the rows change); nothing without a row."""
        row = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is not None:
            text = records.run_text(_row_to_run(row), self.epoch_metrics(run_id))
            if problem := records.save(records.run_record_path(self.home, run_id), text):
                self._unrecorded(problem)


def _encode(key: str, value):
    if key in _JSON_FIELDS:
        return json.dumps(value or {}, sort_keys=True)
    if key == "status" and isinstance(value, RunStatus):
        return value.value
    if key == "git_dirty" and value is not None:
        return int(value)
    if key == "failure_kind" and value is not None:
        return FailureKind(value).value
    return value


def _run_to_row(run: Run) -> tuple:
    return tuple(_encode(name, getattr(run, name)) for name in _COLUMNS)


def _row_to_run(row: tuple) -> Run:
    values = dict(zip(_COLUMNS, row))
    for key in _JSON_FIELDS:
        values[key] = json.loads(values[key] or "{}")
    values["status"] = RunStatus(values["status"])
    values["failure_kind"] = FailureKind(values["failure_kind"]) if values["failure_kind"] else None
    if values["git_dirty"] is not None:
        values["git_dirty"] = bool(values["git_dirty"])
    return Run(**values)
