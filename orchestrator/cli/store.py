"""`dl store rebuild`, `dl store check`: the run database against the records beside the runs."""

from __future__ import annotations

import typer

from orchestrator.cli import render

commands = typer.Typer()  # added to `dl` by orchestrator/cli/__init__.py
store_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich")
commands.add_typer(store_app, name="store", help="Rebuild or check the run database (dl.db) from the run folders.")


@store_app.command()
def rebuild(as_json: bool = typer.Option(False, "--json", help="Print what was done as JSON.")) -> None:
    """Make dl.db again from DL_HOME/runs/*, DL_HOME/schedules/* and SageMaker's dl-tagged jobs.

    The old dl.db (with its -wal and -shm) is renamed dl.db.before-rebuild-<time>, never deleted.
    A run whose record cannot be read is named and skipped; the rest is rebuilt.

    \b
    [bold]Examples[/bold]
      dl store rebuild
      dl store check
    """
    from orchestrator import rebuild as rebuilding

    report = rebuilding.rebuild()
    if as_json:
        render.print_json({"path": str(report.path), "kept": [str(p) for p in report.kept], "runs": report.runs,
                           "schedules": report.schedules, "imported": report.imported,
                           "skipped": [{"record": p, "reason": why} for p, why in report.skipped],
                           "notes": report.notes})  # fmt: skip
        return
    typer.echo(f"Rebuilt {report.path}: {len(report.runs)} run(s) and {len(report.schedules)} schedule(s) from"
               f" their records, {len(report.imported)} run(s) imported.")  # fmt: skip
    for path in report.kept:
        typer.echo(f"Kept the old file as {path}")
    for path, why in report.skipped:
        typer.secho(f"Skipped {path}: {why}", fg="yellow", err=True)
    for note in report.notes:
        typer.echo(f"Note: {note}", err=True)


@store_app.command()
def check() -> None:
    """Compare dl.db with the records in the run and schedule folders; exit 1 when they differ."""
    from orchestrator import rebuild as rebuilding

    report = rebuilding.check()
    for line in report.differences:
        typer.echo(line)
    if report.differences:
        typer.secho(f"{len(report.differences)} difference(s). `dl store rebuild` makes dl.db from the records.",
                    fg="yellow", err=True)  # fmt: skip
        raise typer.Exit(1)
    typer.echo(f"dl.db and the records agree: {report.runs} run(s), {report.schedules} schedule(s).")
