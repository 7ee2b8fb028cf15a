"""`dl doctor`: check this machine and the AWS account, one line per check, each with its fix."""

from __future__ import annotations

import typer

from orchestrator.cli import render
from orchestrator.cli.options import OptionalGpuCommand

_MARKS = {"ok": ("✓", "green"), "warn": ("!", "yellow"), "fail": ("✗", "red"), "skip": ("-", None)}


commands = typer.Typer()  # added to `dl` by orchestrator/cli/__init__.py


@commands.command(cls=OptionalGpuCommand)
def doctor(
    gpu: str = typer.Option(
        None, "--gpu", metavar="[MODEL[:N]]", help="Check the quota for this GPU (default: config's, else any one)."
    ),
    region: str = typer.Option(None, "--region", "-r", metavar="REGION", help="AWS region (default from config)."),
    profile: str = typer.Option(None, "--profile", metavar="NAME", help="AWS profile."),
    local: bool = typer.Option(True, "--local/--no-local", help="Import torch to check local runs (a few seconds)."),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as a JSON list."),
) -> None:
    """Check that dl can train here and on SageMaker, before anything costs money.

    Python, packages, dl.toml, region, credentials, stack, bucket, role, GPU quota (often 0), torch and CUDA.

    Each check is one line with its fix. Exits 1 when any check fails.

    \b
    [bold]Examples[/bold]
      dl doctor
      dl doctor --gpu A100:8
      dl doctor --json | jq -r '.[] | select(.ok | not) | .fix'
    """
    from orchestrator import doctor as checks  # reads settings, catalog and boto3 only when run

    found = checks.run(gpu=gpu, region=region, profile=profile, local=local)
    if as_json:
        render.print_json([check.to_json() for check in found])
    else:
        width = max(len(check.name) for check in found)
        for check in found:
            mark, color = _MARKS[check.status]
            shown = typer.style(mark, fg=color) if color and render.use_color() else mark
            typer.echo(f"{shown} {check.name:<{width}}  {check.line}")
            if check.fix and check.status in ("fail", "warn"):
                typer.echo(f"  {'':<{width}}  fix: {check.fix}")
        failed = [check.name for check in found if not check.ok]
        if failed:
            typer.secho(f"{len(failed)} check{'s' if len(failed) > 1 else ''} failed: {', '.join(failed)}.", fg="red")
        else:
            typer.echo("All checks passed.")
    raise typer.Exit(checks.exit_code(found))
