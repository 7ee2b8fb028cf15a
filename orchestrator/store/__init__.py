"""Runs, kept in SQLite under DL_HOME.

One row per run, JSON columns for maps, ``PRAGMA user_version`` as the schema version and an
ordered list of migrations (db.py). Status changes go through one function per transition
(runs.py), and a run in a terminal state is never moved again by them (a late writer loses
quietly). Per-epoch metrics live in metrics.py, schedules and their firings in schedules.py;
``Store`` is all of them on one connection.
"""

from __future__ import annotations

from orchestrator.settings import dl_home
from orchestrator.store.db import _MIGRATIONS, SCHEMA_VERSION, Connection
from orchestrator.store.metrics import EpochMetricsTable
from orchestrator.store.runs import TERMINAL_VALUES, Run, RunStatus, RunTable
from orchestrator.store.schedules import Firing, Schedule, ScheduleTable

__all__ = [
    "SCHEMA_VERSION", "TERMINAL_VALUES", "_MIGRATIONS", "Firing", "Run", "RunStatus", "Schedule", "Store",
    "open_store",
]  # fmt: skip


class Store(RunTable, EpochMetricsTable, ScheduleTable, Connection):
    """The run database: runs, their per-epoch metrics and schedules, on one connection."""


def open_store() -> Store:
    return Store(dl_home())
