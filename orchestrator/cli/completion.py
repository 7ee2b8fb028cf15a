"""Shell completion of dl's arguments: job names, run ids, schedule names.

Typer calls these while the shell waits on a key press (``dl --install-completion`` sets it up;
commands and options complete by themselves). Each is cheap and silent:

- job names come from the job search path (``jobs.list_jobs``: job.toml files only, never a
  job's code); a word that looks like a path completes nothing, so the shell offers files;
- run ids and schedule names come straight from the run database, opened read-only: no
  migration, no write, no lock held, nothing created when there is no database yet;
- any failure (no DL_HOME, a database that is locked, older or broken, an unreadable job
  folder) completes nothing: a traceback never lands in the shell.

Each returns (value, help) pairs, newest runs first; zsh and fish show the help beside the value.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable

import click

from orchestrator import settings
from orchestrator.store.db import DB_NAME
from orchestrator.store.runs import TERMINAL_VALUES

LIMIT = 200  # candidates offered at most (the newest runs)
Candidates = list[tuple[str, str]]


def _silent(complete: Callable[..., Candidates]) -> Callable[..., Candidates]:
    @functools.wraps(complete)
    def quietly(*args, **kwargs) -> Candidates:
        try:
            return complete(*args, **kwargs)
        except Exception:  # noqa: BLE001 - completion must never print a traceback into the shell
            return []

    return quietly


def _query(sql: str, *params: object) -> list[tuple]:
    """Rows from the run database opened read-only; none when it does not exist."""
    import sqlite3

    path = settings.dl_home() / DB_NAME
    if not path.is_file():
        return []
    db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=0.2)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def _given(ctx: click.Context) -> set[str]:
    """The words already parsed into this command's parameters (``dl compare A B <TAB>``: A, B)."""
    found: set[str] = set()
    for value in ctx.params.values():
        found.update(v for v in (value if isinstance(value, (list, tuple)) else [value]) if isinstance(v, str))
    return found


def _runs(ctx: click.Context, incomplete: str, *, live_only: bool) -> Candidates:
    rows = _query(
        "SELECT id, job, status FROM runs WHERE substr(id, 1, length(?1)) = ?1 ORDER BY created_at DESC LIMIT ?2",
        incomplete,
        LIMIT,
    )
    given = _given(ctx)
    return [
        (run_id, f"{job} {status}")
        for run_id, job, status in rows
        if run_id not in given and not (live_only and status in TERMINAL_VALUES)
    ]


@_silent
def run_ids(ctx: click.Context, incomplete: str) -> Candidates:
    """Every run (not those already on the command line: ``dl compare A B ...``)."""
    return _runs(ctx, incomplete, live_only=False)


@_silent
def live_run_ids(ctx: click.Context, incomplete: str) -> Candidates:
    """Runs not yet in a terminal state (what ``dl stop`` can stop)."""
    return _runs(ctx, incomplete, live_only=True)


@_silent
def schedule_names(incomplete: str) -> Candidates:
    rows = _query(
        "SELECT name, job, status FROM schedules WHERE substr(name, 1, length(?1)) = ?1 ORDER BY name LIMIT ?2",
        incomplete,
        LIMIT,
    )
    return [(name, f"{job} {status}") for name, job, status in rows]


@_silent
def job_names(incomplete: str) -> Candidates:
    """Jobs on the search path; nothing for a path (``./jobs/x``, ``~/x``), which the shell completes."""
    if incomplete.startswith((".", "~")) or os.sep in incomplete:
        return []
    from orchestrator.jobs import list_jobs

    return [(job.name, job.description) for job in list_jobs(problems=[]) if job.name.startswith(incomplete)]


@_silent
def sweep_ids(incomplete: str) -> Candidates:
    rows = _query(
        "SELECT sweep, job, count(*) FROM runs WHERE sweep IS NOT NULL AND substr(sweep, 1, length(?1)) = ?1 "
        "GROUP BY sweep ORDER BY max(created_at) DESC LIMIT ?2",
        incomplete,
        LIMIT,
    )
    return [(sweep, f"{job}, {count} runs") for sweep, job, count in rows]
