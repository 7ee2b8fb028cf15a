"""Schedules and their firings (one row per fire time and what was decided)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from orchestrator import records
from orchestrator.errors import UsageError


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
    """One fire time of a schedule and what was decided: started (run_id), skipped, failed, or missed;
    "starting" while its claimer starts the run (the note names the claimer)."""

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


class ScheduleTable:
    """The schedules and firings tables, on a Connection's ``_db`` (mixed into Store). Every change
    also rewrites the schedule's record (records.py) in the same write transaction."""

    _db: sqlite3.Connection
    home: Path

    def insert_schedule(self, schedule: Schedule) -> None:
        values = _schedule_to_row(schedule)
        try:
            self._write_schedule(
                schedule.name,
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
        self._write_schedule(name, f"UPDATE schedules SET {sets} WHERE name = ?", (*args, name))

    def delete_schedule(self, name: str) -> None:
        """Forget the schedule, its firings and its record; the runs it started stay."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("DELETE FROM schedules WHERE name = ?", (name,))
            self._db.execute("DELETE FROM firings WHERE schedule = ?", (name,))
            records.schedule_record_path(self.home, name).unlink(missing_ok=True)
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def claim_firing(self, schedule: str, due_at: float, decision: str, note: str | None = None) -> bool:
        """Record the decision for one fire time; False when it was already decided (by another
        process): the primary key (schedule, due_at) makes a fire time fire at most once."""
        try:
            self._write_schedule(
                schedule,
                "INSERT INTO firings (schedule, due_at, decided_at, decision, note) VALUES (?, ?, ?, ?, ?)",
                (schedule, due_at, time.time(), decision, note),
                ("UPDATE schedules SET last_fire_at = MAX(COALESCE(last_fire_at, 0), ?) WHERE name = ?",
                 (due_at, schedule)),
            )  # fmt: skip
        except sqlite3.IntegrityError:
            return False
        return True

    def settle_firing(self, schedule: str, due_at: float, decision: str, run_id: str | None, note: str | None) -> None:
        self._write_schedule(
            schedule,
            "UPDATE firings SET decision = ?, run_id = ?, note = ? WHERE schedule = ? AND due_at = ?",
            (decision, run_id, note, schedule, due_at),
        )

    def take_over_firing(self, firing: Firing, note: str) -> bool:
        """Claim a firing still "starting" as ``firing`` saw it (its claimer is gone); False when
        someone else changed it first."""
        changed = self._write_schedule(
            firing.schedule,
            "UPDATE firings SET decided_at = ?, note = ? WHERE schedule = ? AND due_at = ? AND decision = 'starting'"
            " AND run_id IS NULL AND decided_at = ? AND COALESCE(note, '') = ?",
            (time.time(), note, firing.schedule, firing.due_at, firing.decided_at, firing.note or ""),
        )
        return changed == 1

    def restore_firings(self, firings: Iterable[Firing]) -> None:
        """Insert firings as they were decided (a rebuild from records); ones already there stay."""
        firings = list(firings)
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO firings (schedule, due_at, decided_at, decision, run_id, note)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [(f.schedule, f.due_at, f.decided_at, f.decision, f.run_id, f.note) for f in firings],
            )
            for name in sorted({f.schedule for f in firings}):
                self._record_schedule(name)
            self._commit()
        except BaseException:
            self._rollback()
            raise

    def firings(self, schedule: str, limit: int = 10, *, decision: str | None = None) -> list[Firing]:
        """The schedule's newest firings (only those with ``decision``, if given), newest first."""
        where = " AND decision = ?" if decision else ""
        rows = self._db.execute(
            "SELECT schedule, due_at, decided_at, decision, run_id, note FROM firings WHERE schedule = ?"
            f"{where} ORDER BY due_at DESC LIMIT ?",
            (schedule, *([decision] if decision else []), limit),
        )
        return [Firing(*row) for row in rows]

    # -- the record beside the schedule's files (records.py) -------------------

    def _write_schedule(self, name: str, sql: str, args, *more: tuple[str, tuple]) -> int:
        """The statement (and ``more`` ones) and the schedule's record, in one write transaction;
        returns the rows the first statement changed."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            changed = self._db.execute(sql, args).rowcount
            for statement, values in more:
                self._db.execute(statement, values)
            if changed:
                self._record_schedule(name)
            self._commit()
        except BaseException:
            self._rollback()
            raise
        return changed

    def _record_schedule(self, name: str) -> None:
        """Rewrite the schedule's record from its row and newest firings; nothing without a row."""
        row = self._db.execute(
            f"SELECT {', '.join(_SCHEDULE_COLUMNS)} FROM schedules WHERE name = ?", (name,)
        ).fetchone()
        if row is not None:
            text = records.schedule_text(_row_to_schedule(row), self.firings(name, records.FIRINGS_KEPT))
            if problem := records.save(records.schedule_record_path(self.home, name), text):
                self._unrecorded(problem)
