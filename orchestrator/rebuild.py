"""`dl store rebuild` and `dl store check`: dl.db from the records beside the runs, and back.

    from orchestrator import rebuild
    report = rebuild.rebuild()      # a new dl.db from DL_HOME/runs/*, DL_HOME/schedules/* and the clouds
    rebuild.check().differences     # where dl.db and the records disagree

The store writes a record of every run and schedule on every change (records.py), so a lost,
corrupt or half-deleted dl.db can be made again: every ``runs/<id>/dl/run.json``, every
``schedules/<name>/schedule.json``, then every run a target holds that dl started and no
record names (``SupportsImport``: SageMaker's dl-tagged training jobs, where that target is set
up). The new database is built beside the old one and swapped in whole; the old files are
renamed ``dl.db.before-rebuild-<UTC time>`` (with their -wal and -shm), never deleted. A record
that cannot be read is named and skipped; the rest is rebuilt. Like git's object store, the
files are the truth and the index can be made again from them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator import records
from orchestrator.errors import DlError, StoreError

DB_NAME = "dl.db"
_SIDECARS = ("", "-wal", "-shm")


@dataclass
class RebuildReport:
    """What ``rebuild`` did. ``skipped``: (record path, why) for records that could not be read;
    ``notes``: targets that were not asked for their runs, and why."""

    path: Path
    kept: list[Path] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    schedules: list[str] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class CheckReport:
    """``check``: how many runs and schedules agree, and one line per difference."""

    runs: int = 0
    schedules: int = 0
    differences: list[str] = field(default_factory=list)


def rebuild(home: Path | None = None) -> RebuildReport:
    """Recreate DL_HOME/dl.db from the records and the targets; keep the old file aside.

    Refuses (StoreError) while another process has the database open or a scheduler holds
    DL_HOME: what it writes after the swap would go to the file set aside."""
    from orchestrator.settings import dl_home
    from orchestrator.store import Store

    home = home or dl_home()
    current = home / DB_NAME
    _refuse_if_busy(home, current)
    building = home / f"{DB_NAME}.rebuilding-{os.getpid()}"
    _remove(building)
    report = RebuildReport(current)
    store = Store(home, path=building)
    try:
        _restore_runs(store, home, report)
        _restore_schedules(store, home, report)
    finally:
        store.close()
    report.kept = _set_aside(current)
    os.replace(building, current)
    for suffix in _SIDECARS[1:]:  # closing the last connection checkpointed them; any left go along
        if Path(f"{building}{suffix}").exists():
            os.replace(f"{building}{suffix}", f"{current}{suffix}")
    store = Store(home)
    try:
        report.imported, report.notes = import_runs(store)
    finally:
        store.close()
    return report


def import_runs(store) -> tuple[list[str], list[str]]:
    """Ask every target that can (SupportsImport) for the runs dl started there and the store lacks;
    returns (imported run ids, one note per target that could not be asked)."""
    from orchestrator.backends import REGISTRY, Capability, get_backend, supports

    imported, notes = [], []
    for target in REGISTRY:
        backend = get_backend(target)
        if not supports(backend, Capability.IMPORT):
            continue
        try:
            imported += [run.id for run in backend.import_runs(store)]
        except DlError as exc:
            notes.append(f"{target}: not asked for its runs: {exc}")
    return imported, notes


def check(home: Path | None = None) -> CheckReport:
    """Compare dl.db with the records, run by run and schedule by schedule; changes nothing."""
    from orchestrator.settings import dl_home
    from orchestrator.store import Store

    home = home or dl_home()
    store = Store(home)
    report = CheckReport()
    try:
        files = {path.parent.parent.name: path for path in sorted(home.glob("runs/*/dl/run.json"))}
        for run in store.list():
            path = files.pop(run.id, None)
            if path is None:
                report.differences.append(f"run {run.id}: no record (runs/{run.id}/dl/run.json)")
                continue
            report.differences += _compare(f"run {run.id}", path, records.run_text(run, store.epoch_metrics(run.id)))
            report.runs += 1
        report.differences += [f"run {name}: a record ({path}) but no row in {DB_NAME}" for name, path in files.items()]
        files = {path.parent.name: path for path in sorted(home.glob(f"schedules/*/{records.SCHEDULE_RECORD}"))}
        for schedule in store.list_schedules():
            path = files.pop(schedule.name, None)
            if path is None:
                report.differences.append(f"schedule {schedule.name}: no record")
                continue
            text = records.schedule_text(schedule, store.firings(schedule.name, records.FIRINGS_KEPT))
            report.differences += _compare(f"schedule {schedule.name}", path, text)
            report.schedules += 1
        report.differences += [f"schedule {name}: a record ({path}) but no row in {DB_NAME}" for name, path in
                               files.items()]  # fmt: skip
    finally:
        store.close()
    return report


def _compare(what: str, path: Path, expected: str) -> list[str]:
    import json

    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{what}: the record {path} cannot be read ({exc})"]
    wanted = json.loads(expected)
    if found == wanted:
        return []
    inner = next((k for k in ("run", "schedule") if k in wanted), None)
    keys = sorted(k for k in wanted.get(inner, {}) if found.get(inner, {}).get(k) != wanted[inner][k])
    keys += [k for k in sorted(wanted) if k not in (inner, "version") and found.get(k) != wanted[k]]
    return [f"{what}: the record differs from {DB_NAME} in {', '.join(keys) or 'its format'}"]


def _restore_runs(store, home: Path, report: RebuildReport) -> None:
    found = []
    for folder in sorted(p for p in (home / "runs").glob("*") if p.is_dir()):
        path = records.run_record_path(home, folder.name)
        try:
            run, epochs = records.read_run(path)
            if run.id != folder.name:
                raise records.RecordError(f"The record {path} names run {run.id!r}, not {folder.name!r}.")
        except records.RecordError as exc:
            report.skipped.append((str(path), exc.message))
            continue
        found.append((run, epochs))
    # Epochs first: each insert then writes a record equal to the one read (so none is rewritten).
    for run, epochs in found:
        if epochs:
            store.replace_epoch_metrics(run.id, epochs)
    store.insert_many(run for run, _ in found)
    report.runs += [run.id for run, _ in found]


def _restore_schedules(store, home: Path, report: RebuildReport) -> None:
    for path in sorted((home / "schedules").glob(f"*/{records.SCHEDULE_RECORD}")):
        try:
            schedule, firings = records.read_schedule(path)
            if schedule.name != path.parent.name:
                raise records.RecordError(f"The record {path} names schedule {schedule.name!r}.")
        except records.RecordError as exc:
            report.skipped.append((str(path), exc.message))
            continue
        store.restore_firings(firings)  # before the schedule, as the epochs before their run
        store.insert_schedule(schedule)
        report.schedules.append(schedule.name)


def _set_aside(current: Path) -> list[Path]:
    """Rename dl.db and its -wal/-shm to ``dl.db.before-rebuild-<UTC time>``; never delete them."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    base = current.with_name(f"{current.name}.before-rebuild-{stamp}")
    n = 1
    while any(Path(f"{base}{s}").exists() for s in _SIDECARS):
        n += 1
        base = current.with_name(f"{current.name}.before-rebuild-{stamp}-{n}")
    kept = []
    for suffix in _SIDECARS:
        source = Path(f"{current}{suffix}")
        if source.exists():
            os.replace(source, f"{base}{suffix}")
            kept.append(Path(f"{base}{suffix}"))
    return kept


def _remove(path: Path) -> None:
    """A half-built database left by an interrupted rebuild of this process id (never dl.db itself)."""
    for suffix in _SIDECARS:
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _refuse_if_busy(home: Path, current: Path) -> None:
    from orchestrator.scheduler_service import SchedulerLock

    lock = SchedulerLock(home)
    if lock.path.exists():
        if not lock.acquire():
            raise StoreError(
                f"A scheduler (`dl schedule run`, pid {lock.holder()}) is using {home}.",
                "Stop it, then run `dl store rebuild` again.",
            )
        lock.release()
    users = sorted(holders(current))
    if users:
        raise StoreError(
            f"{current} is open in process {', '.join(map(str, users))} (a running run or another dl).",
            "Let it finish or stop it (dl stop RUN), then run `dl store rebuild` again.",
        )


def holders(db: Path) -> set[int]:
    """Ids of the other processes of this user that have ``db`` (or its -wal/-shm) open, from /proc
    (empty where there is no /proc)."""
    names = {str(Path(f"{db}{s}").absolute()) for s in _SIDECARS}
    found = set()
    for proc in Path("/proc").glob("[0-9]*"):
        if int(proc.name) == os.getpid():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd).removesuffix(" (deleted)") in names:
                    found.add(int(proc.name))
                    break
        except OSError:  # gone, or another user's
            continue
    return found
