"""Plain-text rendering for the CLI: fast tables, durations, times. No rich import on the hot path."""

from __future__ import annotations

import functools
import json
import sys
import time
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from orchestrator.store import Run, RunStatus

_STATUS_COLORS = {
    "Pending": "yellow",
    "InProgress": "cyan",
    "Stopping": "yellow",
    "Completed": "green",
    "Failed": "red",
    "Stopped": "magenta",
}


@functools.cache
def use_color() -> bool:
    return sys.stdout.isatty()


def status_text(status: RunStatus) -> str:
    return typer.style(status.value, fg=_STATUS_COLORS[status.value]) if use_color() else status.value


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def metrics_text(metrics: dict, limit: int = 3) -> str:
    """The most telling final metrics first: validation ones, then the rest."""
    keys = sorted(metrics, key=lambda k: (not k.startswith("val_"), k))[:limit]
    return "  ".join(f"{k}={metrics[k]:.4g}" for k in keys) or "-"


def table(headers: list[str], rows: list[list[str]], plain: list[list[str]] | None = None) -> str:
    """Left-aligned columns. ``plain`` gives the uncoloured text used to measure widths."""
    measure = plain or rows
    widths = [len(h) for h in headers]
    for row in measure:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    for row, raw in zip(rows, measure):
        cells = [cell + " " * (w - len(r)) for cell, r, w in zip(row, raw, widths)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def runs_table(runs: list[Run]) -> str:
    headers = ["ID", "JOB", "TARGET", "STATUS", "CREATED", "DURATION", "METRICS"]
    plain, shown = [], []
    for run in runs:
        cells = [run.id, run.job, run.target, run.status.value, when(run.created_at), duration(run.duration),
                 metrics_text(run.metrics)]  # fmt: skip
        plain.append(cells)
        shown.append(cells[:3] + [status_text(run.status)] + cells[4:])
    return table(headers, shown, plain)


def print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def size(num: int) -> str:
    value = float(num)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{num} B"


def package_notes(package) -> None:
    """On stderr: the secrets left out of a package by their names, and anything repaired (a cache)."""
    if package.secrets:
        typer.secho(f"Left out of the package (likely secrets): {', '.join(package.secrets)}", fg="yellow", err=True)
    for note in package.notes:
        typer.secho(note, fg="yellow", err=True)
