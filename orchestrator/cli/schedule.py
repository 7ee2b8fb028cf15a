"""`dl schedule ...`: scheduled retraining, over orchestrator.scheduling."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from orchestrator.cli import completion, options, render
from orchestrator.cli.context import current_client
from orchestrator.cli.options import OptionalGpuCommand
from orchestrator.options import LaunchOptions, parse_assignments

commands = typer.Typer()  # added to `dl` by orchestrator/cli/__init__.py

schedule_app = typer.Typer(no_args_is_help=True, rich_markup_mode="rich")
commands.add_typer(schedule_app, name="schedule", help="Retrain on a cron or rate schedule, in AWS or on this machine.")
SCHEDULE = typer.Argument(..., metavar="NAME", help="Schedule name.", autocompletion=completion.schedule_names)


def _when(moment) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z")


@schedule_app.command(no_args_is_help=True, cls=OptionalGpuCommand)
@options.launch_options(
    local_help="Fire on this machine (`dl schedule run`).",
    from_help=("RUN[:best]|SCHEDULE:best", "Warm start; SCHEDULE:best = its best so far."),
)
def create(
    name: str = typer.Argument(..., metavar="NAME", help="Schedule name (letters, digits, hyphens)."),
    job: str = typer.Option(
        ..., "--job", "-j", metavar="JOB", help="Job name or folder.", autocompletion=completion.job_names
    ),
    cron: str = typer.Option(
        ..., "--cron", metavar="EXPR", help='"0 3 * * 1", "cron(0 3 ? * MON *)" or "rate(7 days)".'
    ),
    tz: str = typer.Option("UTC", "--timezone", metavar="ZONE", help="IANA time zone of the cron fields."),
    promote_if: str = typer.Option(
        None, "--promote-if", metavar="METRIC:max|min", help="Move the schedule's best pointer only on improvement."
    ),
    retries: int = typer.Option(None, "--retries", min=0, max=185, help="Cloud: retry attempts if AWS cannot start."),
    window: int = typer.Option(None, "--window", min=1, max=1440, help="Cloud: flexible window, minutes."),
    set_: list[str] = options.SET,
    launch_options: LaunchOptions = None,
) -> None:
    """Create a schedule: package JOB once (pinned by hash) and launch it on every fire time.

    \b
    [bold]Examples[/bold]
      dl schedule create weekly --job mnist --cron "0 3 * * 1" --timezone Europe/Berlin --gpu --spot
      dl schedule create nightly --job mnist --cron "rate(1 day)" --local --promote-if val_acc:max
      dl schedule create weekly --job mnist --cron "0 3 * * 1" --from weekly:best --promote-if val_acc:max
    """
    from orchestrator import scheduling

    schedule = scheduling.create(
        name,
        job,
        expression=cron,
        timezone=tz,
        overrides=parse_assignments(set_, "--set"),
        options=launch_options,
        promote=promote_if,
        retries=retries,
        window_minutes=window,
        client=current_client(),
    )
    typer.echo(
        f"Created schedule {schedule.name}: {schedule.job} on {schedule.target}, {schedule.expression}"
        f" ({schedule.timezone}), package {schedule.package_hash[:12]}"
    )
    _print_next(scheduling.next_fire_times(schedule))
    if scheduling.fires_here(schedule.target, current_client()):
        typer.echo("  Local schedules fire while `dl schedule run` runs (see `dl schedule install`).")


def _print_next(fires) -> None:
    typer.echo("  next: " + ",  ".join(_when(m) for m in fires))


def _schedule_json(schedule, fires) -> dict:
    from dataclasses import asdict

    out = asdict(schedule)
    out.pop("spec")
    stored = LaunchOptions.from_json(schedule.spec["options"])
    out["params"], out["data"] = schedule.spec.get("params", {}), dict(stored.data)
    out["options"] = {k: v for k, v in stored.given().items() if k not in ("target", "data", "allow_secrets")}
    for key in ("created_at", "updated_at", "last_fire_at"):
        out[key] = render_iso(out[key])
    out["next_fires"] = [m.isoformat() for m in fires]
    return out


def render_iso(ts: float | None) -> str | None:
    return None if ts is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@schedule_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print a JSON array of schedules.")) -> None:
    """List schedules."""
    from orchestrator import scheduling

    found = scheduling.list_schedules(client=current_client())
    if as_json:
        render.print_json(
            [_schedule_json(s, scheduling.next_fire_times(s) if s.status == "active" else []) for s in found]
        )
        return
    if not found:
        typer.echo('No schedules. Create one: dl schedule create weekly --job mnist --cron "0 3 * * 1"')
        return
    rows = []
    for s in found:
        upcoming = scheduling.next_fire_times(s, n=1) if s.status == "active" else []
        rows.append([s.name, s.job, s.target, s.status, f"{s.expression} {s.timezone}",
                     _when(upcoming[0]) if upcoming else "-", s.best_run or "-"])  # fmt: skip
    typer.echo(render.table(["NAME", "JOB", "TARGET", "STATUS", "EXPRESSION", "NEXT", "BEST"], rows))


@schedule_app.command(no_args_is_help=True)
def show(
    name: str = SCHEDULE,
    as_json: bool = typer.Option(False, "--json", help="Print the schedule, firings and runs as JSON."),
) -> None:
    """Show a schedule: next fire times, and its latest firings and runs with status and metric."""
    from dataclasses import asdict

    from orchestrator import scheduling

    view = scheduling.show(name, client=current_client())
    s = view.schedule
    if as_json:
        out = _schedule_json(s, view.next_fires)
        out["firings"] = [{**asdict(f), "due_at": render_iso(f.due_at), "decided_at": render_iso(f.decided_at)}
                          for f in view.firings]  # fmt: skip
        out["runs"] = [run.to_json() for run in view.runs]
        render.print_json(out)
        return
    typer.echo(f"Schedule  {s.name}  ({s.status})\nJob       {s.job} on {s.target}, package {s.package_hash[:12]}")
    typer.echo(f"When      {s.expression}  {s.timezone}")
    if s.promote_metric:
        typer.echo(f"Promote   {s.promote_metric}:{s.promote_mode}  best run: {s.best_run or '-'}")
    if view.next_fires:
        _print_next(view.next_fires)
    if view.firings:
        typer.echo("\nFirings")
        for f in view.firings:
            typer.echo(f"  {render.when(f.due_at)}  {f.decision:<8} {f.run_id or ''}  {f.note or ''}".rstrip())
    if view.runs:
        typer.echo("\nRuns")
        metric = s.promote_metric
        for run in view.runs:
            value = run.metrics.get(metric) if metric else None
            shown = f"{metric}={value:g}" if value is not None else render.metrics_text(run.metrics, limit=2)
            promoted = "  promoted" if run.promotion.get("promoted") else ""
            typer.echo(f"  {run.id}  {run.status.value:<10} {shown}{promoted}")


@schedule_app.command(no_args_is_help=True)
def pause(name: str = SCHEDULE) -> None:
    """Stop firing until `dl schedule resume`."""
    from orchestrator import scheduling

    scheduling.pause(name, client=current_client())
    typer.echo(f"Paused {name}.")


@schedule_app.command(no_args_is_help=True)
def resume(name: str = SCHEDULE) -> None:
    """Fire again (fire times missed while paused are not caught up)."""
    from orchestrator import scheduling

    s = scheduling.resume(name, client=current_client())
    typer.echo(f"Resumed {name}.")
    _print_next(scheduling.next_fire_times(s))


@schedule_app.command(no_args_is_help=True)
def delete(name: str = SCHEDULE) -> None:
    """Delete a schedule; the runs it started stay."""
    from orchestrator import scheduling

    scheduling.delete(name, client=current_client())
    typer.echo(f"Deleted schedule {name}; its runs stay (dl runs).")


@schedule_app.command(no_args_is_help=True)
def update(name: str = SCHEDULE) -> None:
    """Repackage the job folder and pin the new package; shows which files changed."""
    from orchestrator import scheduling

    result = scheduling.update(name, client=current_client())
    if result.unchanged:
        typer.echo(f"{name}: the job's files are unchanged; still package {result.schedule.package_hash[:12]}.")
        return
    for mark, names in (("+", result.added), ("-", result.removed), ("M", result.changed)):
        for item in names:
            typer.echo(f"  {mark} {item}")
    typer.echo(f"{name} now runs package {result.schedule.package_hash[:12]}.")


@schedule_app.command("run")
def run_(
    poll: float = typer.Option(30.0, "--poll", min=0.05, help="Seconds between checks."),
    once: bool = typer.Option(False, "--once", help="Check once and exit (for crontab)."),
) -> None:
    """The scheduler for local schedules: launch due runs, in the foreground (Ctrl-C stops it)."""
    from orchestrator import scheduler_service

    def report(d) -> None:
        line = f"{render.when(d.due_at)}  {d.schedule}: {d.action} {d.run_id or ''} {d.note or ''}".rstrip()
        typer.secho(line, fg="red" if d.action == "failed" else None)

    if not once:
        typer.echo(f"dl scheduler: checking local schedules every {poll:g}s (Ctrl-C to stop).")
    try:
        scheduler_service.run_forever(poll=poll, report=report, once=once)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@schedule_app.command()
def install(
    write: bool = typer.Option(False, "--write", help="Write the systemd user unit file."),
) -> None:
    """Print a systemd user unit (and a crontab line) that keep `dl schedule run` going."""
    from orchestrator import scheduler_service

    text = scheduler_service.install_text()
    typer.echo(f"# {text['unit_path']}\n{text['unit']}")
    typer.echo(f"# or, in `crontab -e`:\n{text['crontab']}")
    if write:
        path = Path(text["unit_path"])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text["unit"])
        typer.echo(f"\nWrote {path}. Start it: systemctl --user enable --now dl-scheduler")
