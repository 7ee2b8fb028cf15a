"""`dl jobs`: the trainjobs dl can find, with their parameters."""

from __future__ import annotations

import typer

from orchestrator.cli import completion, render
from orchestrator.jobs import find_job, list_jobs

commands = typer.Typer()  # added to `dl` by orchestrator/cli/__init__.py


@commands.command()
def jobs(
    name: str = typer.Argument(None, help="Show one job's parameters in full.", autocompletion=completion.job_names),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List trainjobs and their parameters.

    Jobs are folders with a job.toml, found in DL_JOBS_PATH, the nearest trainjobs/ folder, and dl's own.

    \b
    [bold]Examples[/bold]
      dl jobs
      dl jobs mnist
    """
    problems: list = []
    found = [find_job(name)] if name else list_jobs(problems=problems)
    for problem in problems:
        typer.secho(f"Skipped a broken job: {problem}", fg="yellow", err=True)
    if as_json:
        render.print_json([job.to_json() for job in found])
        return
    if not found:
        typer.echo("No trainjobs found. Add a folder with a job.toml under trainjobs/ (see README).")
        return
    for i, job in enumerate(found):
        if i:
            typer.echo("")
        typer.secho(job.name, bold=True, nl=False)
        typer.echo(f"  {job.description}" if job.description else "")
        typer.echo(f"  {job.path}")
        monitor = f"best by {job.monitor} ({job.mode})" if job.monitor else "no monitored metric"
        typer.echo(f"  model {job.model}, data {job.datamodule}, {monitor}")
        params = list(job.params.values()) + (list(job.trainer.values()) if name else [])
        rows = [[p.name, p.type, str(p.default), p.help] for p in params]
        typer.echo("  " + render.table(["PARAM", "TYPE", "DEFAULT", "HELP"], rows).replace("\n", "\n  "))
        if not name:
            typer.echo(f"  (plus trainer parameters: {', '.join(job.trainer)}; see `dl jobs {job.name}`)")
