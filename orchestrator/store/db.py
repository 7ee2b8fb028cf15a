"""The run database's connection, schema and migrations.

The database is plain data a later version can read: ``PRAGMA user_version`` is the schema
version and ``_MIGRATIONS`` the ordered list of scripts that reach it. WAL mode lets ``dl runs``
read while training processes write.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from orchestrator.errors import StoreError
from orchestrator.fsutil import replacing

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
    # 5: why a run did not complete (failures.FailureKind); runs that ended before it have none.
    """
    ALTER TABLE runs ADD COLUMN failure_kind TEXT;
    CREATE INDEX runs_failure_kind ON runs (failure_kind, created_at DESC);
    """,
]
SCHEMA_VERSION = len(_MIGRATIONS)
DB_NAME = "dl.db"  # the run database, in DL_HOME


class _SQLite(sqlite3.Connection):
    """A connection whose failed writes to a full disk are one line naming the database (SQLite
    reports a full disk, or a file-size limit, as SQLITE_FULL, or as SQLITE_IOERR on the first write
    past it); the transaction is rolled back by SQLite, so nothing half-written stays."""

    path: Path

    def execute(self, *args):
        try:
            return super().execute(*args)
        except sqlite3.OperationalError as exc:
            error = _disk_error(self.path, exc)
            if error is None:
                raise
            raise error from exc

    def executemany(self, *args):
        try:
            return super().executemany(*args)
        except sqlite3.OperationalError as exc:
            error = _disk_error(self.path, exc)
            if error is None:
                raise
            raise error from exc


_SQLITE_IOERR, _SQLITE_FULL = 10, 13


def _disk_error(path: Path, exc: sqlite3.OperationalError) -> StoreError | None:
    if (getattr(exc, "sqlite_errorcode", 0) & 0xFF) not in (_SQLITE_IOERR, _SQLITE_FULL):
        return None
    return StoreError(
        f"Cannot write the run database {path} ({exc}): the disk holding it is full or failing.",
        f"Free some space there (df -h {path.parent}) and retry; the change was not saved.",
    )


class Connection:
    """One SQLite connection to DL_HOME/dl.db. Opening it creates DL_HOME and migrates the schema.
    ``path``: another database file for the same DL_HOME (the one `dl store rebuild` builds)."""

    def __init__(self, home: Path, *, path: Path | None = None) -> None:
        self.home = home
        self.path = path or home / DB_NAME
        self._unwritten: list[str] = []
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
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None, factory=_SQLite)
        self._db.path = self.path
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
                "Run `dl store rebuild` to make it again from the run folders (it keeps this file aside).",
            ) from exc

    def _check_version(self, version: int) -> None:
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"The run database {self.path} has schema {version}, newer than this dl ({SCHEMA_VERSION}).",
                "Upgrade dl, or point DL_HOME elsewhere.",
            )

    def _migrate(self) -> None:
        self._back_up(self._db.execute("PRAGMA user_version").fetchone()[0])
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

    # -- write transactions whose records (records.py) are written inside them --------

    def _unrecorded(self, message: str) -> None:
        """A record that could not be written: said on stderr once the transaction commits (if it
        fails too, its own error says what happened, in one line)."""
        self._unwritten.append(message)

    def _commit(self) -> None:
        import sys

        self._db.execute("COMMIT")
        for message in self._unwritten:
            print(message, file=sys.stderr)
        self._unwritten.clear()

    def _rollback(self) -> None:
        """Undo the transaction, if SQLite has not already (a COMMIT that failed on a full disk)."""
        self._unwritten.clear()
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def _back_up(self, version: int) -> None:
        """Before a migration changes a database that has data (schema 1 or later), copy it whole
        with SQLite's online backup to ``dl.db.before-schema-<next>`` (once; never deleted)."""
        if not 0 < version < SCHEMA_VERSION:
            return
        target = self.path.with_name(f"{self.path.name}.before-schema-{version + 1}")
        if target.exists():
            return
        with replacing(target) as partial:
            copy = sqlite3.connect(partial)
            try:
                self._db.backup(copy)
            finally:
                copy.close()

    def close(self) -> None:
        """Close the connection, first copying what the WAL holds into dl.db as far as no reader
        blocks it (a PASSIVE checkpoint never waits). When this was the last connection, SQLite
        then checkpoints the rest and deletes dl.db-wal, so dl.db alone holds every committed run.
        Closing twice is harmless."""
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error:
            pass  # closed already, or the disk refuses the write: the WAL keeps the data
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
