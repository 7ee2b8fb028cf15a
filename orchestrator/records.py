"""Each run's and each schedule's complete record, kept beside its files so dl.db can be rebuilt.

A run's record is ``DL_HOME/runs/<id>/dl/run.json`` (for cloud runs too: the folder then holds
only ``dl/``); a schedule's is ``DL_HOME/schedules/<name>/schedule.json``. A record holds
everything the store holds about it: for a run, every field of its row (job, target, status and
times, params, package hash, git commit and dirty flag, failure reason, sweep, schedule,
promotion, backend state, final metrics) and its per-epoch metrics; for a schedule, its row and
its latest firings (:data:`FIRINGS_KEPT`).

The store writes them, from the row it has just written, inside the same write transaction
(store.Store: one hook for runs, one for schedules), so records are written in the order the
rows change. Each write is atomic (fsutil.atomic_write: a temporary file, fsynced, renamed
over), and skipped when the text is unchanged. `dl store rebuild` (rebuild.py) reads them back.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.errors import StoreError
from orchestrator.fsutil import atomic_write

if TYPE_CHECKING:
    from orchestrator.store import Firing, Run, Schedule

VERSION = 1
RUN_RECORD = ("dl", "run.json")
SCHEDULE_RECORD = "schedule.json"
FIRINGS_KEPT = 100  # a schedule's record keeps its newest firings; last_fire_at keeps the rest decided


class RecordError(StoreError):
    """A record that cannot be read back (not JSON, not a dl record, a newer version)."""


def run_record_path(home: Path, run_id: str) -> Path:
    return home.joinpath("runs", run_id, *RUN_RECORD)


def schedule_record_path(home: Path, name: str) -> Path:
    return home / "schedules" / name / SCHEDULE_RECORD


def run_text(run: Run, epochs: list[dict]) -> str:
    """The record of ``run`` with its per-epoch metrics, as JSON text."""
    values = asdict(run)
    values["status"] = run.status.value
    return _dump({"version": VERSION, "kind": "run", "run": values, "epoch_metrics": epochs})


def schedule_text(schedule: Schedule, firings: list[Firing]) -> str:
    """The record of ``schedule`` with its newest firings (newest first), as JSON text."""
    return _dump({"version": VERSION, "kind": "schedule", "schedule": asdict(schedule),
                  "firings": [asdict(f) for f in firings]})  # fmt: skip


def write(path: Path, text: str) -> bool:
    """Replace the record at ``path`` with ``text`` atomically; False (nothing written) when unchanged."""
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    atomic_write(path, text)
    return True


def save(path: Path, text: str) -> str | None:
    """``write``, for the store: None, or the line to say when the record cannot be written (a full
    disk, a read-only run folder); the change it mirrors stands in dl.db all the same."""
    try:
        write(path, text)
    except OSError as exc:
        return (f"dl: could not write the record {path} ({exc.strerror or exc}); dl.db has the change,"
                " but `dl store rebuild` would not")  # fmt: skip
    return None


def read_run(path: Path) -> tuple[Run, list[dict]]:
    """The run and its per-epoch metrics from a record; RecordError naming what is wrong."""
    from orchestrator.store import Run, RunStatus

    body = _load(path, "run")
    values = _known(Run, body.get("run"), path)
    try:
        values["status"] = RunStatus(values["status"])
        run = Run(**values)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecordError(f"The run record {path} is incomplete ({exc}).") from None
    epochs = body.get("epoch_metrics") or []
    if not isinstance(epochs, list) or not all(isinstance(e, dict) and "epoch" in e for e in epochs):
        raise RecordError(f"The run record {path} has malformed epoch metrics.")
    return run, epochs


def read_schedule(path: Path) -> tuple[Schedule, list[Firing]]:
    """The schedule and its recorded firings from a record; RecordError naming what is wrong."""
    from orchestrator.store import Firing, Schedule

    body = _load(path, "schedule")
    try:
        schedule = Schedule(**_known(Schedule, body.get("schedule"), path))
        firings = [Firing(**_known(Firing, f, path)) for f in body.get("firings") or []]
    except TypeError as exc:
        raise RecordError(f"The schedule record {path} is incomplete ({exc}).") from None
    return schedule, firings


def _dump(body: dict) -> str:
    return json.dumps(body, indent=1, sort_keys=True, allow_nan=False) + "\n"


def _load(path: Path, kind: str) -> dict:
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"No record at {path}.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise RecordError(f"The record {path} cannot be read ({exc}).") from None
    if not isinstance(body, dict) or body.get("kind") != kind:
        raise RecordError(f"{path} is not a dl {kind} record.")
    if not isinstance(body.get("version"), int) or body["version"] > VERSION:
        raise RecordError(f"The record {path} has version {body.get('version')!r}, newer than this dl ({VERSION}).")
    return body


def _known(cls: type, values: object, path: Path) -> dict:
    """The fields of dataclass ``cls`` in ``values`` (a later dl's extra fields are left out)."""
    if not isinstance(values, dict):
        raise RecordError(f"The record {path} has no {cls.__name__.lower()} object.")
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}
